"""`prompt` end to end: outputs on exactly the scene's grid, exact geometry with a segmenter
double, tiles invisible in the result, and bad input stopped before anything is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer

from terramask import api
from terramask.errors import InputError, OutputError
from terramask.options import ModelOptions, Tiling
from terramask.testing.scenes import write_synthetic_scene
from tests.helpers.doubles import ShapeSegmenter

PIXEL = 0.5  # metres, the synthetic scenes' default


@pytest.fixture
def scene(tmp_path):
    return write_synthetic_scene(tmp_path / "scene.tif", width=300, height=220, nodata_border=0)


def vector_fields(path):
    """A vector file's CRS, geometries (WKB) and fields, through pyogrio alone."""
    meta, _, geometry, values = pyogrio.raw.read(path)
    return {
        "crs": meta["crs"],
        "geometry": geometry,
        **dict(zip(meta["fields"], values, strict=True)),
    }


def read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src


def test_outputs_share_the_scene_grid_and_objects_are_where_the_clicks_are(scene, tmp_path):
    with rasterio.open(scene) as src:
        grid = (src.crs, src.transform, src.width, src.height)
        x, y = src.transform @ (100.5, 60.5)
    seg = ShapeSegmenter(radius=8)
    result = api.prompt(
        scene,
        points=[(x, y)],
        crs=grid[0].to_string(),
        boxes=[],
        output=tmp_path / "out",
        models=ModelOptions(segmenter=seg),
    )
    assert set(result.outputs) == {"mask", "score", "gpkg", "geojson", "preview", "report"}
    with rasterio.open(result.outputs["mask"]) as mask:
        assert (mask.crs, mask.transform, mask.width, mask.height) == grid
        assert mask.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert mask.colormap(1)[1][3] == 255
        ids = mask.read(1)
    yy, xx = np.mgrid[0:220, 0:300] + 0.5
    disc = (xx - 100.5) ** 2 + (yy - 60.5) ** 2 <= 64
    np.testing.assert_array_equal(ids == 1, disc)
    with rasterio.open(result.outputs["score"]) as score:
        assert score.dtypes[0] == "float32"
        prob = score.read(1)
    assert prob[60, 100] > 0.99 and prob[0, 0] == 0

    gpkg = vector_fields(result.outputs["gpkg"])
    assert rasterio.crs.CRS.from_user_input(gpkg["crs"]) == grid[0]
    assert list(gpkg["label"]) == ["object"]
    area = gpkg["area_m2"][0]
    assert area == pytest.approx(disc.sum() * PIXEL * PIXEL)
    geojson = vector_fields(result.outputs["geojson"])
    assert "4326" in geojson["crs"]
    lon, lat = Transformer.from_crs(grid[0], "EPSG:4326", always_xy=True).transform(x, y)
    centroid = shapely.from_wkb(geojson["geometry"][0]).centroid
    assert centroid.x == pytest.approx(lon, abs=1e-6) and centroid.y == pytest.approx(lat, abs=1e-6)

    report = json.loads(result.outputs["report"].read_text())
    assert report["objects"][0]["prompt_px"]["points"] == [[100.5, 60.5]]
    assert report["objects"][0]["area_m2"] == pytest.approx(area)
    assert report["segmenter"] == "shape-double"


