"""User prompts: pixel and map coordinates to scene pixels, grouping, vector prompt files."""

from __future__ import annotations

import warnings

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely
from rasterio.transform import rowcol
from shapely.geometry import MultiPoint, Point, box

from terramask.errors import InputError
from terramask.scene import (
    GeoreferenceWarning,
    ObjectPrompt,
    SceneWarning,
    open_scene,
    prompts_from_options,
    prompts_from_vector,
)

TO_WGS84 = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)


@pytest.fixture
def scene(make_scene):
    with open_scene(make_scene(width=200, height=100)) as s:
        yield s


def _map(scene, col, row):
    return scene.transform @ (col, row)


def test_pixel_points_and_grouping(scene):
    (obj,) = prompts_from_options(scene, points=[(10.5, 20.25), (50, 60)], negatives=[(70, 80)])
    assert obj.points.tolist() == [[10.5, 20.25], [50, 60], [70, 80]]
    assert obj.labels.tolist() == [1, 1, 0] and obj.box is None
    assert obj.bounds() == (10.5, 20.25, 70, 80)


def test_boxes_are_objects_and_one_box_takes_the_points(scene):
    objs = prompts_from_options(scene, boxes=[(1, 2, 30, 40), (50, 5, 60, 15)])
    assert [o.box.tolist() for o in objs] == [[1, 2, 30, 40], [50, 5, 60, 15]]
    (one,) = prompts_from_options(scene, points=[(10, 10)], negatives=[(20, 20)],
                                  boxes=[(1, 2, 30, 40)])
    assert one.box.tolist() == [1, 2, 30, 40] and one.labels.tolist() == [1, 0]
    three = prompts_from_options(scene, points=[(10, 10)], boxes=[(1, 2, 30, 40), (50, 5, 60, 15)])
    assert len(three) == 3 and three[0].box is None
    assert prompts_from_options(scene) == []


def test_map_points_round_trip_against_rowcol(scene):
    rng = np.random.default_rng(0)
    cols, rows = rng.uniform(0, 200, 20), rng.uniform(0, 100, 20)
    xy = [_map(scene, c, r) for c, r in zip(cols, rows, strict=True)]
    (obj,) = prompts_from_options(scene, points=xy, crs="EPSG:32633")
    np.testing.assert_allclose(obj.points, np.column_stack([cols, rows]), atol=1e-6)
    r, c = rowcol(scene.transform, [p[0] for p in xy], [p[1] for p in xy])
    assert np.array_equal(np.floor(obj.points[:, 0]).astype(int), c)
    assert np.array_equal(np.floor(obj.points[:, 1]).astype(int), r)


def test_lonlat_points_and_boxes_for_a_utm_scene(scene):
    lon, lat = TO_WGS84.transform(*_map(scene, 120.0, 30.0))
    (obj,) = prompts_from_options(scene, points=[(lon, lat)], crs="EPSG:4326")
    np.testing.assert_allclose(obj.points[0], [120, 30], atol=1e-4)
    x1, y1 = TO_WGS84.transform(*_map(scene, 10.0, 90.0))  # bottom-left
    x2, y2 = TO_WGS84.transform(*_map(scene, 50.0, 40.0))  # top-right
    (boxed,) = prompts_from_options(scene, boxes=[(x1, y1, x2, y2)], crs="EPSG:4326")
    np.testing.assert_allclose(boxed.box, [10, 40, 50, 90], atol=0.05)


def test_rotated_scene_uses_the_full_affine(make_scene):
    with open_scene(make_scene(rotation_deg=25)) as scene:
        (obj,) = prompts_from_options(scene, points=[_map(scene, 100, 40)], crs="EPSG:32633")
        np.testing.assert_allclose(obj.points[0], [100, 40], atol=1e-6)
        corners = [_map(scene, c, r) for c, r in ((10, 10), (60, 10), (60, 30), (10, 30))]
        xs, ys = zip(*corners, strict=True)
        (boxed,) = prompts_from_options(
            scene, boxes=[(min(xs), min(ys), max(xs), max(ys))], crs="EPSG:32633"
        )
        # the map-aligned box is bigger in pixels but contains the original pixel rectangle
        x1, y1, x2, y2 = boxed.box
        assert x1 <= 10 and y1 <= 10 and x2 >= 60 and y2 >= 30


def test_outside_the_scene_names_prompt_and_extent(scene):
    with pytest.raises(InputError) as info:
        prompts_from_options(scene, points=[(250, 10)])
    message = str(info.value)
    assert "point (250, 10) in pixel coordinates" in message
    assert "200 × 100 pixels" in message and "EPSG:32633" in message and "\n" not in message
    with pytest.raises(InputError, match=r"EPSG:4326\)"):
        prompts_from_options(scene, points=[(0.0, 0.0)], crs="EPSG:4326")
    with pytest.raises(InputError, match="outside"):
        prompts_from_options(scene, boxes=[(300, 0, 400, 50)])


