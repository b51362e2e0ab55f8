"""The `segment` run: class names to a georeferenced label map and polygons, tile by tile.

Seam rule: every tile is predicted on its whole window (overlap included, for context) but
writes only its core; cores partition the scene, seams sit in the middle of each overlap.
Polygons are made per core and those of one class that meet across a seam are merged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from rasterio.windows import Window

from terramask.methods.ovss import OvssPredictor
from terramask.methods.vocabulary import ClassVocabulary
from terramask.pipeline.object_outputs import (
    label_and_score_writers,
    write_vectors_and_preview,
)
from terramask.scene import (
    Feature,
    OutputSet,
    Scene,
    area_m2,
    atomic_output,
    plan_tiles,
    polygonize,
)
from terramask.scene.vectors import to_pyproj
from terramask.scene.writers import PALETTE

Progress = Callable[[str, int, int], None]

SEGMENT_OUTPUTS = ("labels", "score", "gpkg", "geojson", "preview", "report")
LABEL_NODATA = 255
NO_CLASS_VALUE = 0

def class_colormap(vocabulary: ClassVocabulary) -> dict[int, tuple[int, int, int, int]]:
    """Raster value k+1 for class k, colours cycling through PALETTE."""
    colours = {NO_CLASS_VALUE: (0, 0, 0, 0)}
    for k in range(len(vocabulary)):
        colours[k + 1] = (*PALETTE[k % len(PALETTE)], 255)
    return colours


@dataclass
class SegmentResult:
    """Files written, per-class pixel counts and areas, timings."""

    outputs: dict[str, Path]
    classes: list[dict]
    tiles: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "classes": self.classes,
            "tiles": self.tiles,
            "timings_s": self.timings,
        }


@dataclass
class _Piece:
    feature: Feature
    on_seam: bool


def run_segment(
    scene: Scene,
    vocabulary: ClassVocabulary,
    predictor: OvssPredictor,
    outputs: OutputSet,
    *,
    tile_size: int = 1024,
    overlap: int = 128,
    simplify: float | None = None,
    min_area_px: int = 0,
    progress: Progress | None = None,
) -> SegmentResult:
    """Predict every tile, write its core, then merge polygons across seams and write all."""
    started = time.perf_counter()
    plan = plan_tiles(scene.width, scene.height, tile_size, overlap)
    colormap = class_colormap(vocabulary)
    names = {k + 1: name for k, name in enumerate(vocabulary.names)}
    pixels = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    pieces: list[_Piece] = []
    skipped = 0
    with label_and_score_writers(
        scene, outputs, "labels", dtype="uint8", nodata=LABEL_NODATA, colormap=colormap
    ) as (label_writer, score_writer):
        for done, tile in enumerate(plan):
            if progress:
                progress("segment", done, len(plan))
            window = scene.read(tile.window)
            core = _core_slices(tile.window, tile.core)
            valid = window.valid[core]
            if not valid.any():  # nothing to see: no model call
                skipped += 1
                label_writer.write(np.full(valid.shape, LABEL_NODATA, np.uint8), tile.core)
                score_writer.write(np.full(valid.shape, np.nan, np.float32), tile.core)
                continue
            labels, confidence = predictor.predict(window.image, vocabulary, valid=window.valid)
            values = np.where(labels[core] >= 0, labels[core] + 1, NO_CLASS_VALUE)
            values = np.where(valid, values, LABEL_NODATA).astype(np.uint8)
            score = np.where(valid, confidence[core], np.nan).astype(np.float32)
            label_writer.write(values, tile.core)
            score_writer.write(score, tile.core)
            pixels += np.bincount(values[valid].ravel(), minlength=len(pixels))[: len(pixels)]
            pieces += _core_polygons(scene, tile.core, values, score, valid, names)
    if progress:
        progress("segment", len(plan), len(plan))
    timings = {"segment": time.perf_counter() - started}

    t = time.perf_counter()
    features = finish_polygons(
        merge_across_seams(pieces, scene.crs), scene, simplify=simplify, min_area_px=min_area_px
    )
    timings["merge"] = time.perf_counter() - t
    vectors, finishing = write_vectors_and_preview(scene, features, outputs, "labels", colormap)
    timings.update(finishing)
    written = [outputs.path("labels"), outputs.path("score"), *vectors]
    timings["total"] = time.perf_counter() - started

    pixel_area = _pixel_area_m2(scene)
    classes = [
        {
            "value": k + 1,
            "name": name,
            "synonyms": list(vocabulary.classes[k]),
            "pixels": int(pixels[k + 1]),
            "area_m2": None if pixel_area is None else float(pixels[k + 1] * pixel_area),
            "polygons": sum(1 for f in features if f.label == name),
        }
        for k, name in enumerate(vocabulary.names)
    ]
    result = SegmentResult(
        outputs={
            kind: path for kind in SEGMENT_OUTPUTS for path in written if path == outputs.path(kind)
        },
        classes=classes,
        tiles={"total": len(plan), "skipped_no_data": skipped},
        timings=timings,
    )
    report = outputs.path("report")
    with atomic_output(report, overwrite=outputs.overwrite) as tmp:
        Path(tmp).write_text(
            json.dumps(
                {
                    **result.to_dict(),
                    "engine": predictor.name,
                    "threshold": predictor.threshold,
                    "no_class_value": NO_CLASS_VALUE,
                    "nodata_value": LABEL_NODATA,
                },
                indent=2,
            )
        )
    result.outputs["report"] = report
    return result


def _core_slices(window: Window, core: Window) -> tuple[slice, slice]:
    r0 = core.row_off - window.row_off
    c0 = core.col_off - window.col_off
    return slice(r0, r0 + core.height), slice(c0, c0 + core.width)


def _core_polygons(
    scene: Scene,
    core: Window,
    values: np.ndarray,
    score: np.ndarray,
    valid: np.ndarray,
    names: dict[int, str],
) -> list[_Piece]:
    """Polygons of one core; those touching an inner seam are marked for merging.

    Size filtering and simplification wait until objects are whole (after merging): a
    piece cut by a seam may be small while its object is not.
    """
    transform = scene.window_transform(core)
    features = polygonize(
        values,
        transform,
        names=names,
        crs=scene.crs,
        score_map=np.nan_to_num(score),
        valid=valid,
    )
    seams = _inner_seams(scene, core, transform)
    return [_Piece(f, seams is not None and f.geometry.intersects(seams)) for f in features]


def _inner_seams(scene: Scene, core: Window, transform) -> shapely.Geometry | None:
    """The core's edges that border another core (not the scene's own edge), as lines."""
    c0, r0 = core.col_off, core.row_off
    c1, r1 = c0 + core.width, r0 + core.height
    lines = []
    if c0 > 0:
        lines.append(((0, 0), (0, core.height)))
    if r0 > 0:
        lines.append(((0, 0), (core.width, 0)))
    if c1 < scene.width:
        lines.append(((core.width, 0), (core.width, core.height)))
    if r1 < scene.height:
        lines.append(((0, core.height), (core.width, core.height)))
    if not lines:
        return None
    return shapely.MultiLineString([[transform @ p for p in line] for line in lines])


def merge_across_seams(pieces: list[_Piece], crs) -> list[Feature]:
    """Join pieces of one class that share an edge across a seam; interior ones pass as is.

    The merged feature's score is the area-weighted mean of its pieces' scores.
    """
    crs_proj = to_pyproj(crs)
    features = [p.feature for p in pieces if not p.on_seam]
    by_class: dict[str, list[Feature]] = {}
    for p in pieces:
        if p.on_seam:
            by_class.setdefault(p.feature.label, []).append(p.feature)
    for label, group in by_class.items():
        geometries = [f.geometry for f in group]
        merged = shapely.union_all(geometries)
        parts = list(getattr(merged, "geoms", [merged]))
        tree = shapely.STRtree(geometries)
        for part in parts:
            inside = tree.query(part, predicate="contains")
            if len(inside) == 0:  # rounding at the seam: fall back to overlap
                inside = tree.query(part, predicate="intersects")
            members = [group[i] for i in inside]
            weights = np.array([m.geometry.area for m in members])
            scores = np.array([m.score for m in members])
            score = float(np.average(scores, weights=weights)) if weights.sum() else float("nan")
            features.append(
                Feature(part, label, score, area_m2(part, crs_proj) if crs_proj else None)
            )
    return features


def finish_polygons(
    features: list[Feature], scene: Scene, *, simplify: float | None, min_area_px: int
) -> list[Feature]:
    """Drop objects under `min_area_px` pixels and simplify, once objects are whole."""
    pixel = abs(scene.transform.determinant)
    crs_proj = to_pyproj(scene.crs)
    finished = []
    for f in features:
        if min_area_px and f.geometry.area < min_area_px * pixel:
            continue
        if simplify:
            geometry = f.geometry.simplify(simplify, preserve_topology=True)
            area = area_m2(geometry, crs_proj) if crs_proj else None
            f = Feature(geometry, f.label, f.score, area, f.properties)
        finished.append(f)
    return finished


def _pixel_area_m2(scene: Scene) -> float | None:
    if not scene.georeferenced or scene.crs is None:
        return None
    t = scene.transform
    square = shapely.Polygon([t @ (0, 0), t @ (1, 0), t @ (1, 1), t @ (0, 1)])
    return area_m2(square, to_pyproj(scene.crs))
