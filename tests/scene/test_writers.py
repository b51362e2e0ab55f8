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
from terramask.scene.writers import LEGEND_ENTRIES_MAX, MARK_STYLES, Mark

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


def _preview_inputs(make_scene, tmp_path):
    scene_path = make_scene(width=300, height=200)
    mask = tmp_path / "m.tif"
    with open_scene(scene_path) as scene:
        labels = np.zeros((200, 300), "uint8")
        labels[50:100, 100:200] = 1
        with RasterWriter(mask, width=300, height=200, dtype="uint8", crs=scene.crs,
                          transform=scene.transform) as writer:
            writer.write(labels, rasterio.windows.Window(0, 0, 300, 200))
    return scene_path, mask


def test_preview_legend_and_prompt_marks(make_scene, tmp_path):
    scene_path, mask = _preview_inputs(make_scene, tmp_path)
    marks = [Mark("box", (100, 50, 200, 100)), Mark("positive", (20.5, 20.5)),
             Mark("negative", (260.5, 160.5))]  # fmt: skip
    with open_scene(scene_path) as scene:
        plain = np.asarray(Image.open(write_preview(
            tmp_path / "plain.png", scene, mask, colormap={1: (255, 0, 0)}, max_size=150
        )))  # fmt: skip
        out = write_preview(tmp_path / "p.png", scene, mask, colormap={1: (255, 0, 0)},
                            legend=[("roof", (255, 0, 0, 255))], marks=marks, max_size=150)
        again = write_preview(tmp_path / "q.png", scene, mask, colormap={1: (255, 0, 0)},
                              legend=[("roof", (255, 0, 0, 255))], marks=marks, max_size=150)
    assert out.read_bytes() == again.read_bytes()  # drawn deterministically
    image = np.asarray(Image.open(out))
    assert image.shape[0] == 100 and image.shape[1] > 150  # the map, then the legend panel
    view, panel = image[:, :150], image[:, 150:]
    yellow, green, red = (MARK_STYLES[k][1] for k in ("box", "positive", "negative"))
    assert tuple(view[25, 75]) == yellow and tuple(view[49, 75]) == yellow  # top, bottom
    assert tuple(view[37, 50]) == yellow and tuple(view[37, 99]) == yellow  # left, right
    assert np.array_equal(view[30:45, 55:95], plain[30:45, 55:95])  # inside: untouched
    assert tuple(view[10, 10]) == green and tuple(view[80, 130]) == red
    assert np.array_equal(view[60:75, 10:60], plain[60:75, 10:60])  # away from marks
    pixels = panel.reshape(-1, 3)
    for colour in ((255, 0, 0), yellow, green, red):
        assert (pixels == colour).all(axis=1).any()  # a swatch or symbol for each entry
    assert (pixels == 0).all(axis=1).any()  # black text
    assert not (pixels == MARK_STYLES["refined_box"][1]).all(axis=1).any()  # not drawn


def test_preview_legend_panel_grows_for_many_entries(make_scene, tmp_path):
    scene_path, mask = _preview_inputs(make_scene, tmp_path)

    def legend(n):
        return [(f"class {i} with a name longer than the legend allows, cut", (i, 0, 0))
                for i in range(n)]  # fmt: skip

    with open_scene(scene_path) as scene:
        heights = {
            n: np.asarray(Image.open(write_preview(
                tmp_path / f"{n}.png", scene, mask, colormap={}, legend=legend(n), max_size=150
            ))).shape[0]
            for n in (30, LEGEND_ENTRIES_MAX, 5000)
        }  # fmt: skip
        image = np.asarray(Image.open(tmp_path / "30.png"))
    assert heights[30] > 100  # taller than the map: every entry fits
    assert (image[100:, :150] == 255).all()  # below the map: white
    assert heights[5000] == heights[LEGEND_ENTRIES_MAX]  # the rest are counted in one line


def test_legend_text_is_one_line_the_font_can_draw():
    from PIL import ImageFont

    from terramask.scene.writers import LEGEND_TEXT_MAX, _legend_text

    free = ImageFont.load_default(size=12)
    assert _legend_text("road\nand  street", free) == "road and street"
    long = _legend_text("x" * 100, free)
    assert len(long) == LEGEND_TEXT_MAX and long.endswith("...")
    bitmap = ImageFont.load_default_imagefont()
    assert _legend_text("建筑 forêt", bitmap) == "?? forêt"  # Latin-1 only, and no error


def test_marks_are_checked():
    with pytest.raises(ValueError, match="unknown mark kind 'circle'"):
        Mark("circle", (1, 2))
    assert Mark("positive", (np.float32(1.5), 2)).coords == (1.5, 2.0)
