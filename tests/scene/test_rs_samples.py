"""Real imagery: an rs-samples tile georeferenced as a GeoTIFF opens, tiles and reads back."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
from PIL import Image

from terramask.options import Tiling
from terramask.scene import open_scene, plan_tiles
from terramask.testing.scenes import write_geotiff_from_image


def test_loveda_tile_as_geotiff(rs_samples, tmp_path):
    png = rs_samples / "loveda" / "img_dir" / "0.png"
    tif = write_geotiff_from_image(png, tmp_path / "loveda0.tif")
    original = np.asarray(Image.open(png).convert("RGB"))
    with open_scene(tif) as scene:
        assert (scene.width, scene.height) == (1024, 1024)
        assert scene.crs.to_epsg() == 32650 and scene.pixel_size == pytest.approx((0.3, 0.3))
        assert scene.name == "loveda0"
        # lies near Wuhan (about 114.3°E, 30.6°N)
        to_wgs84 = pyproj.Transformer.from_crs("EPSG:32650", "EPSG:4326", always_xy=True)
        lon, lat = to_wgs84.transform(scene.transform.c, scene.transform.f)
        assert 114 < lon < 114.5 and 30.4 < lat < 30.7
        plan = plan_tiles(scene.width, scene.height, Tiling(512, 64))
        tile = plan[len(plan) - 1]
        window = scene.read(tile.window)
        assert np.array_equal(window.image, original[tile.window.toslices()])
        assert window.valid.all()


def test_dubai_jpg_as_geotiff(rs_samples, tmp_path):
    jpg = sorted((rs_samples / "dubai").glob("tile*/images/*.jpg"))[0]
    tif = write_geotiff_from_image(jpg, tmp_path / "dubai.tif", crs="EPSG:32640",
                                   origin=(300000.0, 2780000.0), pixel_size=0.5)
    with open_scene(tif) as scene:
        overview = scene.overview(256)
        assert max(overview.image.shape[:2]) == 256 and overview.valid.all()
