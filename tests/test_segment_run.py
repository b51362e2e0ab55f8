"""`segment` end to end with a pixelwise engine double: tiles leave no trace, polygons are
merged across seams, outputs carry class names and the scene's grid."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from terramask import api
from terramask.methods.ovss import OvssPredictor
from terramask.options import Tiling
from terramask.testing.scenes import write_geotiff_from_image, write_synthetic_scene
from tests.helpers.doubles import ColourEngine, ComponentSegmenter

CLASSES = ["impervious surface,road", "building,roof", "low vegetation", "tree"]
PROTOTYPES = [(150, 150, 150), (200, 90, 70), (90, 130, 70), (40, 70, 40)]


@pytest.fixture(scope="module")
def potsdam(rs_samples, tmp_path_factory):
    image = rs_samples / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"
    return write_geotiff_from_image(image, tmp_path_factory.mktemp("p") / "potsdam.tif")


def polygons(path):
    meta, _, geometry, values = pyogrio.raw.read(path)
    fields = dict(zip(meta["fields"], values, strict=True))
    return meta, [
        (label, shapely.from_wkb(g)) for label, g in zip(fields["label"], geometry, strict=True)
    ]


def run(scene, out, tile, overlap, prototypes=PROTOTYPES, **kw):
    predictor = OvssPredictor(ColourEngine(prototypes), threshold=kw.pop("threshold", None))
    return api.segment(
        scene,
        CLASSES,
        predictor=predictor,
        output=out,
        **kw,
        tiling=Tiling(tile=tile, overlap=overlap),
    )  # fmt: skip


def test_tiled_equals_whole_and_polygons_merge_across_seams(potsdam, tmp_path):
    whole = run(potsdam, tmp_path / "whole", 1024, 0)
    tiled = run(potsdam, tmp_path / "tiled", 160, 48)
    assert tiled.tiles["total"] == 25 and whole.tiles["total"] == 1
    with rasterio.open(whole.outputs["labels"]) as a, rasterio.open(tiled.outputs["labels"]) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    _, whole_polys = polygons(whole.outputs["gpkg"])
    _, tiled_polys = polygons(tiled.outputs["gpkg"])
    assert len(tiled_polys) == len(whole_polys)
    tree = shapely.STRtree([g for _, g in tiled_polys])
    for label, geometry in whole_polys:
        twins = [
            i
            for i in tree.query(geometry, predicate="intersects")
            if tiled_polys[i][0] == label
            and tiled_polys[i][1].symmetric_difference(geometry).area < 1e-6
        ]
        assert len(twins) == 1, (label, geometry.wkt[:80])


def test_outputs_name_classes_and_keep_the_grid(potsdam, tmp_path):
    result = run(potsdam, tmp_path / "out", 256, 64)
    with rasterio.open(potsdam) as src, rasterio.open(result.outputs["labels"]) as labels:
        assert (labels.crs, labels.transform, labels.shape) == (src.crs, src.transform, src.shape)
        assert labels.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert labels.colormap(1)[1][:3] == (230, 25, 75)
        values = labels.read(1)
    assert set(np.unique(values)) <= {1, 2, 3, 4}
    meta, polys = polygons(result.outputs["gpkg"])
    assert {label for label, _ in polys} <= {"impervious surface", "building", "low vegetation",
                                              "tree"}  # fmt: skip
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == rasterio.open(potsdam).crs
    report = json.loads(result.outputs["report"].read_text())
    counts = {c["name"]: c["pixels"] for c in report["classes"]}
    assert sum(counts.values()) == 512 * 512
    assert counts["building"] == int((values == 2).sum())
    assert report["classes"][0]["synonyms"] == ["impervious surface", "road"]
    assert result.outputs["preview"].exists()


def test_threshold_gives_the_named_background(potsdam, tmp_path):
    clutter = (255, 0, 255)  # a colour nothing has: the background class is never likely
    result = run(potsdam, tmp_path / "bg", 512, 0, [*PROTOTYPES, clutter], threshold=0.99,
                 background="clutter")  # fmt: skip
    with rasterio.open(result.outputs["labels"]) as labels:
        values = labels.read(1)
    assert result.classes[-1]["name"] == "clutter"
    assert (values == 5).mean() > 0.5  # most pixels are not 99 % sure


def test_all_nodata_tiles_cost_nothing(tmp_path):
    scene = write_synthetic_scene(tmp_path / "nd.tif", width=300, height=300, dtype="uint16",
                                  nodata=0, nodata_border=110)  # fmt: skip
    engine = ColourEngine(PROTOTYPES)
    result = api.segment(
        scene,
        CLASSES,
        predictor=OvssPredictor(engine),
        output=tmp_path / "o",
        tiling=Tiling(tile=100, overlap=0),
    )  # fmt: skip
    assert result.tiles == {"total": 9, "skipped_no_data": 8, "resumed": 0}
    assert engine.calls == 1
    with rasterio.open(result.outputs["labels"]) as labels:
        values = labels.read(1)
    assert (values[:110] == 255).all() and (values[110:190, 110:190] != 255).all()


def test_sam_voting_snaps_labels_to_objects(potsdam, rs_samples, tmp_path):
    from PIL import Image

    truth = np.asarray(Image.open(rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"))
    predictor = OvssPredictor(ColourEngine(PROTOTYPES), segmenter=ComponentSegmenter(truth))
    predictor.generation = type(predictor.generation)(grid=24, min_region_area=0)
    result = api.segment(potsdam, CLASSES, predictor=predictor, output=tmp_path / "v")
    with rasterio.open(result.outputs["labels"]) as labels:
        values = labels.read(1)
    # every ground-truth object hit by the grid now carries one label
    from scipy import ndimage

    uniform = 0
    regions, n = ndimage.label(truth == 2)  # buildings
    for i in range(1, n + 1):
        uniform += len(np.unique(values[regions == i])) == 1
    assert uniform >= n - 1
