"""Write found objects as a scene's outputs: id mask and score COGs, polygons, preview, report.

Shared by every run that finds objects (`prompt`, `ask`): rasters are painted block by block
from the objects' crops, so memory stays flat however large the scene.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

#: What an object run writes, in order.
OBJECT_OUTPUTS = ("mask", "score", "gpkg", "geojson", "preview", "report")


@dataclass
class WrittenObjects:
    """Paths written (by kind), each object's area in m² (None without a CRS), timings."""

    paths: dict[str, Path]
    areas: dict[int, float | None]
    features: list[Feature]
    timings: dict[str, float] = field(default_factory=dict)


def write_object_outputs(
    scene: Scene,
    objects: list[FoundObject],
    outputs: OutputSet,
    *,
    polygons: PolygonOptions = PolygonOptions(),
    progress: Progress | None = None,
) -> WrittenObjects:
    """Mask, score, vectors and preview of `objects` (ids 1..n) on the scene's grid."""
    colours = object_colormap(max((o.id for o in objects), default=0))
    timings = {}
    t = time.perf_counter()
    _write_rasters(scene, objects, outputs, colours, progress)
    timings["rasters"] = time.perf_counter() - t

    features = _polygons(scene, objects, polygons)
    timings.update(write_vectors_and_preview(scene, features, outputs, "mask", colours))

    areas: dict[int, float | None] = {}
    for f in features:
        oid = f.properties["object_id"]
        areas[oid] = None if f.area_m2 is None else (areas.get(oid) or 0.0) + f.area_m2
    return WrittenObjects(staged_paths(outputs), areas, features, timings)


def staged_paths(outputs: OutputSet) -> dict[str, Path]:
    """The outputs staged so far, by kind, at the places they will have once committed."""
    return {kind: outputs.path(kind) for kind in SUFFIXES if outputs.target(kind).exists()}


def write_vectors_and_preview(
    scene: Scene,
    features: list[Feature],
    outputs: OutputSet,
    raster_kind: str,
    colormap: dict[int, tuple[int, int, int, int]],
) -> dict[str, float]:
    """GeoPackage (native CRS), GeoJSON (EPSG:4326, when georeferenced) and the preview of
    the staged raster `raster_kind` over the scene, staged; the time each took."""
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
    write_preview(outputs.target("preview"), scene, outputs.target(raster_kind), colormap=colormap)
    timings["preview"] = time.perf_counter() - t
    return timings


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
