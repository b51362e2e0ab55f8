"""UniGeoSeg as an engine: `ask`, `prompt`, `eval`, `run` and `doctor` through the CLI and the
API, with a tiny checkpoint in the released layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from terramask.cli import cli
from terramask.errors import InputError
from terramask.options import AskOptions, MLLMOptions, ModelOptions, UniGeoSegOptions
from terramask.testing.scenes import write_synthetic_scene


@pytest.fixture
def scene(tmp_path):
    return write_synthetic_scene(tmp_path / "scene.tif", width=300, height=200, nodata_border=0)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


def test_ask_answers_with_a_georeferenced_mask_and_the_models_words(
    scene, tiny_unigeoseg_folder, tmp_path, offline_hub
):
    res = _run("ask", scene, "which building is the largest?", "--engine", "unigeoseg",
               "--unigeoseg", tiny_unigeoseg_folder, "--device", "cpu", "--max-new-tokens", "4",
               "-o", tmp_path / "out", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    answer = json.loads(res.output)
    assert answer["engine"] == "unigeoseg" and answer["task"] == "reasoning"
    assert answer["task_decided_by"] == "text" and answer["explanation"] is not None
    assert [look["window_px"] for look in answer["looks"]] == [[0, 0, 300, 200]]
    with rasterio.open(answer["outputs"]["mask"]) as mask, rasterio.open(scene) as src:
        assert mask.crs == src.crs and mask.transform == src.transform
        assert set(np.unique(mask.read(1))) <= {0, 1}
    report = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert report["settings"]["models"] == {"unigeoseg": str(tiny_unigeoseg_folder)}
    assert report["settings"]["unigeoseg"]["max_new_tokens"] == 4
    # a re-run with other settings never reuses these outputs silently
    again = _run("ask", scene, "the red roof", "--engine", "unigeoseg", "--unigeoseg",
                 tiny_unigeoseg_folder, "--device", "cpu", "-o", tmp_path / "out")  # fmt: skip
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize(("args", "flag"), [
    (("--mllm-url", "http://127.0.0.1:1/v1"), "--mllm-url"),
    (("--refine", "none"), "--refine"),
    (("--segmenter", "sam-vit-base"), "--segmenter"),
])  # fmt: skip
def test_ask_refuses_what_unigeoseg_does_not_use_before_any_work(scene, tmp_path, args, flag):
    res = _run("ask", scene, "the roof", "--engine", "unigeoseg", *args, "-o", tmp_path / "o")
    assert res.exit_code == 2 and flag in res.output
    assert not (tmp_path / "o").exists()


def test_an_adapter_is_refused_as_unused_not_as_a_box_engine(scene, tmp_path):
    res = _run("ask", scene, "the roof", "--engine", "unigeoseg", "--adapter", tmp_path,
               "-o", tmp_path / "o")  # fmt: skip
    assert res.exit_code == 2 and "--adapter does not apply here" in res.output
    assert "asks no MLLM" in res.output and "asks for a box" not in res.output


def test_unigeoseg_flags_are_refused_with_other_engines_and_checked(scene, tmp_path):
    res = _run("ask", scene, "the roof", "--unigeoseg-task", "referring", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "--unigeoseg-task" in res.output
    res = _run("ask", scene, "the roof", "--engine", "unigeoseg", "--max-new-tokens", "0")
    assert res.exit_code == 2 and "--max-new-tokens" in res.output
    from terramask import api

    with pytest.raises(InputError, match=r"MLLMOptions\.model"):
        api.ask(scene, "x", engine="unigeoseg", mllm=MLLMOptions(model="gpt-5"))
    with pytest.raises(InputError, match=r"AskOptions\.max_objects"):
        api.ask(scene, "x", engine="unigeoseg", ask_options=AskOptions(max_objects=3))
    with pytest.raises(InputError, match=r"UniGeoSegOptions\.task"):
        api.ask(scene, "x", unigeoseg=UniGeoSegOptions(task="referring"))


def test_prompt_sends_clicks_and_boxes_as_its_interactive_instruction(
    scene, tiny_unigeoseg_folder, tmp_path, offline_hub
):
    from terramask import api

    result = api.prompt(
        scene, boxes=[(10, 10, 100, 120), (150, 100, 290, 190)], engine="unigeoseg",
        models=ModelOptions(unigeoseg=str(tiny_unigeoseg_folder), device="cpu"),
        output=tmp_path / "o",
    )  # fmt: skip
    assert [o["id"] for o in result.objects] == [1, 2]
    report = json.loads((tmp_path / "o" / "scene.json").read_text())
    assert report["segmenter"] == str(tiny_unigeoseg_folder)
    assert report["settings"]["engine"] == "unigeoseg"
    clicks = api.prompt(scene, points=[(50, 60), (70, 80)], engine="unigeoseg",
                        models=ModelOptions(unigeoseg=str(tiny_unigeoseg_folder), device="cpu"),
                        output=tmp_path / "p")  # fmt: skip
    assert len(clicks.objects) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"points": [(1, 1)], "negatives": [(5, 5)]}, "negatives"),
    ({"points": [(1, 1), (2, 2), (3, 3), (4, 4)]}, "1 to 3 clicks"),
    ({"points": [(1, 1)], "boxes": [(0, 0, 9, 9)]}, "clicks or a box"),
    ({"points": [(1, 1)], "models": ModelOptions(segmenter="sam-vit-base")},
     "ModelOptions.segmenter"),
])  # fmt: skip
def test_prompts_unigeoseg_cannot_say_are_refused_before_any_work(scene, tmp_path, kwargs,
                                                                  match):  # fmt: skip
    from terramask import api

    with pytest.raises(InputError, match=match):
        api.prompt(scene, engine="unigeoseg", output=tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()


def test_eval_scores_the_benchmark_per_task_with_the_papers_numbers_beside(
    tiny_unigeoseg_folder, tmp_path, offline_hub
):
    from terramask.testing.tiny_unigeoseg import write_tiny_instruction_data

    root = write_tiny_instruction_data(tmp_path / "bench", per_task=1, split="test")
    res = _run("eval", "unigeoseg-bench", "--root", root, "--engine", "unigeoseg",
               "--unigeoseg", tiny_unigeoseg_folder, "--device", "cpu", "-o", tmp_path / "e",
               "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert set(report["groups"]) == {"interactive", "referring", "reasoning"}
    assert report["models"] == {"unigeoseg": str(tiny_unigeoseg_folder)}
    published = {row["method"] for row in report["published"]}
    assert any("UniGeoSeg" in m for m in published)
    # interactive samples went to UniGeoSeg itself, and the report says so (not "the segmenter")
    assert any("go to the model" in n for n in report["notes"])
    assert not any("go to the segmenter" in n for n in report["notes"])
    config = report["published_configuration"]
    assert config["matches"] is False and any("not the released" in d
                                              for d in config["differences"])  # fmt: skip
    bad = _run("eval", "unigeoseg-bench", "--root", root, "--engine", "unigeoseg",
               "--mllm-model", "gpt-5")  # fmt: skip
    assert bad.exit_code == 2 and "--mllm-model" in bad.output


def test_run_routes_referring_and_reasoning_lines_to_unigeoseg(
    tiny_unigeoseg_folder, tmp_path, offline_hub
):
    from terramask import api

    scene = write_synthetic_scene(tmp_path / "s.tif", width=160, height=120, nodata_border=0)
    lines = [{"id": "r", "image": str(scene), "task": "referring", "instruction": "the roof"},
             {"id": "q", "image": str(scene), "task": "reasoning",
              "instruction": "which roof is the largest?"}]  # fmt: skip
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = api.run_instructions(
        tasks, engine="unigeoseg", output=tmp_path / "run",
        models=ModelOptions(unigeoseg=str(tiny_unigeoseg_folder), device="cpu"),
    )  # fmt: skip
    results = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().split("\n")
               if x]  # fmt: skip
    assert [r["status"] for r in results] == ["done", "done"], results
    assert report is not None


def test_doctor_loads_the_checkpoint_and_checks_the_fixed_sample(
    tiny_unigeoseg_folder, offline_hub
):
    res = _run("doctor", "--no-self-test", "--model", "unigeoseg", "--unigeoseg",
               tiny_unigeoseg_folder, "--json")  # fmt: skip
    checks = {c["name"]: c for c in json.loads(res.output)["checks"]}
    assert checks["unigeoseg load"]["status"] == "ok"
    assert "every released weight matched" in checks["unigeoseg load"]["detail"]
    sample = checks["unigeoseg sample"]
    assert sample["status"] in ("ok", "warn")  # random tiny weights need not find the roof
    assert all(t in sample["detail"] for t in ("interactive IoU", "referring IoU",
                                                "reasoning IoU"))  # fmt: skip
    missing = _run("doctor", "--no-self-test", "--model", "unigeoseg", "--unigeoseg",
                   "/nowhere/unigeoseg", "--json")  # fmt: skip
    failed = {c["name"]: c for c in json.loads(missing.output)["checks"]}["unigeoseg load"]
    assert failed["status"] == "fail" and missing.exit_code == 2
    # `--unigeoseg FOLDER` alone (as docs/unigeoseg.md shows it) checks that folder too
    alone = _run("doctor", "--no-self-test", "--unigeoseg", "/nowhere/unigeoseg", "--json")
    failed = {c["name"]: c for c in json.loads(alone.output)["checks"]}["unigeoseg load"]
    assert failed["status"] == "fail" and alone.exit_code == 2


def test_the_doctor_sample_is_what_its_roof_says():
    from terramask.eval.referring_datasets import parse_interactive
    from terramask.models.unigeoseg.doctor import SAMPLE_ROOF, sample_image, sample_requests

    image, truth = sample_image()
    x0, y0, x1, y1 = SAMPLE_ROOF
    assert truth.sum() == (x1 - x0) * (y1 - y0) and np.median(image[truth]) > 200
    box = parse_interactive(sample_requests()[0][1]).box
    h, w = truth.shape
    assert np.allclose(np.array(box) * [w, h, w, h], SAMPLE_ROOF, atol=0.5)


@pytest.mark.parametrize(("name", "build", "style", "task"), [
    ("rrsis-d", "build_rrsisd", "referring", "referring"),
    ("earthreason", "build_earthreason", "benchmark", "reasoning"),
])  # fmt: skip
def test_rrsisd_and_earthreason_use_their_released_templates_and_tasks(
    tiny_unigeoseg_folder, tmp_path, offline_hub, monkeypatch, name, build, style, task
):
    from terramask import api
    from terramask.models.unigeoseg import UniGeoSeg
    from tests.helpers import referring_data

    getattr(referring_data, build)(tmp_path / name)
    asked = []
    segment = UniGeoSeg.segment

    def spy(self, image, instruction, settings):
        asked.append((instruction.task, settings.prompt, settings.explain))
        return segment(self, image, instruction, settings)

    monkeypatch.setattr(UniGeoSeg, "segment", spy)
    report = api.evaluate(
        name, tmp_path / name, split="test", limit=2, engine="unigeoseg", output=tmp_path / "e",
        models=ModelOptions(unigeoseg=str(tiny_unigeoseg_folder), device="cpu"),
    )  # fmt: skip
    assert asked and set(asked) == {(task, style, False)}
    assert report["published"] and "giou" in report


def test_interactive_coordinates_follow_the_second_look_into_its_window():
    from rasterio.windows import Window

    from terramask.methods.unigeoseg_prompts import route_instruction
    from terramask.pipeline.unigeoseg_ask import _in_window

    class Scene:
        width, height = 1000, 500

    window = Window(200, 100, 400, 250)  # x 200-600, y 100-350
    box = route_instruction("segment the box x0,y0=[0.3,0.4], x1,y1=[0.5,0.6].")
    local = _in_window(box, window, Scene())
    assert local.task == "interactive" and "x0,y0=[0.25,0.4], x1,y1=[0.75,0.8]" in local.text
    np.testing.assert_allclose(local.coordinates, [[0.25, 0.4, 0.75, 0.8]])
    points = route_instruction("the points [0.4,0.45] and [0.9,0.2]", "interactive")
    local = _in_window(points, window, Scene())
    np.testing.assert_allclose(local.coordinates, [[0.5, 0.5, 0, 0], [1.0, 0.0, 0, 0]])
    text = route_instruction("the red roof")
    assert _in_window(text, window, Scene()) is text


def test_ask_refuses_pixel_coordinates_written_in_the_instruction(
    scene, tiny_unigeoseg_folder, tmp_path, offline_hub
):
    """[300,200] would be read as fractions far outside the scene and answered with exit 0."""
    res = _run("ask", scene, "Please segment the target corresponding to the points [300,200].",
               "--engine", "unigeoseg", "--unigeoseg", tiny_unigeoseg_folder, "--device", "cpu",
               "-o", tmp_path / "out")  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "fractions (0 to 1)" in res.output and "--point X,Y" in res.output
    assert not list((tmp_path / "out").glob("scene*"))
    ok = _run("ask", scene, "Please segment the target corresponding to the points [0.3,0.2].",
              "--engine", "unigeoseg", "--unigeoseg", tiny_unigeoseg_folder, "--device", "cpu",
              "--no-explain", "-o", tmp_path / "ok")  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_eval_on_a_split_without_published_numbers_says_so(
    tiny_unigeoseg_folder, tmp_path, offline_hub
):
    """No empty 'published' table: one line saying none is recorded for that split."""
    from terramask.testing.tiny_unigeoseg import write_tiny_instruction_data

    root = write_tiny_instruction_data(tmp_path / "bench", per_task=1, split="val")
    res = _run("eval", "unigeoseg-bench", "--root", root, "--split", "val", "--engine",
               "unigeoseg", "--unigeoseg", tiny_unigeoseg_folder, "--device", "cpu", "-o",
               tmp_path / "e")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "No published numbers are recorded for this data set on the val split." in " ".join(
        res.output.split())
    assert "published (real weights)" not in res.output
