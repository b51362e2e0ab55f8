"""`terramask prompt` and `doctor` from the command line with a tiny random SAM, and every bad
input a user is likely to hit: one paragraph on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest
import rasterio
from click.testing import CliRunner

from terramask.cli import cli
from terramask.testing.scenes import write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_sam


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("models") / "tiny-sam")


@pytest.fixture
def scene(tmp_path):
    return write_synthetic_scene(
        tmp_path / "scene.tif", width=260, height=200, dtype="uint16", nodata=0, nodata_border=6
    )


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


def assert_one_paragraph(result, *needles):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:")
    assert "Traceback" not in text and "\n\n" not in text
    for needle in needles:
        assert needle in text


def test_prompt_in_map_coordinates_writes_outputs_on_the_scene_grid(scene, tiny_sam, tmp_path):
    with rasterio.open(scene) as src:
        grid = (src.crs, src.transform, src.width, src.height)
        x, y = src.transform @ (130, 100)
        x0, y0 = src.transform @ (100, 120)
        x1, y1 = src.transform @ (160, 80)
    out = tmp_path / "out"
    # a click and a box around it, both in map coordinates: one object
    result = run(
        "prompt", scene, "--point", f"{x},{y}", "--crs", "EPSG:32633",
        "--box", f"{x0},{y0},{x1},{y1}", "--segmenter", tiny_sam, "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["objects"]) == 1
    assert data["objects"][0]["prompt_px"]["box"] == [100.0, 80.0, 160.0, 120.0]
    for kind in ("mask", "score"):
        with rasterio.open(data["outputs"][kind]) as written:
            assert (written.crs, written.transform, written.width, written.height) == grid
            assert (written.read_masks(1)[:6] == 0).all()  # the nodata frame stays nodata
    assert (out / "scene.gpkg").exists() and (out / "scene_preview.png").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_doctor_self_test_passes():
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["self-test"]["status"] == "ok", checks["self-test"]
    assert checks["gdal"]["status"] == "ok"


def bad_rasters(tmp_path):
    truncated = tmp_path / "truncated.tif"
    write_synthetic_scene(tmp_path / "whole.tif", width=256, height=256)
    truncated.write_bytes((tmp_path / "whole.tif").read_bytes()[:3000])
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.vrt"
    zero.write_text('<VRTDataset rasterXSize="0" rasterYSize="0"></VRTDataset>')
    return {
        "truncated": truncated,
        "text": text,
        "empty": empty,
        "zero": zero,
        "missing": tmp_path / "nowhere.tif",
    }


@pytest.mark.parametrize("case", ["truncated", "text", "empty", "zero", "missing"])
def test_unreadable_rasters(tmp_path, tiny_sam, case):
    path = bad_rasters(tmp_path)[case]
    out = tmp_path / "out"
    result = run("prompt", path, "--point", "5,5", "--segmenter", tiny_sam, "-o", out)
    assert_one_paragraph(result, path.name)
    assert not out.exists() or not any(out.iterdir())


def test_band_out_of_range(scene, tiny_sam, tmp_path):
    result = run("prompt", scene, "--bands", "4,3,2", "--point", "5,5", "--segmenter", tiny_sam,
                 "-o", tmp_path / "out")  # fmt: skip
    assert_one_paragraph(result, "3 band")


def test_prompt_outside_the_scene(scene, tiny_sam, tmp_path):
    result = run("prompt", scene, "--box", "400,10,900,50", "--segmenter", tiny_sam,
                 "-o", tmp_path / "out")  # fmt: skip
    assert_one_paragraph(result, "900")
    assert not any((tmp_path / "out").glob("*.tif"))


def test_existing_output_is_not_overwritten(scene, tiny_sam, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene.gpkg").write_bytes(b"keep me")
    result = run("prompt", scene, "--point", "50,50", "--segmenter", tiny_sam, "-o", out)
    assert_one_paragraph(result, "scene.gpkg", "--overwrite")
    assert (out / "scene.gpkg").read_bytes() == b"keep me"


def test_output_folder_that_is_a_file(scene, tiny_sam, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")
    result = run("prompt", scene, "--point", "50,50", "--segmenter", tiny_sam, "-o", blocker)
    assert_one_paragraph(result, str(blocker.name))


def test_missing_model_folder_names_the_model(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = run("prompt", scene, "--point", "50,50", "--segmenter", "acme/no-such-sam",
                 "-o", tmp_path / "out")  # fmt: skip
    assert_one_paragraph(result, "acme/no-such-sam", "offline")
    assert not any((tmp_path / "out").glob("*.tif"))
