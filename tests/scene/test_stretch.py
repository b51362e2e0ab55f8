"""The scene-wide stretch: once per scene, NaN/nodata-safe, identical for every tile."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from terramask.errors import InputError
from terramask.options import RasterOptions
from terramask.scene import Stretch, open_scene
from terramask.scene.raster import STRETCH_SAMPLE_SIZE, sample_windows
from terramask.scene.stretch import compute_stretch


def _write(path, data, nodata=None, overviews=False):
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=data.dtype.name, nodata=nodata, crs="EPSG:32633",
                       transform=Affine(1, 0, 500000, 0, -1, 4000000), tiled=True) as dst:
        dst.write(data)
        if overviews:
            dst.build_overviews([2, 4])
    return path


def test_uint8_auto_is_identity(make_scene):
    path = make_scene()
    with open_scene(path) as scene, rasterio.open(path) as src:
        assert scene.stretch.identity
        raw = src.read(window=Window(3, 4, 20, 10))
        image = scene.read(Window(3, 4, 20, 10)).image
        assert np.array_equal(image, np.moveaxis(raw, 0, -1))


def test_uint8_with_percentiles_is_stretched(make_scene):
    with open_scene(make_scene(), RasterOptions(stretch="1,99")) as scene:
        assert not scene.stretch.identity
        image = scene.read(Window(0, 0, 256, 256)).image
        assert image.min() == 0 and image.max() == 255


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_tile_and_bigger_window_are_byte_identical(make_scene, dtype):
    with open_scene(make_scene(dtype=dtype, width=300, height=200, nodata_border=5)) as scene:
        assert not scene.stretch.identity
        big = scene.read(Window(-16, -16, 332, 232))
        tile = scene.read(Window(100, 50, 64, 64))
        assert np.array_equal(tile.image, big.image[66:130, 116:180])
        assert np.array_equal(tile.valid, big.valid[66:130, 116:180])
        # the 2-98 % stretch uses the full byte range
        inside = big.image[big.valid]
        assert inside.min() == 0 and inside.max() == 255


def test_sixteen_bit_percentiles_ignore_nodata(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 2000, size=(3, 64, 64)).astype("uint16")
    data[:, :, :32] = 65535  # half the scene is nodata, far above the real values
    with open_scene(_write(tmp_path / "a.tif", data, nodata=65535)) as scene:
        assert scene.stretch.high.max() < 2000
        assert scene.stretch.low.min() >= 1000


def test_float_percentiles_ignore_nan(tmp_path):
    data = np.linspace(0, 1, 3 * 50 * 40, dtype="float32").reshape(3, 50, 40)
    data[:, :10] = np.nan
    data[0, 20, 20] = np.nan
    with open_scene(_write(tmp_path / "f.tif", data)) as scene:
        assert np.all(np.isfinite(scene.stretch.low)) and np.all(np.isfinite(scene.stretch.high))
        window = scene.read(Window(0, 0, 40, 50))
        assert not window.valid[:10].any() and not window.valid[20, 20]


def test_stretch_from_overview_matches_full_read(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.normal(1500, 300, size=(3, 2400, 2200)).clip(0, 4000).astype("uint16")
    with open_scene(_write(tmp_path / "o.tif", data, overviews=True)) as scene:
        data, _ = scene._stretch_sample()
        assert data.shape[1:] == (1200, 1100)  # the 1/2 overview, not the 1/4
        # 2-98 % of N(1500, 300) is about 1500 ± 616
        assert scene.stretch.low == pytest.approx([884] * 3, abs=30)
        assert scene.stretch.high == pytest.approx([2116] * 3, abs=30)


def test_large_scene_without_overviews_is_sampled_by_whole_blocks(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(1500, 300, size=(3, 2600, 2300)).clip(0, 4000).astype("uint16")
    data[:, :, :400] = 0  # a nodata strip on the left: excluded from the percentiles
    path = _write(tmp_path / "big.tif", data, nodata=0)
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [] and ds.block_shapes[0] == (256, 256)
    windows = sample_windows(2300, 2600, (256, 256), STRETCH_SAMPLE_SIZE**2)
    pixels = sum(w.width * w.height for w in windows)
    assert pixels == pytest.approx(STRETCH_SAMPLE_SIZE**2, rel=0.2)
    assert all(w.col_off % 256 == 0 and w.row_off % 256 == 0 for w in windows)
    assert all(w.col_off + w.width <= 2300 and w.row_off + w.height <= 2600 for w in windows)
    assert min(w.row_off for w in windows) == 0
    assert max(w.row_off + w.height for w in windows) > 2300
    with open_scene(path) as scene:
        assert scene.stretch.low == pytest.approx([884] * 3, abs=30)
        assert scene.stretch.high == pytest.approx([2116] * 3, abs=30)


def test_sample_windows_of_a_striped_file_are_row_bands():
    windows = sample_windows(50000, 40000, (1, 50000), STRETCH_SAMPLE_SIZE**2)
    assert {(w.width, w.height) for w in windows} == {(1024, 256)}
    assert len(windows) == pytest.approx(4, abs=1)
    assert max(w.row_off for w in windows) == 40000 - 256


def test_constant_band_does_not_divide_by_zero(tmp_path):
    data = np.full((3, 16, 16), 700, dtype="uint16")
    data[0] = np.arange(256).reshape(16, 16)
    with open_scene(_write(tmp_path / "c.tif", data)) as scene:
        image = scene.read(Window(0, 0, 16, 16)).image
        assert (image[..., 1] == 0).all() and image[..., 0].max() == 255


def test_none_uses_min_max():
    sample = np.arange(3 * 100, dtype="float32").reshape(3, 10, 10)
    stretch = compute_stretch(sample, np.ones((10, 10), bool), "float32", "none")
    assert stretch.low.tolist() == [0, 100, 200] and stretch.high.tolist() == [99, 199, 299]


def test_apply_maps_low_high_to_0_255():
    stretch = Stretch(np.array([10.0]), np.array([20.0]))
    out = stretch.apply(np.array([[[5.0, 10, 15, 20, 30, np.nan]]]), np.ones((1, 6), bool))
    assert out[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


@pytest.mark.parametrize("bad", ["2;98", "98,2", "linear", "0,101"])
def test_bad_stretch_option(make_scene, bad):
    with pytest.raises(InputError, match=r"`RasterOptions\.stretch`"):
        open_scene(make_scene(dtype="uint16"), RasterOptions(stretch=bad))