def test_box_partly_outside_is_clipped(scene):
    (obj,) = prompts_from_options(scene, boxes=[(-10, 50, 30, 150)])
    assert obj.box.tolist() == [0, 50, 30, 100]


def test_bad_option_prompts(scene, make_scene):
    with pytest.raises(InputError, match="empty"):
        prompts_from_options(scene, boxes=[(10, 10, 5, 20)])
    with pytest.raises(InputError, match="Only negative"):
        prompts_from_options(scene, negatives=[(5, 5)])
    with pytest.raises(InputError, match="not understood"):
        prompts_from_options(scene, points=[(5, 5)], crs="EPSG:99999999")
    with pytest.warns(GeoreferenceWarning), open_scene(make_scene(crs=None)) as plain:
        with pytest.raises(InputError, match="no georeferencing"):
            prompts_from_options(plain, points=[(5, 5)], crs="EPSG:32633")
        (obj,) = prompts_from_options(plain, points=[(5, 5)])
        assert obj.points.tolist() == [[5, 5]]


def _write_prompts(path, geometries, crs="EPSG:4326", **fields):
    names = list(fields)
    columns = [np.asarray(v, dtype=object if isinstance(v[0], str) else None)
               for v in fields.values()]
    wkb = np.array([shapely.to_wkb(g) for g in geometries], dtype=object)
    driver = "GPKG" if path.suffix == ".gpkg" else "GeoJSON"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyogrio: "'crs' was not provided"
        pyogrio.raw.write(str(path), wkb, columns, names, driver=driver, crs=crs,
                          geometry_type="Unknown")
    return path


def _lonlat(scene, col, row):
    return TO_WGS84.transform(*_map(scene, col, row))


def test_vector_prompts_points_groups_negatives_polygons(scene, tmp_path):
    geometries = [
        Point(_lonlat(scene, 20, 20)),
        Point(_lonlat(scene, 30, 25)),  # same group, negative
        Point(_lonlat(scene, 150, 50)),  # alone
        MultiPoint([_lonlat(scene, 100, 10), _lonlat(scene, 110, 12)]),
        shapely.Polygon([_lonlat(scene, c, r) for c, r in ((60, 60), (90, 60), (90, 80))]),
    ]
    path = _write_prompts(tmp_path / "p.gpkg", geometries, group=["a", "a", "", "", ""],
                          positive=[1, 0, 1, 1, 1], name=["roof", "", "car", "trees", "pool"])
    objs = prompts_from_vector(scene, path)
    assert [o.name for o in objs] == ["roof", "car", "trees", "pool"]
    np.testing.assert_allclose(objs[0].points, [[20, 20], [30, 25]], atol=1e-4)
    assert objs[0].labels.tolist() == [1, 0]
    assert len(objs[2].points) == 2 and objs[2].labels.tolist() == [1, 1]
    np.testing.assert_allclose(objs[3].box, [60, 60, 90, 80], atol=1e-3)  # triangle bbox
    assert len(objs[3].points) == 0


def test_vector_group_joins_points_to_a_polygon(scene, tmp_path):
    geometries = [
        box(*_lonlat(scene, 10, 90), *_lonlat(scene, 50, 40)),
        Point(_lonlat(scene, 30, 60)),
        Point(_lonlat(scene, 45, 45)),
    ]
    path = _write_prompts(tmp_path / "g.geojson", geometries, group=[7, 7, 7],
                          positive=["true", "true", "false"])
    (obj,) = prompts_from_vector(scene, path)
    np.testing.assert_allclose(obj.box, [10, 40, 50, 90], atol=0.05)
    assert obj.labels.tolist() == [1, 0]


def test_vector_prompts_as_geojson_in_the_scene_crs(scene, tmp_path):
    path = _write_prompts(tmp_path / "u.geojson", [box(*_map(scene, 10, 90), *_map(scene, 50, 40))],
                          crs="EPSG:32633", note=["x"])
    (obj,) = prompts_from_vector(scene, path)
    np.testing.assert_allclose(obj.box, [10, 40, 50, 90], atol=1e-6)
    assert obj.name == "object"


def test_vector_file_without_crs_is_taken_in_scene_crs(scene, tmp_path):
    path = _write_prompts(tmp_path / "n.gpkg", [Point(_map(scene, 5, 6))], crs=None, note=["x"])
    with pytest.warns(GeoreferenceWarning, match="no CRS"):
        (obj,) = prompts_from_vector(scene, path)
    np.testing.assert_allclose(obj.points, [[5, 6]], atol=1e-6)


