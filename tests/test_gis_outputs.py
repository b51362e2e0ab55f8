"""Outputs a GIS user can read: label and object rasters name their values (category names and
an attribute table GDAL reads), QGIS styles load with the layers, previews carry a legend and
the prompts, boxes in reports go back into `prompt`, and overlapping objects follow one rule."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from PIL import Image

from terramask import api
from terramask.errors import OutputExistsError
from terramask.methods.geoseg import DualRoute
from terramask.methods.ovss import OvssPredictor
from terramask.options import ModelOptions, Tiling
from terramask.pipeline.ask_run import run_ask
from terramask.pipeline.engines import AskModels
from terramask.protocols import MLLMReply
from terramask.scene import OutputSet, open_scene
from terramask.scene.writers import MARK_STYLES
from terramask.testing.scenes import write_synthetic_scene
from tests.helpers.doubles import ColourEngine, ShapeSegmenter
from tests.helpers.gdalinfo import gdalinfo

PROTOTYPES = [(220, 220, 220), (40, 40, 40), (90, 120, 70)]
CLASSES = ["bright & shiny", "dark,shadow", "field"]
NAMES = ["bright & shiny", "dark", "field"]


@pytest.fixture
def scene(tmp_path):
    return write_synthetic_scene(tmp_path / "in" / "scene.tif", width=160, height=120)


def segment(scene, out, **kw):
    return api.segment(scene, CLASSES, predictor=OvssPredictor(ColourEngine(PROTOTYPES)),
                       output=out, tiling=Tiling(tile=128, overlap=32), **kw)  # fmt: skip


def prompt(scene, out, segmenter=None, **kw):
    return api.prompt(scene, models=ModelOptions(segmenter=segmenter or ShapeSegmenter(radius=8)),
                      output=out, **kw)  # fmt: skip


def digests(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    }


def colour_table(path):
    with rasterio.open(path) as src:
        return src.colormap(1)


def qml(path):
    root = ET.parse(path).getroot()  # well-formed, or this raises
    assert root.tag == "qgis"
    return root


def palette(path):
    """{value: (#rrggbb, alpha, label)} of a paletted raster style."""
    [renderer] = qml(path).iter("rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    return {
        int(e.get("value")): (e.get("color"), int(e.get("alpha")), e.get("label"))
        for e in renderer.iter("paletteEntry")
    }


def categorised(path):
    """(field, {category value: (label, fill rgb, outline rgb)}) of a categorised style."""
    [renderer] = qml(path).iter("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol"
    symbols = {s.get("name"): s for s in renderer.iter("symbol")}
    out = {}
    for category in renderer.iter("category"):
        layer = symbols[category.get("symbol")].find("layer")
        assert layer.get("class") == "SimpleFill"
        options = {o.get("name"): o.get("value") for o in layer.find("Option").iter("Option")}
        props = {p.get("k"): p.get("v") for p in layer.iter("prop")}
        assert {k: v for k, v in options.items() if k} == props  # both ways of writing agree
        fill = tuple(int(v) for v in options["color"].split(","))
        outline = tuple(int(v) for v in options["outline_color"].split(","))
        out[category.get("value")] = (category.get("label"), fill[:3], outline[:3])
    return renderer.get("attr"), out


def hex_colour(rgb):
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


# ------------------------------------------------------------ names beside the colour table


def test_segment_labels_carry_class_names_that_gdal_reads(scene, tmp_path):
    result = segment(scene, tmp_path / "out")
    labels = result.outputs["labels"]
    assert result.sidecars["labels_aux"] == tmp_path / "out" / "scene_labels.tif.aux.xml"
    info = gdalinfo(labels)
    assert str(result.sidecars["labels_aux"]) in info["files"]
    [band] = info["bands"]
    assert band["categories"] == ["no class", *NAMES]  # value i is named by the i-th name
    columns = [f["name"] for f in info["rat"]["fieldDefn"]]
    assert columns == ["Value", "Name", "Red", "Green", "Blue", "Alpha"]
    assert info["rat"]["tableType"] == "thematic"
    rows = [dict(zip(columns, r["f"], strict=True)) for r in info["rat"]["row"]]
    table = colour_table(labels)
    assert [r["Value"] for r in rows] == [0, 1, 2, 3]
    assert [r["Name"] for r in rows] == ["no class", *NAMES]
    for r in rows[1:]:
        assert (r["Red"], r["Green"], r["Blue"], r["Alpha"]) == table[r["Value"]]
    # the TIFF's own tags are still there beside the sidecar's names
    assert json.loads(info["metadata"][""]["TERRAMASK_CLASSES"]) == NAMES
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"


def test_segment_writes_qgis_styles_for_the_labels_and_the_polygons(scene, tmp_path):
    result = segment(scene, tmp_path / "out")
    table = colour_table(result.outputs["labels"])
    style = result.sidecars["labels_style"]
    # QGIS loads <basename>.qml beside a file-based layer as its default style
    assert style.stem == result.outputs["labels"].stem and style.suffix == ".qml"
    assert palette(style) == {
        k + 1: (hex_colour(table[k + 1]), 255, name) for k, name in enumerate(NAMES)
    }  # value 0 (no class) and nodata are not in the palette: transparent
    vectors = result.sidecars["vector_style"]
    assert vectors.stem == result.outputs["gpkg"].stem == result.outputs["geojson"].stem
    field, categories = categorised(vectors)
    assert field == "label"
    assert categories == {
        name: (name, table[k + 1][:3], table[k + 1][:3]) for k, name in enumerate(NAMES)
    }
    meta, _, _, values = pyogrio.raw.read(result.outputs["gpkg"])
    found = set(dict(zip(meta["fields"], values, strict=True))["label"])
    assert found and found <= set(categories)  # every polygon falls in a category
    report = json.loads(result.outputs["report"].read_text())
    assert report["sidecars"] == {
        "labels_aux": "scene_labels.tif.aux.xml", "labels_style": "scene_labels.qml",
        "vector_style": "scene.qml",
    }  # fmt: skip


def test_object_masks_name_their_objects(scene, tmp_path):
    result = prompt(scene, tmp_path / "out", boxes=[(10, 10, 40, 40), (60, 30, 100, 70)])
    mask = result.outputs["mask"]
    info = gdalinfo(mask)
    # two objects of one name: each gets its id, as in the legend and the style
    assert info["bands"][0]["categories"] == ["no object", "object 1", "object 2"]
    columns = [f["name"] for f in info["rat"]["fieldDefn"]]
    rows = [dict(zip(columns, r["f"], strict=True)) for r in info["rat"]["row"]]
    table = colour_table(mask)
    assert [(r["Value"], r["Name"]) for r in rows] == [
        (0, "no object"), (1, "object 1"), (2, "object 2")
    ]  # fmt: skip
    for r in rows[1:]:
        assert (r["Red"], r["Green"], r["Blue"], r["Alpha"]) == table[r["Value"]]
    assert palette(result.sidecars["mask_style"]) == {
        i: (hex_colour(table[i]), 255, f"object {i}") for i in (1, 2)
    }
    field, categories = categorised(result.sidecars["vector_style"])
    assert field == "object_id"  # names may repeat; ids are what the mask's colours follow
    assert categories == {str(i): (f"object {i}", table[i][:3], table[i][:3]) for i in (1, 2)}
    assert set(result.sidecars) == {"mask_aux", "mask_style", "vector_style"}
    report = json.loads(result.outputs["report"].read_text())
    assert set(report["sidecars"]) == {"mask_aux", "mask_style", "vector_style"}


def test_names_and_styles_survive_awkward_class_names(scene, tmp_path):
    classes = ['roof <"flat">', "road & street,lane", "wald/forêt"]
    result = api.segment(scene, classes, predictor=OvssPredictor(ColourEngine(PROTOTYPES)),
                         output=tmp_path / "out", tiling=Tiling(tile=128, overlap=32))  # fmt: skip
    names = ['roof <"flat">', "road & street", "wald/forêt"]
    assert gdalinfo(result.outputs["labels"])["bands"][0]["categories"] == ["no class", *names]
    assert [e[2] for e in palette(result.sidecars["labels_style"]).values()] == names
    assert list(categorised(result.sidecars["vector_style"])[1]) == names


def test_sidecars_are_part_of_the_output_set(scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene.qml").write_text("my own style")
    with pytest.raises(OutputExistsError, match=r"scene\.qml"):
        segment(scene, out)
    assert (out / "scene.qml").read_text() == "my own style"
    assert sorted(p.name for p in out.iterdir()) == ["scene.qml"]  # nothing else written
    segment(scene, out, overwrite=True)
    assert (out / "scene.qml").read_text() != "my own style"
    assert (out / "scene_labels.tif.aux.xml").exists() and (out / "scene_labels.qml").exists()
    # an object run over the same folder replaces the set, leaving no stale label sidecars
    prompt(scene, out, points=[(60, 40)], overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "scene.geojson", "scene.gpkg", "scene.json", "scene.qml", "scene_mask.qml",
        "scene_mask.tif", "scene_mask.tif.aux.xml", "scene_preview.png", "scene_score.tif",
    ]  # fmt: skip


def test_reruns_are_byte_identical_sidecars_and_previews_included(scene, tmp_path):
    for name in ("a", "b"):
        segment(scene, tmp_path / "s" / name)
        prompt(scene, tmp_path / "p" / name, points=[(60, 40)], negatives=[(66, 44)],
               boxes=[(20, 20, 70, 60)])  # fmt: skip
    assert digests(tmp_path / "s" / "a") == digests(tmp_path / "s" / "b")
    objects = [digests(tmp_path / "p" / name) for name in ("a", "b")]
    for files in objects:
        del files["scene.json"]  # prompt's report holds timings and absolute paths
    assert objects[0] == objects[1]
    assert "scene_labels.tif.aux.xml" in digests(tmp_path / "s" / "a")


# ------------------------------------------------------------------------------- previews


def preview_parts(path, scene_path):
    """The preview split into the map (the overview's size) and the legend panel."""
    image = np.asarray(Image.open(path).convert("RGB"))
    with open_scene(scene_path) as opened:
        rows, cols = opened.overview(2048).shape
    return image[:rows, :cols], image[:, cols:]


def has_colour(image, rgb):
    return bool((image.reshape(-1, 3) == np.array(rgb[:3])).all(axis=1).any())


def test_segment_preview_has_a_legend_of_the_classes(scene, tmp_path):
    result = segment(scene, tmp_path / "out")
    table = colour_table(result.outputs["labels"])
    image = np.asarray(Image.open(result.outputs["preview"]).convert("RGB"))
    assert image.shape[1] > 160  # the map, and a legend panel to its right
    _, legend = preview_parts(result.outputs["preview"], scene)
    for value in (1, 2, 3):
        assert has_colour(legend, table[value])  # each class's swatch
    assert (legend > 0).any() and (legend < 255).any()  # and text


def test_prompt_preview_draws_clicks_and_boxes(scene, tmp_path):
    result = prompt(scene, tmp_path / "out", points=[(40.5, 30.5)], negatives=[(120.5, 90.5)])
    boxed_run = prompt(scene, tmp_path / "box", boxes=[(60, 20, 140, 100)])
    clicks, legend = preview_parts(result.outputs["preview"], scene)
    assert tuple(clicks[30, 40]) == MARK_STYLES["positive"][1]
    assert tuple(clicks[90, 120]) == MARK_STYLES["negative"][1]
    assert has_colour(legend, MARK_STYLES["positive"][1])
    assert has_colour(legend, MARK_STYLES["negative"][1])
    assert not has_colour(legend, MARK_STYLES["box"][1])  # only what was drawn is explained
    boxed, legend = preview_parts(boxed_run.outputs["preview"], scene)
    yellow = MARK_STYLES["box"][1]
    for row, col in ((20, 100), (99, 100), (60, 60), (60, 139)):  # the four sides
        assert tuple(boxed[row, col]) == yellow
    assert tuple(boxed[60, 100]) != yellow
    assert has_colour(legend, yellow)
    table = colour_table(boxed_run.outputs["mask"])
    assert has_colour(legend, table[1])  # the object's swatch


class ScriptedMLLM:
    """Answers every question with one reply, in pixels of the image it was shown."""

    name = "scripted"

    def __init__(self, text):
        self.text = text

    def ask(self, image, prompt, system=None):
        return MLLMReply(self.text, image.shape[:2], "pixels", self.name)


def ask(scene, out, reply, engine, **kw):
    models = ModelOptions(segmenter=ShapeSegmenter(radius=8))
    return api.ask(scene, "the building", engine=engine, mllm=ScriptedMLLM(reply),
                   models=models, output=out, **kw)  # fmt: skip


def test_ask_preview_draws_the_mllm_box_and_the_refined_box(scene, tmp_path):
    reply = '{"bbox": [50, 40, 110, 90], "prompt": "building"}'
    segmenter = ShapeSegmenter(radius=8)
    with open_scene(scene) as opened:
        outputs = OutputSet(tmp_path / "out", "scene")
        outputs.check(["mask"])
        result = run_ask(opened, "the building", ScriptedMLLM(reply),
                         AskModels(segmenter, DualRoute(segmenter)), outputs)  # fmt: skip
    [box] = result.details["boxes"]
    assert box["mllm_px"] == [50, 40, 110, 90] and box["refined_px"] == [38, 30, 116, 95]
    drawn, legend = preview_parts(result.outputs["preview"], scene)
    orange, cyan = MARK_STYLES["mllm_box"][1], MARK_STYLES["refined_box"][1]
    assert tuple(drawn[40, 80]) == orange and tuple(drawn[89, 80]) == orange
    assert tuple(drawn[30, 80]) == cyan and tuple(drawn[94, 80]) == cyan
    assert tuple(drawn[60, 38]) == cyan and tuple(drawn[60, 115]) == cyan
    assert has_colour(legend, orange) and has_colour(legend, cyan)
    assert set(result.sidecars) == {"mask_aux", "mask_style", "vector_style"}
    assert gdalinfo(result.outputs["mask"])["bands"][0]["categories"] == [
        "no object", "building"
    ]  # fmt: skip


def test_ask_preview_draws_the_clicks(scene, tmp_path):
    reply = '{"points": [[40.5, 30.5], [100.5, 80.5]], "labels": [1, 0]}'
    result = ask(scene, tmp_path / "out", reply, "clicks")
    drawn, legend = preview_parts(result.outputs["preview"], scene)
    assert tuple(drawn[30, 40]) == MARK_STYLES["positive"][1]
    assert tuple(drawn[80, 100]) == MARK_STYLES["negative"][1]
    assert not has_colour(legend, MARK_STYLES["mllm_box"][1])


# -------------------------------------------------------------------- boxes in map units


def test_prompt_reports_map_boxes_that_prompt_takes_back(scene, tmp_path):
    with rasterio.open(scene) as src:
        crs, transform = src.crs.to_string(), src.transform
    box = (30.5, 20.25, 90.0, 70.75)
    first = prompt(scene, tmp_path / "a", boxes=[box]).objects[0]
    x0, y0 = transform @ (30.5, 20.25)  # the top-left corner: min x, *max* y on north-up
    x1, y1 = transform @ (90.0, 70.75)
    assert first["prompt_map"]["box"] == pytest.approx([x0, y1, x1, y0], abs=1e-3)
    minx, miny, maxx, maxy = first["prompt_map"]["box"]
    assert minx < maxx and miny < maxy
    again = prompt(scene, tmp_path / "b", boxes=[first["prompt_map"]["box"]], crs=crs).objects[0]
    assert again["prompt_px"]["box"] == pytest.approx(list(box), abs=1e-3)
    # the object's own box too
    bx0, by0, bx1, by1 = first["bbox_px"]
    (left, top), (right, bottom) = transform @ (bx0, by0), transform @ (bx1, by1)
    assert first["bbox_map"] == pytest.approx([left, bottom, right, top], abs=1e-3)
    back = prompt(scene, tmp_path / "c", boxes=[first["bbox_map"]], crs=crs).objects[0]
    assert back["prompt_px"]["box"] == pytest.approx(first["bbox_px"], abs=1e-3)


def test_map_boxes_on_a_rotated_grid_are_envelopes_of_the_corners(tmp_path):
    scene = write_synthetic_scene(tmp_path / "rot.tif", width=160, height=120, rotation_deg=25)
    with rasterio.open(scene) as src:
        crs, transform = src.crs.to_string(), src.transform
    box = (40, 30, 100, 80)
    obj = prompt(scene, tmp_path / "a", boxes=[box]).objects[0]
    corners = np.array([transform @ c for c in ((40, 30), (100, 30), (100, 80), (40, 80))])
    envelope = [*corners.min(axis=0), *corners.max(axis=0)]
    assert obj["prompt_map"]["box"] == pytest.approx(envelope, abs=1e-3)
    # taken back, the envelope covers at least the box (the envelope of its envelope)
    back = prompt(scene, tmp_path / "b", boxes=[obj["prompt_map"]["box"]], crs=crs,
                  outside="drop").objects[0]  # fmt: skip
    bx0, by0, bx1, by1 = back["prompt_px"]["box"]
    assert bx0 <= 40 + 1e-3 and by0 <= 30 + 1e-3 and bx1 >= 100 - 1e-3 and by1 >= 80 - 1e-3


def test_map_coordinates_keep_sub_pixel_precision_in_degrees(tmp_path):
    from affine import Affine

    transform = Affine(1e-5, 0, 12.5, 0, -1e-5, 41.9)
    scene = write_synthetic_scene(tmp_path / "deg.tif", width=160, height=120, crs="EPSG:4326",
                                  transform=transform)  # fmt: skip
    obj = prompt(scene, tmp_path / "a", boxes=[(30.5, 20.5, 90, 70)]).objects[0]
    back = prompt(scene, tmp_path / "b", boxes=[obj["prompt_map"]["box"]],
                  crs="EPSG:4326").objects[0]  # fmt: skip
    assert back["prompt_px"]["box"] == pytest.approx([30.5, 20.5, 90, 70], abs=0.01)
    assert obj["prompt_map"]["points"] == []


@pytest.mark.parametrize("engine", ["box", "geoseg"])
def test_ask_reports_map_boxes_that_prompt_takes_back(scene, tmp_path, engine):
    with rasterio.open(scene) as src:
        crs = src.crs.to_string()
    reply = '{"bbox": [50, 40, 110, 90], "prompt": "building"}'
    if engine == "box":
        result = ask(scene, tmp_path / "out", reply, "box")
    else:
        segmenter = ShapeSegmenter(radius=8)
        with open_scene(scene) as opened:
            outputs = OutputSet(tmp_path / "out", "scene")
            result = run_ask(opened, "the building", ScriptedMLLM(reply),
                             AskModels(segmenter, DualRoute(segmenter)), outputs)  # fmt: skip
    [record] = result.details["boxes"]
    keys = ["mllm"] + (["refined"] if engine == "geoseg" else [])
    for key in keys:
        minx, miny, maxx, maxy = record[f"{key}_map"]
        assert minx < maxx and miny < maxy  # [minx, miny, maxx, maxy], not two corners
        back = prompt(scene, tmp_path / key, boxes=[record[f"{key}_map"]], crs=crs).objects[0]
        assert back["prompt_px"]["box"] == pytest.approx(record[f"{key}_px"], abs=1e-3)
    saved = json.loads(result.outputs["report"].read_text())
    assert saved["boxes"][0]["mllm_map"] == record["mllm_map"]


# ---------------------------------------------------------------------- overlapping objects


class ConeSegmenter(ShapeSegmenter):
    """A box prompt gives a mask of the whole box whose logit peaks at the box's centre and
    falls to 0 at its edge (as SAM is surest inside an object), with a predicted IoU of
    `scores[i]` for the i-th box."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def predict(self, embedding, *, points=None, point_labels=None, boxes=None, multimask=True,
                full_resolution=True):  # fmt: skip
        from terramask.protocols import MaskPrediction

        h, w = embedding.image_size
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        n = 3 if multimask else 1
        logits = np.empty((len(boxes), n, h, w), np.float32)
        for b, (x1, y1, x2, y2) in enumerate(boxes):
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            reach = np.maximum(np.abs(xx - cx) / hw, np.abs(yy - cy) / hh)
            logits[b] = np.where(reach <= 1, 10 * (1 - reach) + 0.01, -10)
        iou = np.repeat(np.asarray(self.scores, np.float32)[: len(boxes), None], n, axis=1)
        return MaskPrediction(masks=logits > 0, logits=logits, iou_scores=iou,
                              low_res_logits=logits)  # fmt: skip


def test_overlapping_objects_keep_polygons_whole_and_share_pixels_by_confidence(scene, tmp_path):
    """Object 1 (predicted IoU 0.3) and object 2 (0.9) overlap on columns 60-100, rows
    40-80. Each polygon is its whole box; in the mask each overlapping pixel goes to the
    object more confident at that pixel (the higher logit, nearer its centre here), not to
    the object with the higher score."""
    a, b = (20, 20, 100, 80), (60, 40, 140, 100)
    result = prompt(scene, tmp_path / "out", segmenter=ConeSegmenter([0.3, 0.9]), boxes=[a, b])
    assert [o["score"] for o in result.objects] == [0.3, 0.9]
    meta, _, geometry, values = pyogrio.raw.read(result.outputs["gpkg"])
    fields = dict(zip(meta["fields"], values, strict=True))
    polygons = {int(i): shapely.from_wkb(g) for i, g in zip(fields["object_id"], geometry,
                                                            strict=True)}  # fmt: skip
    with rasterio.open(result.outputs["mask"]) as src:
        ids = src.read(1)
        transform = src.transform
        score = rasterio.open(result.outputs["score"]).read(1)
    pixel = abs(transform.a * transform.e)
    for oid, (x1, y1, x2, y2) in ((1, a), (2, b)):
        assert polygons[oid].area == pytest.approx((x2 - x1) * (y2 - y1) * pixel)
    overlap = polygons[1].intersection(polygons[2]).area
    assert overlap == pytest.approx(40 * 40 * pixel)  # the polygons overlap; the mask cannot
    assert (ids == 1).sum() + (ids == 2).sum() < (80 * 60) * 2
    # where they overlap, the object nearer its own centre holds the pixel
    assert ids[42, 62] == 1  # reach 0.54 for object 1, 0.94 for object 2: the lower score wins
    assert ids[78, 98] == 2  # reach 0.95 for object 1, 0.53 for object 2
    cols, rows = np.meshgrid(np.arange(60, 100) + 0.5, np.arange(40, 80) + 0.5)
    reach1 = np.maximum(np.abs(cols - 60) / 40, np.abs(rows - 50) / 30)
    reach2 = np.maximum(np.abs(cols - 100) / 40, np.abs(rows - 70) / 30)
    expected = np.where(reach1 <= reach2, 1, 2)  # a tie goes to the lower id
    assert np.array_equal(ids[40:80, 60:100], expected)
    # the score raster holds the winner's probability
    winner = np.where(expected == 1, 10 * (1 - reach1), 10 * (1 - reach2)) + 0.01
    assert np.allclose(score[40:80, 60:100], 1 / (1 + np.exp(-winner)), atol=1e-4)


def test_objects_equally_sure_of_a_pixel_leave_it_to_the_lower_id(scene, tmp_path):
    result = prompt(scene, tmp_path / "out", boxes=[(60, 40, 140, 100), (20, 20, 100, 80)])
    with rasterio.open(result.outputs["mask"]) as src:
        ids = src.read(1)
    assert (ids[40:80, 60:100] == 1).all()  # both hold logit 10 there: the first box wins
    areas = {o["id"]: o["area_m2"] for o in result.objects}
    assert areas[1] == pytest.approx(80 * 60 * 0.25) and areas[2] == pytest.approx(80 * 60 * 0.25)
