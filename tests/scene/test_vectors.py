"""Polygonizing label rasters, ground areas, and GeoPackage/GeoJSON output."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from terramask.options import PolygonOptions
from terramask.scene import Feature, GeoreferenceWarning, area_m2, polygonize, write_vectors
from terramask.scene.vectors import VectorWriter

UTM = Affine(0.5, 0, 500000, 0, -0.5, 4650000)  # EPSG:32633, 15°E / ~42°N


def _labels():
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[2:12, 3:13] = 1  # 100 px building
    labels[20:30, 20:40] = 2  # 200 px road
    labels[25:27, 30:32] = 0  # a hole in it
    labels[35:37, 50:52] = 1  # 4 px speck
    labels[0:5, 50:55] = 9  # value not in names
    return labels


def test_polygonize_regions_scores_and_areas():
    score_map = np.zeros((40, 60), np.float32)
    score_map[2:12, 3:13] = 0.8
    score_map[20:30, 20:40] = 0.25
    features = polygonize(_labels(), UTM, names={1: "building", 2: "road"}, crs="EPSG:32633",
                          score_map=score_map)
    assert sorted(f.label for f in features) == ["building", "building", "road"]
    building = max((f for f in features if f.label == "building"), key=lambda f: f.area_m2)
    assert building.score == pytest.approx(0.8)
    assert building.area_m2 == pytest.approx(100 * 0.25)
    assert building.geometry.bounds == pytest.approx((500001.5, 4649994.0, 500006.5, 4649999.0))
    road = next(f for f in features if f.label == "road")
    assert len(road.geometry.interiors) == 1
    assert road.area_m2 == pytest.approx(196 * 0.25)
    assert road.score == pytest.approx(0.25)


def test_polygonize_fixed_scores_min_area_valid_and_simplify():
    labels = _labels()
    valid = np.ones_like(labels, dtype=bool)
    valid[:, :8] = False
    features = polygonize(labels, UTM, names={1: "building", 2: "road"}, crs="EPSG:32633",
                          scores={1: 0.9, 2: 0.5}, valid=valid,
                          polygons=PolygonOptions(simplify=0.5, min_area=10))
    assert [(f.label, f.score) for f in features] == [("building", 0.9), ("road", 0.5)]
    assert features[0].area_m2 == pytest.approx(50 * 0.25)  # the invalid half is gone
    assert all(f.geometry.is_valid for f in features)


def test_polygonize_touching_classes_stay_apart_and_no_crs_area_is_none():
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 2:5] = 1
    labels[2:8, 5:8] = 2
    features = polygonize(labels, Affine.identity(), names={1: "a", 2: "b"})
    assert [f.geometry.area for f in features] == [18, 18]
    assert all(f.area_m2 is None and math.isnan(f.score) for f in features)


def test_area_projected_feet_and_geographic():
    square = box(0, 0, 100, 100)
    assert area_m2(square, "EPSG:32633") == pytest.approx(10000)
    # EPSG:2263 (New York Long Island) is in US survey feet
    assert area_m2(square, "EPSG:2263") == pytest.approx(10000 * 0.3048006096**2)
    # a 0.001° square at the equator is about 111.32 m × 110.57 m
    degree = box(10, 0, 10.001, 0.001)
    assert area_m2(degree, "EPSG:4326") == pytest.approx(111.32 * 110.57, rel=2e-3)
    assert area_m2(square, None) is None


def test_write_gpkg_native_and_geojson_wgs84(tmp_path):
    geometry = box(500000, 4650000, 500100, 4650100)
    features = [
        Feature(geometry, "building", 0.75, 10000.0, {"tile": 3, "method": "sam"}),
        Feature(geometry.buffer(-10), "road", 0.5, None, {"tile": 4}),
    ]
    gpkg, geojson = tmp_path / "o.gpkg", tmp_path / "o.geojson"
    written = write_vectors(features, crs="EPSG:32633", gpkg_path=gpkg, geojson_path=geojson)
    assert written == [gpkg, geojson]
    info = pyogrio.read_info(gpkg, layer="objects")
    assert info["crs"] == "EPSG:32633" and info["features"] == 2
    assert list(info["fields"]) == ["label", "score", "area_m2", "tile", "method"]
    _, _, wkb, fields = pyogrio.raw.read(gpkg)
    assert shapely.from_wkb(wkb[0]).equals(geometry)
    assert math.isnan(fields[2][1])  # None area is written as null
    data = json.loads(geojson.read_text())
    lon, lat = np.array(data["features"][0]["geometry"]["coordinates"][0]).mean(axis=0)
    # UTM 33N easting 500 km is the 15°E central meridian; northing 4650 km is about 42°N
    assert lon == pytest.approx(15.0006, abs=1e-3) and lat == pytest.approx(42.0, abs=0.05)
    assert data["features"][0]["properties"]["label"] == "building"
    assert sorted(os.listdir(tmp_path)) == ["o.geojson", "o.gpkg"]


def test_empty_layers_keep_the_schema(tmp_path):
    gpkg, geojson = tmp_path / "e.gpkg", tmp_path / "e.geojson"
    write_vectors([], crs="EPSG:32633", gpkg_path=gpkg, geojson_path=geojson)
    info = pyogrio.read_info(gpkg)
    assert info["features"] == 0 and list(info["fields"]) == ["label", "score", "area_m2"]
    assert json.loads(geojson.read_text())["features"] == []


def test_no_crs_skips_geojson_and_refuses_overwrite(tmp_path):
    gpkg, geojson = tmp_path / "n.gpkg", tmp_path / "n.geojson"
    features = [Feature(box(0, 0, 5, 5), "a", 1.0, None)]
    with pytest.warns(GeoreferenceWarning, match="No GeoJSON"):
        written = write_vectors(features, crs=None, gpkg_path=gpkg, geojson_path=geojson)
    assert written == [gpkg] and not geojson.exists()
    assert pyogrio.read_info(gpkg)["crs"] is None
    with pytest.raises(FileExistsError, match="`overwrite`"):
        write_vectors(features, crs="EPSG:32633", gpkg_path=gpkg, geojson_path=None)
    write_vectors(features, crs="EPSG:32633", gpkg_path=gpkg, geojson_path=None, overwrite=True)
    assert pyogrio.read_info(gpkg)["crs"] == "EPSG:32633"


def test_streamed_batches_equal_one_write_and_nothing_appears_on_failure(tmp_path):
    features = [
        Feature(box(500000 + 10 * i, 4650000, 500008 + 10 * i, 4650008), f"c{i % 3}", i / 10, 64.0)
        for i in range(7)
    ]
    write_vectors(features, crs="EPSG:32633", gpkg_path=tmp_path / "one.gpkg",
                  geojson_path=tmp_path / "one.geojson")  # fmt: skip
    writer = VectorWriter(crs="EPSG:32633", gpkg_path=tmp_path / "s.gpkg",
                          geojson_path=tmp_path / "s.geojson", batch=3)  # fmt: skip
    with writer:
        for f in features:
            writer.add([f])
            assert len(writer._buffer) < 3  # flushed every 3: memory holds one batch
    assert writer.count == 7
    for suffix in ("gpkg", "geojson"):
        one, streamed = pyogrio.raw.read(tmp_path / f"one.{suffix}"), pyogrio.raw.read(
            tmp_path / f"s.{suffix}"
        )
        assert list(one[2]) == list(streamed[2])  # same geometries, same order
        for a, b in zip(one[3], streamed[3], strict=True):
            assert list(a) == list(b)
    with pytest.raises(RuntimeError), VectorWriter(
        crs="EPSG:32633", gpkg_path=tmp_path / "f.gpkg", geojson_path=tmp_path / "f.geojson",
        batch=2,
    ) as failing:  # fmt: skip
        failing.add(features)
        raise RuntimeError("the run broke")
    assert not list(tmp_path.glob("f.*")) and not list(tmp_path.glob(".f.*"))