def test_bad_vector_prompt_files(scene, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        prompts_from_vector(scene, tmp_path / "none.gpkg")
    junk = tmp_path / "junk.gpkg"
    junk.write_text("nope")
    with pytest.raises(InputError, match="cannot be read"):
        prompts_from_vector(scene, junk)
    line = _write_prompts(tmp_path / "l.gpkg",
                          [shapely.LineString([_lonlat(scene, 1, 1), _lonlat(scene, 5, 5)])],
                          note=["x"])
    with pytest.raises(InputError, match="LineString"):
        prompts_from_vector(scene, line)
    far = _write_prompts(tmp_path / "far.gpkg", [Point(0.0, 0.0)], note=["x"])
    with pytest.raises(InputError, match=r"point \(0, 0\) in EPSG:4326 \(feature 1 of far\.gpkg\)"):
        prompts_from_vector(scene, far)
    neg = _write_prompts(tmp_path / "neg.gpkg", [Point(_lonlat(scene, 5, 5))], positive=[0])
    with pytest.raises(InputError, match="only negative"):
        prompts_from_vector(scene, neg)
    empty = tmp_path / "empty.gpkg"
    pyogrio.raw.write(str(empty), np.array([], dtype=object), [np.array([], dtype=object)],
                      ["note"], driver="GPKG", crs="EPSG:4326", geometry_type="Point")
    with pytest.raises(InputError, match="no features"):
        prompts_from_vector(scene, empty)


def test_object_prompt_validates_shapes():
    prompt = ObjectPrompt(box=[1, 2, 3, 4])
    assert prompt.points.shape == (0, 2) and prompt.bounds() == (1, 2, 3, 4)
    with pytest.raises(ValueError):
        ObjectPrompt(points=[[1, 2]], labels=[1, 0])


# ---------------------------------------------------------------------- the antimeridian


@pytest.mark.parametrize("west", [179.9, -180.1])  # the same place, numbered either way
def test_lonlat_clicks_on_either_side_of_the_antimeridian(make_scene, west):
    """A scene in EPSG:4326 across 180°: -179.9999 and 180.0001 are the same place, and both
    land in it however its grid numbers longitudes; so do boxes and a file's points."""
    from affine import Affine

    transform = Affine(0.001, 0.0, west, 0.0, -0.001, -16.0)  # 200 px = 0.2° wide
    with open_scene(make_scene(width=200, height=100, crs="EPSG:4326",
                               transform=transform)) as scene:  # fmt: skip
        for lon in (-179.9999, 180.0001, 180.0001 - 360, -179.9999 + 360):
            (obj,) = prompts_from_options(scene, points=[(lon, -16.05)], crs="EPSG:4326")
            np.testing.assert_allclose(obj.points, [[100.1, 50]], atol=1e-6)
        for x1, x2 in ((179.95, 180.05), (-180.05, -179.95)):
            (boxed,) = prompts_from_options(scene, boxes=[(x1, -16.08, x2, -16.02)],
                                            crs="EPSG:4326")  # fmt: skip
            np.testing.assert_allclose(boxed.box, [50, 20, 150, 80], atol=1e-6)
        # from UTM zone 1 (east of 180°): PROJ answers -179.9999 whichever way the grid runs
        utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32701", always_xy=True)
        (obj,) = prompts_from_options(scene, points=[utm.transform(180.0001, -16.05)],
                                      crs="EPSG:32701")  # fmt: skip
        np.testing.assert_allclose(obj.points, [[100.1, 50]], atol=1e-6)
        with pytest.raises(InputError, match="antimeridian"):
            prompts_from_options(scene, boxes=[(179.95, -16.08, -179.95, -16.02)],
                                 crs="EPSG:4326")  # fmt: skip
        with pytest.raises(InputError, match="outside the scene"):
            prompts_from_options(scene, points=[(179.5, -16.05)], crs="EPSG:4326")


def test_lonlat_file_points_across_the_antimeridian(make_scene, tmp_path):
    from affine import Affine

    transform = Affine(0.001, 0.0, 179.9, 0.0, -0.001, -16.0)
    path = _write_prompts(tmp_path / "am.geojson",
                          [Point(-179.9999, -16.05), Point(180.0001, -16.06)], group=[1, 1])
    with open_scene(make_scene(width=200, height=100, crs="EPSG:4326",
                               transform=transform)) as scene:  # fmt: skip
        (obj,) = prompts_from_vector(scene, path)
    np.testing.assert_allclose(obj.points, [[100.1, 50], [100.1, 60]], atol=1e-6)


def test_lonlat_clicks_on_a_utm_scene_across_the_antimeridian(make_scene):
    """UTM zone 60 reaches past 180°: PROJ takes either longitude to the same place."""
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True)
    x, y = to_utm.transform(180.0, -17.0)
    from terramask.testing.scenes import default_transform

    transform = default_transform(10.0, (x - 1000.0, y + 500.0))  # 200 × 100 px of 10 m
    with open_scene(make_scene(width=200, height=100, crs="EPSG:32760",
                               transform=transform)) as scene:  # fmt: skip
        got = [prompts_from_options(scene, points=[(lon, -17.0)], crs="EPSG:4326")[0].points
               for lon in (-179.9999, 180.0001)]  # fmt: skip
    np.testing.assert_allclose(got[0], got[1], atol=1e-6)
    # 180.0001° is 10.6 m east of 180° at 17° S: a pixel east of the centre, on its row
    assert got[0][0, 0] == pytest.approx(101.07, abs=0.05)
    assert got[0][0, 1] == pytest.approx(50, abs=0.5)


