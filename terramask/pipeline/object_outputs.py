"""Write found objects as a scene's outputs: id mask and score COGs, polygons, preview, report.

Shared by every run that finds objects (`prompt`, `ask`): rasters are painted block by block
from the objects' crops, so memory stays flat however large the scene.

Overlapping objects: each object's polygons keep the object's whole mask, so polygons of
different objects may overlap; the id mask holds one id per pixel, and gives a pixel two
objects cover to the one whose mask is most confident there (the higher mask logit, i.e.
the probability `_score.tif` then holds), the lower id on a tie (see `paint_block`).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from terramask.atomic import write_atomic
from terramask.options import PolygonOptions
from terramask.pipeline.objects import FoundObject, paint_block
from terramask.protocols import Progress
from terramask.scene import (
    Feature,
    OutputSet,
    RasterWriter,
    Scene,
    polygonize,
    write_preview,
    write_vectors,
)
from terramask.scene.outputs import SUFFIXES
from terramask.scene.styles import Category, write_raster_styles, write_vector_style
from terramask.scene.writers import Mark

#: Files that travel with a layer (GDAL sidecars, QGIS styles): listed apart from the layers,
#: under `sidecars`, in results and reports.
SIDECAR_KINDS = ("mask_aux", "labels_aux", "mask_style", "labels_style", "vector_style")
#: What an object run writes, in order (the report last).
OBJECT_OUTPUTS = (
    "mask", "score", "gpkg", "geojson", "preview", "mask_aux", "mask_style", "vector_style",
    "report",
)  # fmt: skip
#: The name of value 0 in an object mask.
NO_OBJECT = "no object"


@dataclass
class WrittenObjects:
    """Paths written (layers by kind, and their sidecars), each object's area in m² (None
    without a CRS), timings."""

    paths: dict[str, Path]
    areas: dict[int, float | None]
    features: list[Feature]
    timings: dict[str, float] = field(default_factory=dict)
    sidecars: dict[str, Path] = field(default_factory=dict)


def write_object_outputs(
    scene: Scene,
    objects: list[FoundObject],
    outputs: OutputSet,
    *,
    polygons: PolygonOptions = PolygonOptions(),
    marks: Sequence[Mark] = (),
    progress: Progress | None = None,
) -> WrittenObjects:
    """Mask, score, vectors and preview of `objects` (ids 1..n) on the scene's grid, with
    the mask's category names and attribute table, QGIS styles for the mask and polygons,
    and a preview with a legend and `marks` (the prompts) drawn on it.

    Where objects overlap, each keeps its whole extent in the polygons, and the mask gives
    each pixel to the object most confident there (see the module's docstring)."""
    colours = object_colormap(max((o.id for o in objects), default=0))
    categories = object_categories(objects, colours)
    timings = {}
    t = time.perf_counter()
    _write_rasters(scene, objects, outputs, colours, progress)
    write_raster_styles(
        outputs.target("mask_aux"), outputs.target("mask_style"), categories, unnamed=NO_OBJECT
    )
    timings["rasters"] = time.perf_counter() - t

    features = _polygons(scene, objects, polygons)
    found = {o.id for o in objects if not o.is_empty}
    legend = [(c.name, c.colour) for c in categories if c.value in found]
    timings.update(
        write_vectors_and_preview(
            scene, features, outputs, "mask", colours, legend=legend, marks=marks
        )
    )
    write_vector_style(outputs.target("vector_style"), categories, "object_id", by_value=True)

    areas: dict[int, float | None] = {}
    for f in features:
        oid = f.properties["object_id"]
        areas[oid] = None if f.area_m2 is None else (areas.get(oid) or 0.0) + f.area_m2
    return WrittenObjects(
        staged_paths(outputs), areas, features, timings, sidecars=staged_sidecars(outputs)
    )


def staged_paths(outputs: OutputSet) -> dict[str, Path]:
    """The layers and report staged so far, by kind, at the places they will have once
    committed (their sidecars: `staged_sidecars`)."""
    return {
        kind: outputs.path(kind)
        for kind in SUFFIXES
        if kind not in SIDECAR_KINDS and outputs.target(kind).exists()
    }


def staged_sidecars(outputs: OutputSet) -> dict[str, Path]:
    """The sidecars staged so far (PAM `.aux.xml`, QGIS `.qml`), by kind, at their final places."""
    return {
        kind: outputs.path(kind) for kind in SIDECAR_KINDS if outputs.target(kind).exists()
    }


def write_vectors_and_preview(
    scene: Scene,
    features: list[Feature],
    outputs: OutputSet,
    raster_kind: str,
    colormap: dict[int, tuple[int, int, int, int]],
    *,
    legend: Sequence[tuple[str, tuple[int, ...]]] = (),
    marks: Sequence[Mark] = (),
) -> dict[str, float]:
    """GeoPackage (native CRS), GeoJSON (EPSG:4326, when georeferenced) and the preview of
    the staged raster `raster_kind` over the scene (with `legend` and `marks`), staged; the
    time each took."""
    timings = {}
    t = time.perf_counter()
    write_vectors(
        features,
        crs=scene.crs,
        gpkg_path=outputs.target("gpkg"),
        geojson_path=outputs.target("geojson") if scene.georeferenced else None,
    )
    timings["vectors"] = time.perf_counter() - t
    t = time.perf_counter()
    write_preview(
        outputs.target("preview"), scene, outputs.target(raster_kind), colormap=colormap,
        legend=legend, marks=marks,
    )  # fmt: skip
    timings["preview"] = time.perf_counter() - t
    return timings


def object_names(objects: Sequence[FoundObject]) -> dict[int, str]:
    """What each object id is called in legends, category names and styles: its name, with
    its id added when several objects share that name ("object 1", "object 2")."""
    names: dict[int, str] = {}
    for obj in sorted(objects, key=lambda o: o.id):
        names.setdefault(obj.id, obj.name)
    counts = Counter(names.values())
    return {i: f"{n} {i}" if counts[n] > 1 else n for i, n in names.items()}


def object_categories(
    objects: Sequence[FoundObject], colours: dict[int, tuple[int, int, int, int]]
) -> list[Category]:
    """Every object id with its name (`object_names`) and mask colour, in id order."""
    return [Category(i, name, colours[i]) for i, name in object_names(objects).items()]


def map_decimals(transform: Affine) -> int:
    """Decimals that keep map coordinates to about 1/1000 of a pixel (3 at least): 3 for
    metre-sized pixels, 4 for 0.5 m, 8 for 1e-5° pixels."""
    size = min(math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))
    if not size > 0 or not math.isfinite(size):
        return 3
    return max(3, 3 - math.floor(math.log10(size)))


