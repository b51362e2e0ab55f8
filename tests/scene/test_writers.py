"""Output writing: COGs that keep georeferencing and colours, atomic files, previews, OutputSet."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from terramask.atomic import atomic_output
from terramask.errors import OutputError
from terramask.scene import OutputSet, RasterWriter, open_scene, write_preview

ROTATED = Affine.translation(500000, 4650000) @ Affine.rotation(20) @ Affine.scale(0.5, -0.5)
COLORS = {0: (0, 0, 0, 0), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)}


def _labels(height, width):
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows // 50 + cols // 70) % 3).astype("uint8")


def _write(path, *, crs="EPSG:32633", transform=ROTATED, overwrite=False, height=700, width=600):
    labels = _labels(height, width)
    with RasterWriter(path, width=width, height=height, dtype="uint8", crs=crs,
                      transform=transform, nodata=255, colormap=COLORS, overwrite=overwrite,
                      block_size=256) as writer:
        for window in writer.blocks():
            writer.write(labels[window.toslices()], window)
    return labels


def test_raster_writer_makes_a_cog(tmp_path):
    path = tmp_path / "out_labels.tif"
    labels = _write(path)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == ROTATED  # exactly: a rotated grid is not approximated
        assert (src.width, src.height, src.nodata) == (600, 700, 255)
        assert src.colormap(1)[1] == (255, 0, 0, 255) and src.colormap(1)[2] == (0, 0, 255, 255)
        assert src.profile["tiled"] and src.profile["blockxsize"] == 256
        assert src.overviews(1) == [2, 4]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.compression.name == "deflate"
        assert np.array_equal(src.read(1), labels)
    assert os.listdir(tmp_path) == ["out_labels.tif"]


def test_raster_writer_without_crs(tmp_path):
    path = tmp_path / "nocrs.tif"
    _write(path, crs=None, transform=Affine.identity(), height=100, width=100)
    with rasterio.open(path) as src:
        assert src.crs is None and src.read(1).shape == (100, 100)


def test_failure_mid_write_leaves_nothing(tmp_path):
    path = tmp_path / "broken.tif"
    with pytest.raises(RuntimeError, match="boom"), RasterWriter(
        path, width=600, height=600, dtype="uint8", crs="EPSG:32633", transform=ROTATED,
        block_size=256,
    ) as writer:
        for i, window in enumerate(writer.blocks()):
            writer.write(np.ones((int(window.height), int(window.width)), "uint8"), window)
            if i == 2:
                raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_existing_output_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "keep.tif"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="`overwrite`"):
        _write(path)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["keep.tif"]
    _write(path, overwrite=True, height=64, width=64)
    with rasterio.open(path) as src:
        assert src.shape == (64, 64)


def test_atomic_output_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "x.geojson"
    with pytest.raises(ValueError), atomic_output(target, overwrite=False) as temp:
        assert temp.parent == tmp_path and temp.suffix == ".geojson"
        assert temp.name.startswith(".x.tmp-")
        temp.write_text("half")
        (tmp_path / (temp.name + ".aux.xml")).write_text("sidecar")
        raise ValueError
    assert os.listdir(tmp_path) == []
    with atomic_output(target, overwrite=False) as temp:
        temp.write_text("{}")
    assert target.read_text() == "{}" and os.listdir(tmp_path) == ["x.geojson"]


def test_preview_blends_labels_over_the_scene(make_scene, tmp_path):
    scene_path = make_scene(width=300, height=200)
    mask = tmp_path / "m.tif"
    with open_scene(scene_path) as scene:
        labels = np.zeros((200, 300), "uint8")
        labels[50:100, 100:200] = 1
        with RasterWriter(mask, width=300, height=200, dtype="uint8", crs=scene.crs,
                          transform=scene.transform) as writer:
            writer.write(labels, rasterio.windows.Window(0, 0, 300, 200))
        out = write_preview(tmp_path / "p.png", scene, mask, colormap={1: (255, 0, 0)},
                            max_size=150, alpha=0.5)
        image = np.asarray(Image.open(out))
        assert image.shape == (100, 150, 3)
        base = scene.overview(150).image
        assert np.array_equal(image[:20], base[:20])  # no label: untouched
        red = image[30:45, 55:95].astype(int)
        expected = (base[30:45, 55:95].astype(int) + np.array([255, 0, 0])) / 2
        assert np.abs(red - expected).max() <= 1
        with pytest.raises(OutputError):
            write_preview(out, scene, mask, colormap={1: (255, 0, 0)})


def test_output_set_names_and_checks(tmp_path):
    outputs = OutputSet(tmp_path / "new" / "dir", "tile7")
    assert outputs.path("mask").name == "tile7_mask.tif"
    assert outputs.path("gpkg").name == "tile7.gpkg"
    assert outputs.path("preview").name == "tile7_preview.png"
    assert outputs.path("report").name == "tile7.json"
    outputs.check(["mask", "gpkg"])
    assert outputs.directory.is_dir()
    outputs.path("gpkg").write_text("old")
    outputs.path("mask").write_text("old")
    with pytest.raises(FileExistsError, match=r"tile7_mask\.tif, tile7\.gpkg.*`overwrite`"):
        outputs.check(["mask", "gpkg", "geojson"])
    outputs.check(["geojson"])
    OutputSet(outputs.directory, "tile7", overwrite=True).check(["mask", "gpkg"])


def test_output_set_unwritable_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=r"cannot be created|not a folder"):
        OutputSet(blocker / "sub", "a").check(["mask"])
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable"):
                OutputSet(locked, "a").check(["mask"])
        finally:
            locked.chmod(0o700)


def test_float_score_raster(tmp_path):
    path = tmp_path / "s_score.tif"
    scores = np.linspace(0, 1, 300 * 200, dtype="float32").reshape(1, 300, 200)
    with RasterWriter(path, width=200, height=300, dtype="float32", crs="EPSG:4326",
                      transform=Affine(1e-5, 0, 15, 0, -1e-5, 42), nodata=-1.0,
                      block_size=128, resampling="average") as writer:
        writer.write(scores, rasterio.windows.Window(0, 0, 200, 300))
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "float32" and src.nodata == -1.0 and src.crs.to_epsg() == 4326
        assert np.array_equal(src.read(), scores)
        assert src.overviews(1) == [2, 4]  # until the smallest level fits in one block