def test_tiles_do_not_show_in_the_result(tmp_path):
    scene = write_synthetic_scene(tmp_path / "big.tif", width=700, height=530)
    rng = np.random.default_rng(1)
    clicks = [(float(x), float(y)) for x, y in rng.uniform(15, 515, size=(12, 2))]
    boxes = [(30.0, 40.0, 90.0, 80.0), (600.0, 450.0, 690.0, 520.0)]

    def run(tile, overlap, name):
        results = []
        for i, point in enumerate(clicks):
            out = tmp_path / f"{name}{i}"
            results.append(
                api.prompt(
                    scene,
                    points=[point],
                    output=out,
                    models=ModelOptions(segmenter=ShapeSegmenter()),
                    tiling=Tiling(tile=tile, overlap=overlap),
                )
            )
        boxed = api.prompt(
            scene,
            boxes=boxes,
            output=tmp_path / f"{name}-boxes",
            models=ModelOptions(segmenter=ShapeSegmenter()),
            tiling=Tiling(tile=tile, overlap=overlap),
        )
        return [read(r.outputs["mask"])[0] for r in [*results, boxed]]

    whole = run(1024, 0, "whole")
    tiled = run(128, 48, "tiled")
    for a, b in zip(whole, tiled, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_prompt_larger_than_a_tile_is_segmented_decimated_and_resampled(scene, tmp_path):
    result = api.prompt(
        scene,
        boxes=[(10, 20, 290, 200)],
        output=tmp_path / "out",
        models=ModelOptions(segmenter=ShapeSegmenter()),
        tiling=Tiling(tile=128, overlap=32),
    )
    ids = read(result.outputs["mask"])[0]
    expected = np.zeros_like(ids, dtype=bool)
    expected[20:200, 10:290] = True
    # resampled from a window decimated ~2.7x: edges may move by up to one decimated pixel
    mismatch = (ids == 1) != expected
    assert mismatch.sum() < 0.03 * expected.sum()
    assert (ids[30:190, 20:280] == 1).all()


def test_nodata_never_becomes_an_object(tmp_path):
    scene = write_synthetic_scene(
        tmp_path / "nd.tif", width=200, height=200, dtype="uint16", nodata=0, nodata_border=20
    )
    result = api.prompt(
        scene,
        boxes=[(0, 0, 120, 120)],
        output=tmp_path / "out",
        models=ModelOptions(segmenter=ShapeSegmenter()),
    )
    ids, profile, _ = read(result.outputs["mask"])
    assert profile["nodata"] == 255
    assert (ids[:20] == 255).all() and (ids[:, :20] == 255).all()
    assert (ids[20:120, 20:120] == 1).all()
    prob = read(result.outputs["score"])[0]
    assert np.isnan(prob[:20]).all()


def test_scene_without_georeferencing_works_in_pixels(tmp_path):
    scene = write_synthetic_scene(tmp_path / "plain.tif", width=120, height=90, crs=None)
    with pytest.warns(UserWarning):
        result = api.prompt(
            scene,
            points=[(60, 40)],
            output=tmp_path / "out",
            models=ModelOptions(segmenter=ShapeSegmenter()),
        )
    assert "geojson" not in result.outputs
    assert result.objects[0]["area_m2"] is None
    with rasterio.open(result.outputs["mask"]) as mask:
        assert mask.crs is None and (mask.width, mask.height) == (120, 90)


def test_prompts_from_a_vector_file_in_another_crs(scene, tmp_path):

    with rasterio.open(scene) as src:
        to_lonlat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        lon, lat = to_lonlat.transform(*(src.transform @ (150.5, 110.5)))
    path = tmp_path / "prompts.geojson"
    pyogrio.raw.write(
        path,
        geometry=np.array([shapely.to_wkb(shapely.Point(lon, lat))], dtype=object),
        field_data=[np.array(["well"])],
        fields=["name"],
        crs="EPSG:4326",
        geometry_type="Point",
        driver="GeoJSON",
    )
    result = api.prompt(
        scene,
        prompt_file=path,
        output=tmp_path / "out",
        models=ModelOptions(segmenter=ShapeSegmenter(radius=5)),
    )
    ids = read(result.outputs["mask"])[0]
    assert ids[110, 150] == 1 and result.objects[0]["name"] == "well"
    rows, cols = np.nonzero(ids == 1)
    assert abs(rows.mean() - 110) < 0.6 and abs(cols.mean() - 150) < 0.6


def test_existing_outputs_are_kept_and_the_run_refused(scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene_mask.tif").write_bytes(b"precious")
    seg = ShapeSegmenter()
    with pytest.raises(OutputError, match="overwrite"):
        api.prompt(scene, points=[(50, 50)], output=out, models=ModelOptions(segmenter=seg))
    assert (out / "scene_mask.tif").read_bytes() == b"precious"
    assert seg.embed_calls == 0  # refused before any work
    api.prompt(
        scene,
        points=[(50, 50)],
        output=out,
        overwrite=True,
        models=ModelOptions(segmenter=seg),
    )
    assert read(out / "scene_mask.tif")[0][50, 50] == 1


def test_prompts_outside_the_scene_are_refused_with_the_extent(scene, tmp_path):
    with pytest.raises(InputError) as err:
        api.prompt(
            scene,
            points=[(5000, 10)],
            output=tmp_path / "o",
            models=ModelOptions(segmenter=ShapeSegmenter()),
        )
    assert "300" in str(err.value) and "220" in str(err.value)
    assert not (tmp_path / "o" / "scene_mask.tif").exists()


def test_no_prompt_is_an_input_error(scene, tmp_path):
    with pytest.raises(InputError, match="No prompt"):
        api.prompt(scene, output=tmp_path / "o", models=ModelOptions(segmenter=ShapeSegmenter()))


def test_rotated_scene_keeps_its_transform(tmp_path):
    scene = write_synthetic_scene(tmp_path / "rot.tif", width=160, height=120, rotation_deg=20)
    result = api.prompt(
        scene,
        points=[(80, 60)],
        output=tmp_path / "out",
        models=ModelOptions(segmenter=ShapeSegmenter()),
    )
    with rasterio.open(scene) as src, rasterio.open(result.outputs["mask"]) as mask:
        assert mask.transform == src.transform
        assert not math.isclose(src.transform.b, 0.0)


def test_real_sample_as_geotiff(rs_samples, tmp_path):
    from terramask.testing.scenes import write_geotiff_from_image

    scene = write_geotiff_from_image(
        rs_samples / "potsdam" / "img_dir" / "2_10_0_0_512_512.png", tmp_path / "potsdam.tif"
    )
    result = api.prompt(
        scene,
        points=[(256, 256)],
        output=tmp_path / "out",
        models=ModelOptions(segmenter=ShapeSegmenter(radius=20)),
        tiling=Tiling(tile=256, overlap=64),
    )
    with rasterio.open(scene) as src, rasterio.open(result.outputs["mask"]) as mask:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
        assert mask.read(1)[256, 256] == 1
