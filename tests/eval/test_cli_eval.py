"""`terramask score` and `terramask eval` from the command line: tables, --json and errors."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from terramask import api
from terramask.cli import cli
from terramask.methods.ovss import OvssPredictor
from terramask.options import REFERENCE_GENERATION, GenerationSettings, ModelOptions
from terramask.pipeline.engines import PredictorSpec
from tests.helpers.eval_engines import OracleEngine, UniformEngine, answers_for
from tests.helpers.eval_layouts import read_pairs

POTSDAM = "impervious,building,low vegetation,tree,car,clutter"


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], obj={})


@pytest.fixture
def fake_engines(monkeypatch):
    """`PredictorSpec.build` records the spec it was asked to build and returns a double
    around `holder.engine`."""
    calls = []
    holder = types.SimpleNamespace(engine=None)

    def build(spec):
        calls.append(spec)
        return OvssPredictor(holder.engine, threshold=spec.threshold)

    monkeypatch.setattr(PredictorSpec, "build", build)
    return holder, calls


def test_score_json(run, rs_samples):
    ann = rs_samples / "potsdam" / "ann_dir"
    result = run("score", ann, ann, "--classes", "boundary," + POTSDAM, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["miou"] == 100.0 and data["images"] == 1
    assert data["iou"]["clutter"] is None and data["iou"]["car"] == 100.0


def test_score_table_and_reduce_zero_label(run, rs_samples):
    ann = rs_samples / "potsdam" / "ann_dir"
    result = run("score", ann, ann, "--classes", POTSDAM, "--reduce-zero-label")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "low vegetation" in result.output


def test_score_error_is_one_paragraph(run, tmp_path, rs_samples):
    result = run("score", tmp_path, rs_samples / "loveda" / "ann_dir", "--classes", "a,b")
    assert result.exit_code == 2
    assert "holds no PNG or TIFF" in result.output and "Traceback" not in result.output


def test_eval_through_the_api_builds_the_named_engine(run, mini_layout, tmp_path, fake_engines):
    module, calls = fake_engines
    root = mini_layout("potsdam")
    module.engine = OracleEngine(answers_for(read_pairs(root), reduce=True))
    out = tmp_path / "out"
    result = run(
        "eval", "potsdam", "--root", root, "--engine", "clip", "--clip", "my/clip",
        "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["miou"] == 100.0 and data["split"] == "val" and data["dataset"] == "potsdam"
    # eval builds with segment-anything's own mask generation (unused by clip, but recorded)
    assert calls == [
        PredictorSpec("clip", ModelOptions(clip="my/clip"), REFERENCE_GENERATION, threshold=0.1)
    ]
    assert data["engine"] == "clip" and data["models"] == {"clip": "my/clip"}
    assert [r["method"] for r in data["published"] if r["ours"]] == ["SegEarth-OV"]
    assert (out / "potsdam_val" / "report.md").exists()

    human = run("eval", "potsdam", "--root", root, "-o", out, "--overwrite", "--threshold", 0.5)
    assert human.exit_code == 0, human.output
    assert "SegEarth-OV3" in human.output and "100.00" in human.output
    assert calls[-1].engine == "sam+clip" and calls[-1].threshold == 0.5


def test_single_class_sets_ask_for_per_class_mask_voting(tmp_path, fake_engines):
    module, calls = fake_engines
    root = tmp_path / "WHU-BD"
    for sub, value in (("image", 7), ("label_cvt", 1)):
        (root / "val" / sub).mkdir(parents=True)
        pixels = np.full((8, 8, 3) if sub == "image" else (8, 8), value, np.uint8)
        Image.fromarray(pixels).save(root / "val" / sub / "tile.png")
    module.engine = UniformEngine()
    result = api.evaluate("whu_aerial", root, engine="sam+clip",
                          generation=GenerationSettings(grid=16), output=tmp_path / "o")
    assert calls[-1].single_class == 1 and calls[-1].generation.grid == 16
    assert calls[-1].threshold == 0.6
    assert result["iou"] == {"background": 0.0, "building": 0.0}  # uniform 0.5 < 0.6


def test_eval_refuses_raw_binary_masks_before_building_any_engine(run, tmp_path, fake_engines):
    _, calls = fake_engines
    root = tmp_path / "AerialImageDataset" / "train"
    for sub in ("img_dir", "ann_dir"):
        (root / sub / "split_test").mkdir(parents=True)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:9, 3:12] = 255
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(root / "img_dir/split_test/t.png")
    Image.fromarray(mask).save(root / "ann_dir/split_test/t.png")
    result = run("eval", "inria", "--root", root, "-o", tmp_path / "o")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "0 and 255" in output and "label_cvt" in output and "Traceback" not in output
    assert calls == [] and not (tmp_path / "o").exists()


def test_score_names_the_flag_that_fixes_the_labels(run, rs_samples):
    ann = rs_samples / "loveda" / "ann_dir"
    classes = "background,building,road,water,barren,forest,agriculture"
    result = run("score", ann, ann, "--classes", classes)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "--reduce-zero-label" in output and "--classes" in output


def test_eval_unknown_dataset_lists_known_ones(run, tmp_path):
    result = run("eval", "cityscapes", "--root", tmp_path)
    assert result.exit_code == 2
    assert "loveda" in result.output and "Traceback" not in result.output


def test_api_evaluate_accepts_a_built_engine(mini_layout, tmp_path):
    root = mini_layout("vaihingen")
    engine = OracleEngine(answers_for(read_pairs(root), reduce=True), remap={3: 2})
    result = api.evaluate("vaihingen", root, engine=engine, output=tmp_path)
    assert result["iou"]["tree"] == 0.0 and 0 < result["miou"] < 100
    assert result["outputs"]["report_json"].startswith(str(tmp_path / "vaihingen_val"))


def test_eval_checks_the_layout_before_building_any_engine(run, tmp_path, fake_engines):
    _, calls = fake_engines
    result = run("eval", "loveda", "--root", tmp_path)
    assert result.exit_code == 2
    assert str(tmp_path / "img_dir" / "val") in result.output.replace("\n", "")
    assert calls == []


def test_eval_list_shows_every_preset_with_its_layout_and_values(run):
    from terramask.eval.presets import list_presets

    result = run("eval", "--list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["presets"]
    assert [r["name"] for r in rows] == sorted(list_presets())
    potsdam = next(r for r in rows if r["name"] == "potsdam")
    assert potsdam["images"] == "img_dir/<split>/*.png" and "2 building" in potsdam["label_values"]
    table = run("eval", "--list")
    assert table.exit_code == 0 and "loveda" in table.output


def test_eval_help_lists_each_preset_layout(run):
    result = run("eval", "--help")
    assert result.exit_code == 0
    assert "inria" in result.output and "0 background, 1 building" in result.output


def test_eval_without_a_dataset_says_what_it_needs(run):
    result = run("eval")
    assert result.exit_code == 2 and "--list" in result.output
