"""`run_instructions`: each line to its route (tiny real models and the scripted chat server),
scores recomputed independently, resuming, and bad lines refused before any line runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from terramask import api
from terramask.cli import cli
from terramask.errors import InputError
from terramask.eval.referring_datasets import letterbox
from terramask.options import GenerationSettings, MLLMOptions, ModelOptions, PolygonOptions
from terramask.testing.scenes import write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam
from tests.helpers.chat_server import ChatServer, Grounder

BOX = "Please segment the target corresponding to the box x0,y0=[0.2,0.125], x1,y1=[0.625,0.5]."


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return ModelOptions(segmenter=str(save_tiny_sam(folder / "sam")),
                        clip=str(save_tiny_clip(folder / "clip")), device="cpu")  # fmt: skip


@pytest.fixture
def tasks(tmp_path):
    write_synthetic_scene(tmp_path / "scene.tif", width=96, height=80)
    truth = np.zeros((80, 96), np.uint8)
    truth[10:40, 20:60] = 255
    Image.fromarray(truth).save(tmp_path / "truth.png")
    lines = [
        {"id": "i1", "image": "scene.tif", "task": "interactive", "instruction": BOX,
         "mask": "truth.png"},
        {"id": "i2", "image": "scene.tif", "task": "interactive", "points": [[30, 20]]},
        {"id": "r1", "image": "scene.tif", "task": "ref", "instruction": "the roof",
         "mask": "truth.png"},
        {"id": "q1", "image": "scene.tif", "task": "reasoning", "instruction": "Where to park?"},
        {"id": "c1", "image": "scene.tif", "task": "classes", "classes": ["building", "road"]},
    ]  # fmt: skip
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def read_band(path):
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.slow
def test_each_task_takes_its_route_and_is_scored_as_the_benchmark(tasks, models, tmp_path):
    out = tmp_path / "out"
    with ChatServer(Grounder((0.2, 0.125, 0.625, 0.5), label="roof")) as server:
        mllm = MLLMOptions(url=server.url, model="scripted", cache=False, retries=0)
        report = api.run_instructions(tasks, engine="box", segment_engine="clip", mllm=mllm,
                                      models=models, output=out)  # fmt: skip
        asked = [" ".join(r.texts()) for r in server.requests]
    assert report["done"] == 5 and not report["failed"]
    # only the referring and reasoning lines reached the MLLM; never the coordinates
    assert len(asked) == 2 and not any("x0,y0" in text for text in asked)
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["route"] for r in results] == ["prompt", "prompt", "ask", "ask", "segment"]
    assert results[0]["coordinates"] == {"box": [0.2, 0.125, 0.625, 0.5]}
    assert [c["name"] for c in results[4]["classes"]] == ["building", "road"]
    # the scores, recomputed here from the written masks on the centred 512 letterbox
    truth = np.asarray(Image.open(tasks.parent / "truth.png")) > 0
    pairs = []
    for result in (results[0], results[2]):
        predicted = read_band(result["outputs"]["mask"]) > 0
        a, b = letterbox(predicted, 512), letterbox(truth, 512)
        pairs.append((np.count_nonzero(a & b), np.count_nonzero(a | b)))
        assert result["scores"][0]["intersection"] == pairs[-1][0]
    for task, (inter, union) in zip(("interactive", "referring"), pairs, strict=True):
        assert report["scores"][task]["giou"] == round(100 * inter / union, 2)
    assert report["scores"]["all"]["ciou"] == round(
        100 * sum(p[0] for p in pairs) / sum(p[1] for p in pairs), 2)  # fmt: skip

    with ChatServer([]) as server:  # a re-run asks nothing and redoes nothing
        mllm = MLLMOptions(url=server.url, model="scripted", cache=False, retries=0)
        again = api.run_instructions(tasks, engine="box", segment_engine="clip", mllm=mllm,
                                     models=models, output=out)  # fmt: skip
        assert not server.requests
    assert again["already_done"] == 5
    with pytest.raises(InputError, match="other settings"):
        api.run_instructions(tasks, engine="box", segment_engine="clip", mllm=mllm,
                             models=models, polygons=PolygonOptions(simplify=1.0),
                             output=out)  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"task": "segment"}, "\"task\" must be one of"),
        ({"task": "referring"}, "needs its \"instruction\""),
        ({"task": "interactive", "instruction": "segment the pond"}, "needs \"points\""),
        ({"task": "interactive", "points": [[1, 2, 3]]}, "\"points\" must be"),
        ({"task": "classes"}, "needs \"classes\""),
        ({"task": "classes", "classes": ["a"], "mask": "none.png"}, "does not exist"),
        ({"task": "classes", "classes": ["a"], "id": "../x"}, "names a folder"),
        ({"task": "classes", "classes": ["a"], "image": "missing.tif"}, "missing.tif"),
        # a misspelt key would be ignored: no negatives, or no score, and exit status 0
        ({"task": "interactive", "points": [[5, 5]], "negative": [[1, 1]]}, "'negative'"),
        ({"task": "classes", "classes": ["a"], "truth": "t.png"}, "unknown key"),
        # coordinates outside the image are refused before any line runs, naming the line
        ({"task": "interactive", "points": [[900, 5]]},
         r"points \(900, 5\) in pixels lies outside"),
        ({"task": "interactive", "points": [[5, 5]], "negatives": [[5, -1]]}, "negatives"),
        ({"task": "interactive", "boxes": [[1, 1, 10, 70]]}, "64 x 64 pixels"),
        ({"task": "interactive", "instruction": "Please segment [1.5,0.2]."},
         "in UniGeoSeg's coordinates in the instruction lies outside"),
    ],
)
def test_bad_lines_are_refused_before_any_line_runs(tmp_path, line, message):
    write_synthetic_scene(tmp_path / "scene.tif", width=64, height=64)
    good = {"image": "scene.tif", "task": "classes", "classes": ["building"]}
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"image": "scene.tif", **line}) + "\n")
    with pytest.raises(InputError, match=message) as caught:
        api.run_instructions(path, output=tmp_path / "out")
    assert "line 2" in str(caught.value).lower()
    assert not (tmp_path / "out").exists()


def test_options_no_route_uses_and_a_missing_mllm_are_refused(tmp_path):
    write_synthetic_scene(tmp_path / "scene.tif", width=64, height=64)
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"image": "scene.tif", "task": "interactive",
                                "points": [[5, 5]]}) + "\n")  # fmt: skip
    with pytest.raises(InputError, match=r"ModelOptions\.clip.*tasks file"):
        api.run_instructions(path, models=ModelOptions(clip="x"), output=tmp_path / "out")
    with pytest.raises(InputError, match=r"GenerationSettings\.grid.*classes line"):
        api.run_instructions(path, generation=GenerationSettings(grid=8), output=tmp_path / "o")
    with pytest.raises(InputError, match="segment_engine"):
        api.run_instructions(path, segment_engine="clip", output=tmp_path / "out")
    path.write_text(json.dumps({"image": "scene.tif", "task": "referring",
                                "instruction": "the pond"}) + "\n")  # fmt: skip
    with pytest.raises(InputError, match="answers with an MLLM"):
        api.run_instructions(path, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("{not json\n")
    result = CliRunner().invoke(cli, ["run", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "Line 1" in result.output and "not JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_any_ask_engine_is_passed_through_even_one_without_an_mllm(tmp_path):
    """engine unigeoseg answers reasoning lines itself: no MLLM is asked for, none is sent."""
    from terramask.testing.tiny_unigeoseg import save_tiny_unigeoseg

    checkpoint = save_tiny_unigeoseg(tmp_path / "unigeoseg")
    write_synthetic_scene(tmp_path / "scene.tif", width=64, height=48)
    lines = [{"id": "q", "image": str(tmp_path / "scene.tif"), "task": "reasoning",
              "instruction": "Where could cars park?"}]  # fmt: skip
    report = api.run_instructions(
        lines, engine="unigeoseg", output=tmp_path / "out",
        models=ModelOptions(unigeoseg=str(checkpoint), device="cpu"),
    )  # fmt: skip
    assert report["done"] == 1 and not report["failed"]
    results = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    [result] = [json.loads(x) for x in results]
    assert result["route"] == "ask" and (tmp_path / "out" / "q").is_dir()
    with pytest.raises(InputError, match="asks no MLLM"):
        api.run_instructions(lines, engine="unigeoseg", mllm=MLLMOptions(url="http://x/v1",
                             model="m"), output=tmp_path / "o2",
                             models=ModelOptions(unigeoseg=str(checkpoint)))  # fmt: skip


@pytest.mark.slow
def test_engine_unigeoseg_answers_interactive_lines_itself(tmp_path):
    """With engine unigeoseg the unified model takes the click (no SAM is named or loaded)."""
    from terramask.testing.tiny_unigeoseg import save_tiny_unigeoseg

    checkpoint = save_tiny_unigeoseg(tmp_path / "unigeoseg")
    write_synthetic_scene(tmp_path / "scene.tif", width=64, height=48)
    lines = [{"id": "i", "image": str(tmp_path / "scene.tif"), "task": "interactive",
              "points": [[20, 20]]}]  # fmt: skip
    report = api.run_instructions(
        lines, engine="unigeoseg", output=tmp_path / "out",
        models=ModelOptions(unigeoseg=str(checkpoint), device="cpu"),
    )  # fmt: skip
    assert report["done"] == 1 and not report["failed"]
    results = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    [result] = [json.loads(x) for x in results]
    assert result["route"] == "prompt"
    record = json.loads((tmp_path / "out" / "i" / "line.json").read_text())
    assert record["settings"]["engine"] == "unigeoseg"
    with pytest.raises(InputError, match="segmenter"):
        api.run_instructions(lines, engine="unigeoseg", output=tmp_path / "o2",
                             models=ModelOptions(unigeoseg=str(checkpoint), segmenter="x"))


def test_a_line_whose_ground_truth_was_edited_is_scored_again(tmp_path, models):
    """The same line and settings, but a corrected ground truth: the line runs again and its
    score follows the new mask (before, the old result and score were reused)."""
    write_synthetic_scene(tmp_path / "scene.tif", width=96, height=80)
    truth = np.zeros((80, 96), np.uint8)
    truth[10:40, 20:60] = 255
    Image.fromarray(truth).save(tmp_path / "truth.png")
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "i1", "image": "scene.tif", "task": "interactive",
                                "points": [[30, 20]], "mask": "truth.png"}) + "\n")  # fmt: skip
    sam = ModelOptions(segmenter=models.segmenter, device="cpu")
    first = api.run_instructions(path, models=sam, output=tmp_path / "out")
    assert first["done"] == 1
    Image.fromarray(np.zeros_like(truth)).save(tmp_path / "truth.png")  # nothing is target
    again = api.run_instructions(path, models=sam, output=tmp_path / "out")
    assert again["already_done"] == 0 and again["done"] == 1
    result = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    predicted = read_band(result["outputs"]["mask"]) > 0
    union = np.count_nonzero(letterbox(predicted, 512))
    assert result["scores"][0] == {"intersection": 0, "union": union,
                                   "iou": 100.0 if union == 0 else 0.0}  # fmt: skip
    assert api.run_instructions(path, models=sam, output=tmp_path / "out")["already_done"] == 1
