"""Say what the values of a label raster mean, and how to draw it and its polygons, in the
files GIS software reads beside a layer.

- `<raster>.tif.aux.xml`: GDAL's PAM sidecar. rasterio cannot set category names or a raster
  attribute table, GeoTIFF cannot hold them itself, and GDAL keeps them in this file, which it
  reads whenever it opens the raster: `gdalinfo` lists the categories and the table (value,
  class name, colour), QGIS shows the table, and any GDAL program sees the names.
- `<layer>.qml`: a QGIS style. QGIS loads `<basename>.qml` beside a file-based layer as that
  layer's default style: the label raster as a paletted raster with class names, the
  polygons categorised by a field, in the raster's colours.

Everything here is plain text made the same way every time (no dates, fixed order), so the
files are byte-identical across identical runs.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from terramask.atomic import write_atomic

#: The QGIS version the styles are written as (read by QGIS 3.16 and later).
QGIS_VERSION = "3.28.0-Firenze"
_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
#: GDALRATFieldType and GDALRATFieldUsage values (gdal.h).
_INTEGER, _STRING = 0, 2
_MIN_MAX, _NAME, _RED, _GREEN, _BLUE, _ALPHA = 5, 2, 6, 7, 8, 9
#: Opacity of polygon fills in the QGIS style (outlines are opaque).
FILL_ALPHA = 153
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Category:
    """One value of a label raster: its number, what it names and its colour (RGBA)."""

    value: int
    name: str
    colour: tuple[int, int, int, int]

    @property
    def rgb(self) -> tuple[int, int, int]:
        return self.colour[0], self.colour[1], self.colour[2]


def categories_from(
    names: dict[int, str], colormap: dict[int, tuple[int, ...]]
) -> list[Category]:
    """Categories for the values `names` names, in value order, coloured as in `colormap`."""
    out = []
    for value in sorted(names):
        colour = tuple(colormap.get(value, (0, 0, 0, 255)))
        rgba = colour if len(colour) == 4 else (*colour[:3], 255)
        out.append(Category(int(value), names[value], tuple(int(c) for c in rgba)))
    return out


def pam_xml(categories: Sequence[Category], *, unnamed: str) -> str:
    """GDAL's PAM XML for band 1: category names (value i is the i-th name) and a thematic
    raster attribute table (Value, Name, Red, Green, Blue, Alpha), one row per category.

    Values no category names (0 among them, unless one does) are called `unnamed`.
    """
    by_value = {c.value: c for c in categories}
    top = max(by_value, default=0)
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for value in range(top + 1):
        ET.SubElement(names, "Category").text = _clean(
            by_value[value].name if value in by_value else unnamed
        )
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    columns = (
        ("Value", _INTEGER, _MIN_MAX), ("Name", _STRING, _NAME), ("Red", _INTEGER, _RED),
        ("Green", _INTEGER, _GREEN), ("Blue", _INTEGER, _BLUE), ("Alpha", _INTEGER, _ALPHA),
    )  # fmt: skip
    for i, (name, kind, usage) in enumerate(columns):
        field = ET.SubElement(table, "FieldDefn", index=str(i))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(kind)
        ET.SubElement(field, "Usage").text = str(usage)
    rows = list(categories)
    if 0 not in by_value:
        rows.insert(0, Category(0, unnamed, (0, 0, 0, 0)))
    for i, category in enumerate(sorted(rows, key=lambda c: c.value)):
        row = ET.SubElement(table, "Row", index=str(i))
        for value in (category.value, _clean(category.name), *category.colour):
            ET.SubElement(row, "F").text = str(value)
    return _serialise(root)


def raster_qml(categories: Sequence[Category]) -> str:
    """A QGIS style drawing band 1 as a paletted raster: each category in its colour, under
    its name; other values (no class, nodata) transparent."""
    root = _qgis_root()
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
        nodataColor="",
    )  # fmt: skip
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in categories:
        if c.colour[3] == 0:
            continue  # "no class" stays transparent, as in the raster's colour table
        ET.SubElement(
            palette, "paletteEntry", value=str(c.value), color=_hex(c.rgb),
            alpha=str(c.colour[3]), label=_clean(c.name),
        )  # fmt: skip
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
        colorizeRed="255", colorizeGreen="128", colorizeBlue="128", colorizeStrength="100",
        invertColors="0",
    )  # fmt: skip
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _serialise(root, doctype=True)


def vector_qml(categories: Sequence[Category], field: str, *, by_value: bool = False) -> str:
    """A QGIS style for polygons, categorised by `field`: each category's polygons filled in
    its colour (partly transparent) and outlined in it, listed under its name.

    `field` holds each category's name, or its value when `by_value` (e.g. `object_id`)."""
    root = _qgis_root()
    renderer = ET.SubElement(
        root, "renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0",
        forceraster="0", enableorderby="0",
    )  # fmt: skip
    listed = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(c for c in categories if c.colour[3] != 0):
        ET.SubElement(
            listed, "category", value=str(c.value) if by_value else _clean(c.name),
            symbol=str(i), label=_clean(c.name), render="true",
        )  # fmt: skip
        _fill_symbol(symbols, str(i), c.rgb)
    return _serialise(root, doctype=True)


def write_raster_styles(
    aux_path: str | os.PathLike,
    qml_path: str | os.PathLike,
    categories: Sequence[Category],
    *,
    unnamed: str,
) -> tuple[Path, Path]:
    """Write a label raster's PAM sidecar (`<raster>.aux.xml`) and QGIS style, atomically."""
    return (
        write_atomic(aux_path, pam_xml(categories, unnamed=unnamed)),
        write_atomic(qml_path, raster_qml(categories)),
    )


def write_vector_style(
    path: str | os.PathLike, categories: Sequence[Category], field: str, *, by_value: bool = False
) -> Path:
    """Write the polygons' QGIS style (see `vector_qml`) atomically."""
    return write_atomic(path, vector_qml(categories, field, by_value=by_value))


def _qgis_root() -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")


def _fill_symbol(parent: ET.Element, name: str, rgb: tuple[int, int, int]) -> None:
    """A simple fill in `rgb` (FILL_ALPHA opaque) with an opaque outline of the same colour,
    written both as QGIS ≥ 3.22 writes symbol layers (an option map) and as earlier 3.x
    versions do (`prop` elements), so that either reads it."""
    symbol = ET.SubElement(
        parent, "symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    attributes = {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    layer = ET.SubElement(symbol, "layer", attributes)
    colour = ",".join(str(v) for v in rgb)
    properties = (
        ("color", f"{colour},{FILL_ALPHA}"),
        ("joinstyle", "bevel"),
        ("outline_color", f"{colour},255"),
        ("outline_style", "solid"),
        ("outline_width", "0.46"),
        ("outline_width_unit", "MM"),
        ("style", "solid"),
    )
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in properties:
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for key, value in properties:
        ET.SubElement(layer, "prop", k=key, v=value)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _clean(text: str) -> str:
    """Text XML 1.0 can hold: control characters (other than tab and newlines) removed."""
    return _CONTROL.sub("", str(text))


def _serialise(root: ET.Element, *, doctype: bool = False) -> str:
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return (_DOCTYPE + "\n" if doctype else "") + body + "\n"
