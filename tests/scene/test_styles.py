"""Category names, raster attribute tables and QGIS styles: text GDAL and QGIS read, made the
same way every time."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import rasterio
from affine import Affine

from terramask.scene import RasterWriter
from terramask.scene.styles import (
    Category,
    categories_from,
    pam_xml,
    raster_qml,
    vector_qml,
    write_raster_styles,
    write_vector_style,
)
from tests.helpers.gdalinfo import gdalinfo

CATEGORIES = [Category(1, "roof", (230, 25, 75, 255)), Category(3, "a\x01 & <b>", (0, 0, 255, 255))]


def test_values_without_a_category_are_named_unnamed():
    root = ET.fromstring(pam_xml(CATEGORIES, unnamed="no class"))
    names = [c.text for c in root.iter("Category")]
    assert names == ["no class", "roof", "no class", "a & <b>"]  # control character dropped
    rows = [[f.text for f in row.iter("F")] for row in root.iter("Row")]
    assert rows == [
        ["0", "no class", "0", "0", "0", "0"],
        ["1", "roof", "230", "25", "75", "255"],
        ["3", "a & <b>", "0", "0", "255", "255"],
    ]
    # a category of its own for 0 is used as given
    zero = [Category(0, "background", (9, 9, 9, 255)), *CATEGORIES]
    assert ET.fromstring(pam_xml(zero, unnamed="x")).find(".//Category").text == "background"


def test_gdal_reads_the_sidecar_beside_a_cog(tmp_path):
    path = tmp_path / "l.tif"
    with RasterWriter(path, width=8, height=8, dtype="uint8", crs="EPSG:32633",
                      transform=Affine(1, 0, 0, 0, -1, 8), nodata=255,
                      colormap={0: (0, 0, 0, 0), 1: (230, 25, 75, 255)}) as writer:  # fmt: skip
        writer.write(np.ones((8, 8), "uint8"), rasterio.windows.Window(0, 0, 8, 8))
    aux, style = write_raster_styles(
        tmp_path / "l.tif.aux.xml", tmp_path / "l.qml", CATEGORIES, unnamed="none"
    )
    info = gdalinfo(path)
    assert str(aux) in info["files"]
    assert info["bands"][0]["categories"] == ["none", "roof", "none", "a & <b>"]
    assert [r["f"][:2] for r in info["rat"]["row"]] == [[0, "none"], [1, "roof"], [3, "a & <b>"]]
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"  # still a COG
    assert ET.parse(style).getroot().tag == "qgis"


def test_qml_is_well_formed_and_names_every_category(tmp_path):
    text = raster_qml(CATEGORIES)
    assert text.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
    entries = ET.fromstring(text.split("\n", 1)[1]).findall(".//paletteEntry")
    assert [(e.get("value"), e.get("color"), e.get("label")) for e in entries] == [
        ("1", "#e6194b", "roof"), ("3", "#0000ff", "a & <b>")
    ]  # fmt: skip
    path = write_vector_style(tmp_path / "v.qml", CATEGORIES, "object_id", by_value=True)
    root = ET.parse(path).getroot()
    assert root.find("renderer-v2").get("attr") == "object_id"
    assert [c.get("value") for c in root.iter("category")] == ["1", "3"]
    by_name = ET.fromstring(vector_qml(CATEGORIES, "label").split("\n", 1)[1])
    assert [c.get("value") for c in by_name.iter("category")] == ["roof", "a & <b>"]
    assert raster_qml(CATEGORIES) == text  # the same text every time


def test_transparent_categories_stay_out_of_styles():
    clear = [Category(1, "clear", (0, 0, 0, 0)), *CATEGORIES]
    assert "clear" not in raster_qml(clear) and "clear" not in vector_qml(clear, "label")
    assert "clear" in pam_xml(clear, unnamed="none")


def test_categories_take_their_colours_from_the_colour_map():
    made = categories_from({2: "b", 1: "a"}, {1: (1, 2, 3), 2: (4, 5, 6, 7)})
    assert made == [Category(1, "a", (1, 2, 3, 255)), Category(2, "b", (4, 5, 6, 7))]
