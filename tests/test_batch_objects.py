"""`prompt` and `ask` over many scenes through the same batch as `segment`: per-scene outputs,
a merged index, prompts routed to the scenes they fall in, failures isolated, MLLM replies
fetched ahead concurrently, and a re-run that resumes instead of redoing."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from terramask import api
from terramask.cli import cli
from terramask.errors import InputError, NothingToDo
from terramask.options import ModelOptions
from terramask.scene import open_scene, prompts_from_options, prompts_from_vector
from terramask.testing.scenes import DEFAULT_ORIGIN, default_transform, write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam
from tests.helpers.chat_server import ChatServer, Step

X0, Y0 = DEFAULT_ORIGIN
PIXEL = 0.5
#: Three scenes side by side along x (west, east, far), each 120 x 90 pixels of 0.5 m.
ORIGINS = {"west": (X0, Y0), "east": (X0 + 100, Y0), "far": (X0 + 1000, Y0)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"sam": str(save_tiny_sam(root / "sam")), "clip": str(save_tiny_clip(root / "clip"))}


@pytest.fixture
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    for seed, (name, origin) in enumerate(ORIGINS.items()):
        write_synthetic_scene(folder / f"{name}.tif", width=120, height=90, seed=seed,
                              transform=default_transform(PIXEL, origin))  # fmt: skip
    (folder / "broken.tif").write_text("not a raster")
    return folder


def map_xy(scene: str, col: float, row: float) -> tuple[float, float]:
    x, y = ORIGINS[scene]
    return x + col * PIXEL, y - row * PIXEL


def map_box(scene: str, col0: float, row0: float, col1: float, row1: float) -> tuple:
    """A pixel rectangle of a scene (its columns in `scene`'s frame) as a map box."""
    (x0, y1), (x1, y0) = map_xy(scene, col0, row0), map_xy(scene, col1, row1)
    return x0, y0, x1, y1


def outputs_of(out, name):
    return {p.name: p.read_bytes() for p in out.glob(f"{name}*")}


# ---------------------------------------------------------------- out-of-scene prompts


def test_dropping_prompts_outside_a_scene(tmp_path):
    path = write_synthetic_scene(tmp_path / "west.tif", width=120, height=90)
    inside, outside = map_xy("west", 30, 40), map_xy("east", 30, 40)
    with open_scene(path) as scene:
        # a point and a box outside: the point is dropped, the box too; nothing is left
        assert prompts_from_options(scene, points=[outside], crs="EPSG:32633",
                                    outside="drop") == []  # fmt: skip
        with pytest.raises(InputError, match="outside the scene"):
            prompts_from_options(scene, points=[outside], crs="EPSG:32633")
        # clicks of one object straddling two scenes: the part inside remains
        (obj,) = prompts_from_options(scene, points=[inside, outside],
                                      negatives=[outside], crs="EPSG:32633", outside="drop")
        np.testing.assert_allclose(obj.points, [[30, 40]])
        assert obj.labels.tolist() == [1]
        # only a negative click inside: no object (negatives only refine)
        assert prompts_from_options(scene, points=[outside], negatives=[inside],
                                    crs="EPSG:32633", outside="drop") == []  # fmt: skip
        # a box across the scene's east edge is clipped; one wholly east is dropped
        across = map_box("west", 100, 20, 220, 60)  # 220 px is 10 px into the east scene
        objs = prompts_from_options(scene, boxes=[across, map_box("east", 20, 20, 40, 60)],
                                    crs="EPSG:32633", outside="drop")  # fmt: skip
        assert [o.box.tolist() for o in objs] == [[100, 20, 120, 60]]
        # scene-independent mistakes are still errors when dropping
        with pytest.raises(InputError, match="Only negative"):
            prompts_from_options(scene, negatives=[inside], crs="EPSG:32633", outside="drop")


def test_a_prompt_file_is_read_once_and_placed_on_each_scene(tmp_path):
    from terramask.scene import read_prompt_file

    geometries = [shapely.Point(map_xy("west", 30, 40)),
                  shapely.box(*map_box("east", 10, 20, 50, 60))]  # fmt: skip
    path = tmp_path / "prompts.geojson"
    pyogrio.raw.write(str(path), np.array([shapely.to_wkb(g) for g in geometries]),
                      [np.array(["tree", "roof"], dtype=object)], ["name"], driver="GeoJSON",
                      crs="EPSG:32633", geometry_type="Unknown")  # fmt: skip
    prompts = read_prompt_file(path)
    placed = {}
    for name in ("west", "east", "far"):
        scene_path = write_synthetic_scene(tmp_path / f"{name}.tif", width=120, height=90,
                                           transform=default_transform(PIXEL, ORIGINS[name]))
        with open_scene(scene_path) as scene:
            placed[name] = prompts_from_vector(scene, prompts, outside="drop")
    assert [o.name for o in placed["west"]] == ["tree"]
    np.testing.assert_allclose(placed["west"][0].points, [[30, 40]])
    assert [o.name for o in placed["east"]] == ["roof"]
    np.testing.assert_allclose(placed["east"][0].box, [10, 20, 50, 60])
    assert placed["far"] == []


# ---------------------------------------------------------------- prompt over many scenes


def test_prompt_many_routes_map_prompts_to_their_scenes_then_resumes(scenes, tiny, tmp_path):
    out = tmp_path / "out"
    west_point = map_xy("west", 60, 45)
    east_box = map_box("east", 20, 20, 70, 60)
    options = dict(points=[west_point], boxes=[east_box, east_box], crs="EPSG:32633",
                   models=ModelOptions(segmenter=tiny["sam"], device="cpu"), output=out)
    summary = api.prompt_many(scenes, **options)
    names = lambda sources: sorted(s.rsplit("/", 1)[-1] for s in sources)  # noqa: E731
    assert names(summary.processed) == ["east.tif", "west.tif"]
    assert [s["scene"].rsplit("/", 1)[-1] for s in summary.skipped] == ["far.tif"]
    assert "No prompt falls inside this scene" in summary.skipped[0]["reason"]
    assert "EPSG:32633" in summary.skipped[0]["reason"]
    assert len(summary.failed) == 1 and "broken.tif" in summary.failed[0]["reason"]

    west = json.loads((out / "west.json").read_text())
    east = json.loads((out / "east.json").read_text())
    assert [o["prompt_px"]["points"] for o in west["objects"]] == [[[60.0, 45.0]]]
    assert [o["prompt_px"]["box"] for o in east["objects"]] == [[20.0, 20.0, 70.0, 60.0]] * 2
    for name in ("west", "east"):
        for suffix in ("_mask.tif", "_score.tif", ".gpkg", ".geojson", "_preview.png"):
            assert (out / f"{name}{suffix}").exists()
    assert not (out / "far_mask.tif").exists()  # a skipped scene gets only its report
    assert json.loads((out / "far.json").read_text())["skipped"].startswith("No prompt")

    meta, _, geometry, values = pyogrio.raw.read(out / "index.gpkg")
    fields = dict(zip(meta["fields"], values, strict=True))
    assert "scene" in fields and set(fields["scene"]) <= {"west", "east"}
    assert len(geometry) == sum(len(pyogrio.raw.read(out / f"{n}.gpkg")[2])
                                for n in ("west", "east"))  # fmt: skip
    saved = json.loads((out / "summary.json").read_text())
    assert saved["processed"] == 2 and len(saved["skipped"]) == 1 and len(saved["failed"]) == 1

    before = {n: outputs_of(out, n) for n in ("west", "east", "far")}
    again = api.prompt_many(scenes, **options)
    assert not again.processed and not again.skipped
    assert len(again.already_done) == 3 and len(again.failed) == 1
    assert {n: outputs_of(out, n) for n in ("west", "east", "far")} == before


def test_pixel_prompts_apply_to_every_scene(scenes, tiny, tmp_path):
    out = tmp_path / "out"
    (scenes / "broken.tif").unlink()
    summary = api.prompt_many(
        str(scenes / "*.tif"),
        points=[(10, 10)],
        boxes=[(5, 5, 40, 30)],
        output=out,
        models=ModelOptions(segmenter=tiny["sam"], device="cpu"),
    )  # fmt: skip
    assert len(summary.processed) == 3 and not summary.failed and not summary.skipped
    for name in ORIGINS:
        (obj,) = json.loads((out / f"{name}.json").read_text())["objects"]
        assert obj["prompt_px"]["box"] == [5.0, 5.0, 40.0, 30.0]


def test_a_scene_interrupted_before_its_report_is_redone(scenes, tiny, tmp_path):
    out = tmp_path / "out"
    (scenes / "broken.tif").unlink()
    options = dict(points=[(10, 10)], models=ModelOptions(segmenter=tiny["sam"], device="cpu"),
                   output=out)
    api.prompt_many(scenes, **options)
    (out / "west.json").unlink()  # as if stopped after the rasters, before the report
    again = api.prompt_many(scenes, **options)
    assert [s.rsplit("/", 1)[-1] for s in again.processed] == ["west.tif"]
    assert len(again.already_done) == 2 and not again.failed


def test_prompt_many_refuses_bad_prompts_before_any_scene(scenes, tmp_path):
    with pytest.raises(InputError, match="No prompt was given"):
        api.prompt_many(scenes, output=tmp_path / "out")
    with pytest.raises(InputError, match="Only negative"):
        api.prompt_many(scenes, negatives=[(1, 1)], output=tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        api.prompt_many(scenes, prompt_file=tmp_path / "none.gpkg", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_scene_with_no_prompt_inside_is_an_error_on_its_own(scenes, tiny, tmp_path):
    with pytest.raises(NothingToDo, match="No prompt falls inside"):
        api.prompt(
            scenes / "far.tif",
            points=[map_xy("west", 5, 5)],
            crs="EPSG:32633",
            output=tmp_path / "out",
            outside="drop",
            models=ModelOptions(segmenter=tiny["sam"]),
        )  # fmt: skip


def test_cli_prompt_on_a_list_prints_the_batch_summary(scenes, tiny, tmp_path):
    listing = tmp_path / "scenes.txt"
    listing.write_text("".join(f"{scenes / n}.tif\n" for n in ("west", "far", "broken")))
    x, y = map_xy("west", 60, 45)
    args = ["prompt", listing, "--point", f"{x},{y}", "--crs", "EPSG:32633",
            "--segmenter", tiny["sam"], "--device", "cpu", "-o", tmp_path / "out"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    assert result.exit_code == 2  # a scene failed; the others are kept
    assert "3 scenes: 1 processed, 1 skipped, 0 already done, 1 failed" in result.stdout
    assert "tiles" not in result.stdout.split("\n")[0]
    assert "skipped" in result.stdout and "failed" in result.stderr
    assert (tmp_path / "out" / "west_mask.tif").exists()
    again = CliRunner().invoke(cli, [str(a) for a in [*args, "--json"]], obj={})
    data = json.loads(again.stdout)
    assert data["already_done"] == 2 and data["processed"] == 0 and len(data["failed"]) == 1


# ---------------------------------------------------------------- ask over many scenes


def test_ask_many_fetches_replies_ahead_and_isolates_failures(scenes, tiny, tmp_path,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    write_synthetic_scene(scenes / "odd.tif", width=100, height=90, seed=7,
                          transform=default_transform(PIXEL, ORIGINS["far"]))  # fmt: skip

    out = tmp_path / "out"
    seen = {"in_flight": 0, "most_in_flight": 0, "outputs_when_asked": []}
    lock = threading.Lock()

    def answer(request):
        with lock:
            seen["in_flight"] += 1
            seen["most_in_flight"] = max(seen["most_in_flight"], seen["in_flight"])
            seen["outputs_when_asked"].append(len(list(out.glob("*_mask.tif"))))
        time.sleep(0.2)
        with lock:
            seen["in_flight"] -= 1
        if request.image().shape[1] == 100:  # odd.tif: the endpoint fails for it
            return Step(status=500, text="boom")
        return '{"bbox": [20, 20, 70, 60], "prompt": "building"}'

    args = ["ask", scenes, "the largest building", "--mllm-url", None, "--mllm-model", "vlm",
            "--segmenter", tiny["sam"], "--clip", tiny["clip"], "--device", "cpu",
            "--mllm-retries", "1", "--mllm-timeout", "5", "--mllm-concurrency", "3",
            "-o", out, "--json"]  # fmt: skip
    with ChatServer(answer) as server:
        args[4] = server.url
        result = CliRunner().invoke(cli, [str(a) for a in args], obj={})
        first_requests = len(server.requests)
        assert result.exit_code == 2, result.output
        assert result.stdout, result.output
        data = json.loads(result.stdout)
        # one request per good scene; the failing one 1 + 1 retry, and not asked again
        assert first_requests == 3 + 2
        # every reply was fetched before the first scene was segmented, several at once
        assert seen["outputs_when_asked"] == [0] * first_requests
        assert seen["most_in_flight"] >= 2
        assert data["processed"] == 3 and data["already_done"] == 0
        failed = {f["scene"].rsplit("/", 1)[-1]: f["reason"] for f in data["failed"]}
        assert set(failed) == {"broken.tif", "odd.tif"} and "HTTP 500" in failed["odd.tif"]
        for name in ORIGINS:
            report = json.loads((out / f"{name}.json").read_text())
            assert report["question"] == "the largest building"
            assert report["boxes"][0]["mllm_px"] == [20, 20, 70, 60]
            assert (out / f"{name}_mask.tif").exists() and (out / f"{name}.gpkg").exists()
        assert (out / "index.gpkg").exists()
        meta = pyogrio.read_info(out / "index.gpkg")
        assert "scene" in list(meta["fields"])

        before = {n: outputs_of(out, n) for n in ORIGINS}
        again = CliRunner().invoke(cli, [str(a) for a in args], obj={})
        data = json.loads(again.stdout)
        assert data["already_done"] == 3 and data["processed"] == 0
        assert len(server.requests) == first_requests + 2  # only odd.tif is asked again
    assert {n: outputs_of(out, n) for n in ORIGINS} == before


def test_ask_many_in_python_with_a_refusal_and_a_ready_client(scenes, tiny, tmp_path):
    from terramask.models.mllm import OpenAIChatMLLM, ReplyCache

    (scenes / "broken.tif").unlink()
    (scenes / "far.tif").unlink()
    replies = {120: '{"bbox": [10, 10, 50, 50], "prompt": "roof"}'}

    def answer(request):
        return replies.get(request.image().shape[1], "There is no such thing.")

    write_synthetic_scene(scenes / "small.tif", width=80, height=60,
                          transform=default_transform(PIXEL, ORIGINS["far"]))  # fmt: skip
    with ChatServer(answer) as server:
        client = OpenAIChatMLLM(server.url, "vlm", max_retries=0, max_concurrency=2,
                                cache=ReplyCache(tmp_path / "cache"))  # fmt: skip
        summary = api.ask_many(
            scenes,
            "the roof",
            mllm=client,
            engine="box",
            output=tmp_path / "out",
            models=ModelOptions(segmenter=tiny["sam"], device="cpu"),
        )
        assert len(server.requests) == 3
    assert len(summary.processed) == 3 and not summary.failed
    assert [s.rsplit("/", 1)[-1] for s in summary.nothing_found] == ["small.tif"]
    small = json.loads((tmp_path / "out" / "small.json").read_text())
    assert small["found"] is False and small["answer"] == "There is no such thing."
