"""`segment` and `eval` from the command line with tiny random SAM, CLIP and SAM 3 models,
loaded from folders exactly as real checkpoints are: every engine, end to end."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner

from terramask.cli import cli
from terramask.testing.scenes import write_geotiff_from_image
from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam, save_tiny_sam3
from tests.helpers.eval_layouts import build_layout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "sam": save_tiny_sam(root / "sam"),
        "clip": save_tiny_clip(root / "clip"),
        "sam3": save_tiny_sam3(root / "sam3"),
    }


@pytest.fixture(scope="module")
def scene(rs_samples, tmp_path_factory):
    image = rs_samples / "vaihingen" / "img_dir" / "area1_0_0_512_512.png"
    return write_geotiff_from_image(image, tmp_path_factory.mktemp("scene") / "vaihingen.tif")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["clip", "sam+clip", "sam3"])
def test_segment_every_engine_writes_a_georeferenced_label_map(engine, tiny, scene, tmp_path):
    out = tmp_path / "out"
    models = {
        "clip": ["--clip", tiny["clip"]],
        "sam+clip": ["--segmenter", tiny["sam"], "--clip", tiny["clip"], "--grid", "6"],
        "sam3": ["--sam3", tiny["sam3"]],
    }[engine]
    result = run(
        "segment", scene, "-c", "building,roof", "-c", "road,street", "-c", "tree",
        "--engine", engine, *models, "--tile", "256", "--overlap", "64",
        "--threshold", "0.2", "--background", "clutter", "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["name"] for c in data["classes"]] == ["building", "road", "tree", "clutter"]
    with rasterio.open(scene) as src, rasterio.open(data["outputs"]["labels"]) as labels:
        assert (labels.crs, labels.transform, labels.shape) == (src.crs, src.transform, src.shape)
        values = labels.read(1)
        assert set(labels.colormap(1)) >= {0, 1, 2, 3, 4}
    assert set(np.unique(values)) <= {1, 2, 3, 4}  # every valid pixel has a class
    assert sum(c["pixels"] for c in data["classes"]) == 512 * 512
    meta, _, _, fields = pyogrio.raw.read(data["outputs"]["gpkg"])
    labels_written = set(dict(zip(meta["fields"], fields, strict=True))["label"])
    assert labels_written <= {"building", "road", "tree", "clutter"} and labels_written
    assert (out / "vaihingen_preview.png").stat().st_size > 1000
    report = json.loads((out / "vaihingen.json").read_text())
    assert report["engine"] == engine  # and names the models used:
    assert {k: report[k] for k in ("segmenter", "clip", "sam3") if k in report} == {
        {"--segmenter": "segmenter", "--clip": "clip", "--sam3": "sam3"}[flag]: str(path)
        for flag, path in zip(models[::2], models[1::2], strict=True)
        if flag != "--grid"
    }


@pytest.mark.slow
def test_eval_runs_on_a_mini_benchmark_with_real_model_classes(tiny, rs_samples, tmp_path):
    root = build_layout(rs_samples, "potsdam", tmp_path / "potsdam")
    out = tmp_path / "eval"
    result = run(
        "eval", "potsdam", "--root", root, "--engine", "sam+clip", "--segmenter", tiny["sam"],
        "--clip", tiny["clip"], "--grid", "4", "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0.0 <= report["miou"] <= 100.0
    written = list(out.rglob("report.md"))
    assert written and "41.3" in written[0].read_text()  # the published numbers stand beside ours
    predictions = list(out.rglob("predictions/*.png"))
    assert len(predictions) == 1
    # the saved predictions score to the same mIoU through `terramask score`
    classes = ",".join(c for c in report["iou"])
    rescored = run("score", predictions[0].parent, root / "ann_dir" / "val", "--classes", classes,
                   "--ignore-index", "255", "--reduce-zero-label", "--json")  # fmt: skip
    assert rescored.exit_code == 0, rescored.output
    assert json.loads(rescored.stdout)["miou"] == pytest.approx(report["miou"])