def map_point(transform: Affine, xy: Sequence[float]) -> list[float]:
    """A point in scene pixels as [x, y] in map units (see `map_decimals`)."""
    digits = map_decimals(transform)
    x, y = transform @ (float(xy[0]), float(xy[1]))
    return [round(x, digits), round(y, digits)]


def map_box(transform: Affine, box: Sequence[float]) -> list[float]:
    """A box in scene pixels (x1, y1, x2, y2) as [minx, miny, maxx, maxy] in map units.

    The envelope of the box's four corners, so the same order on north-up grids (where pixel
    y grows southwards) and on rotated ones; `prompt`'s `boxes` with `crs` set to the scene's
    CRS take it back (on a north-up grid, as the same pixel box)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xs, ys = zip(*(transform @ c for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))), strict=True)
    digits = map_decimals(transform)
    return [round(v, digits) for v in (min(xs), min(ys), max(xs), max(ys))]


def write_report(outputs: OutputSet, payload: dict) -> Path:
    """Stage the run's JSON report (it is swapped into place last, marking a finished set)."""
    write_atomic(outputs.target("report"), json.dumps(payload, indent=2, default=str))
    return outputs.path("report")


def _write_rasters(
    scene: Scene,
    objects: list[FoundObject],
    outputs: OutputSet,
    colours: dict[int, tuple[int, int, int, int]],
    progress: Progress | None,
) -> None:
    dtype = "uint8" if len(colours) <= 255 else "uint16"
    nodata = 255 if dtype == "uint8" else 65535
    with label_and_score_writers(
        scene, outputs, "mask", dtype=dtype, nodata=nodata, colormap=colours
    ) as (mask_writer, score_writer):
        blocks = list(mask_writer.blocks())
        for done, block in enumerate(blocks):
            if progress:
                progress("write", done, len(blocks))
            valid = scene.read_valid(block)
            ids, prob = paint_block(objects, block)
            mask_writer.write(np.where(valid, ids, nodata).astype(dtype), block)
            score_writer.write(np.where(valid, prob, np.nan).astype("float32"), block)
    if progress:
        progress("write", len(blocks), len(blocks))


@contextmanager
def label_and_score_writers(
    scene: Scene,
    outputs: OutputSet,
    label_kind: str,
    *,
    dtype: str,
    nodata: int,
    colormap: dict[int, tuple[int, int, int, int]],
    tags: dict[str, str] | None = None,
) -> Iterator[tuple[RasterWriter, RasterWriter]]:
    """The two COGs every run writes on the scene's grid, staged: labels (or ids, with
    `tags` describing their values) and scores."""
    common = dict(
        width=scene.width, height=scene.height, crs=scene.crs, transform=scene.transform
    )
    with (
        RasterWriter(
            outputs.target(label_kind), dtype=dtype, nodata=nodata, colormap=colormap,
            tags=tags, **common,
        ) as labels,
        RasterWriter(
            outputs.target("score"), dtype="float32", nodata=float("nan"), **common
        ) as scores,
    ):  # fmt: skip
        yield labels, scores


def _polygons(
    scene: Scene, objects: list[FoundObject], polygons: PolygonOptions
) -> list[Feature]:
    features = []
    for obj in objects:
        if obj.is_empty:
            continue
        for feature in polygonize(
            obj.mask.astype(np.uint8),
            scene.transform @ obj.to_scene,
            names={1: obj.name},
            crs=scene.crs,
            scores={1: obj.score},
            polygons=polygons,
        ):
            feature.properties["object_id"] = obj.id
            features.append(feature)
    return features


def object_colormap(n: int) -> dict[int, tuple[int, int, int, int]]:
    """Distinct colours for object ids 1..n (0 transparent), stable across runs."""
    rng = np.random.default_rng(7)
    colours = {0: (0, 0, 0, 0)}
    for i in range(1, n + 1):
        r, g, b = (rng.integers(64, 256, size=3)).tolist()
        colours[i] = (r, g, b, 255)
    return colours


def scene_summary(scene: Scene) -> dict:
    """Where the outputs sit: the scene's source, size, CRS and transform."""
    return {
        "source": str(scene.source),
        "width": scene.width,
        "height": scene.height,
        "crs": scene.crs.to_string() if scene.crs else None,
        "transform": list(scene.transform)[:6],
        "bands": list(scene.bands),
        "georeferenced": scene.georeferenced,
    }