# ---------------------------------------------------------------------- clicks on nodata


@pytest.fixture(params=["nodata", "alpha"])
def bordered(request, make_scene):
    """A 120 × 80 scene whose 10-px border holds no data (a nodata value, or alpha 0)."""
    kwargs = {"alpha": True} if request.param == "alpha" else {}
    with open_scene(make_scene(width=120, height=80, nodata_border=10, **kwargs)) as scene:
        yield scene


def test_a_positive_click_on_nodata_is_refused(bordered):
    with pytest.raises(InputError, match=r"point \(5, 5\) in pixel coordinates.*no data"):
        prompts_from_options(bordered, points=[(60, 40), (5, 5)])
    with pytest.raises(InputError, match="column 119, row 79"):  # the far edge: the last pixel
        prompts_from_options(bordered, points=[(120, 80)])
    # on data, and negatives anywhere, are fine
    (obj,) = prompts_from_options(bordered, points=[(60, 40)], negatives=[(5, 5)])
    assert obj.labels.tolist() == [1, 0]
    (boxed,) = prompts_from_options(bordered, boxes=[(0, 0, 60, 40)])
    assert boxed.box.tolist() == [0, 0, 60, 40]


def test_a_positive_click_on_nodata_is_dropped_with_a_warning(bordered):
    with pytest.warns(SceneWarning, match=r"Left out: the point \(5, 5\)"):
        (obj,) = prompts_from_options(bordered, points=[(60, 40), (5, 5)], outside="drop")
    assert obj.points.tolist() == [[60, 40]]
    with pytest.warns(SceneWarning):
        assert prompts_from_options(bordered, points=[(5, 5)], outside="drop") == []
    with pytest.warns(SceneWarning):  # the box stays, its click on nodata goes
        (boxed,) = prompts_from_options(bordered, points=[(5, 5)], boxes=[(0, 0, 60, 40)],
                                        outside="drop")  # fmt: skip
    assert len(boxed.points) == 0 and boxed.box.tolist() == [0, 0, 60, 40]


def test_a_file_point_on_nodata_is_refused_or_dropped(bordered, tmp_path):
    path = _write_prompts(tmp_path / "nd.gpkg", [Point(_map(bordered, 5, 5)),
                                                 Point(_map(bordered, 60, 40))],
                          crs="EPSG:32633", name=["edge", "middle"])  # fmt: skip
    with pytest.raises(InputError, match=r"feature 1 of nd\.gpkg.*no data"):
        prompts_from_vector(bordered, path)
    with pytest.warns(SceneWarning, match="feature 1 of nd.gpkg"):
        objs = prompts_from_vector(bordered, path, outside="drop")
    assert [o.name for o in objs] == ["middle"]


# ---------------------------------------------------------------------- list-valued fields


@pytest.mark.parametrize(("field", "value"), [
    ("group", [1, 2]),
    ("positive", [1]),
    ("name", ["a", "b"]),
])  # fmt: skip
def test_a_list_valued_field_is_refused_naming_field_and_feature(scene, tmp_path, field, value):
    import json

    lon, lat = _lonlat(scene, 50, 50)
    features = [
        {"type": "Feature", "properties": {field: 3 if field != "name" else "x"},
         "geometry": {"type": "Point", "coordinates": [lon, lat]}},
        {"type": "Feature", "properties": {field: value},
         "geometry": {"type": "Point", "coordinates": [lon, lat]}},
    ]  # fmt: skip
    path = tmp_path / "lists.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(InputError) as info:
        prompts_from_vector(scene, path)
    message = str(info.value)
    assert f"field '{field}' of feature 2 of lists.geojson holds a list" in message
    assert repr(value) in message
