"""The `segment` run: class names to a georeferenced label map and polygons, tile by tile.

Seam rule: every tile is predicted on its whole window (overlap included, for context) but
keeps only its core; cores partition the scene, seams sit in the middle of each overlap.
Polygons are made per core and those of one class that meet across a seam are merged.

A run has two phases. Tiles are computed by a runner (in this process, or on Ray actors),
in any order, and each finished tile is kept on disk in the tile store; a re-run of the
same command skips the tiles already there. Then the outputs are assembled from the store in
tile order, one tile at a time: the COGs window by window, polygons streamed to the vector
files as tiles go by, only the pieces on seams held back for merging. Assembling from the
store whatever happened before is what makes outputs identical across backends, and
byte-identical after an interruption.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import shapely

import terramask
from terramask.methods.ovss import OvssPredictor
from terramask.methods.vocabulary import ClassVocabulary
from terramask.pipeline.object_outputs import label_and_score_writers, write_report
from terramask.pipeline.segment_tiles import (
    LABEL_NODATA,
    NO_CLASS_VALUE,
    TileResult,
    compute_tile,
    to_scene_crs,
)
from terramask.pipeline.tile_store import WORK_FOLDER, TileStore
from terramask.protocols import Progress
from terramask.scene import Feature, OutputSet, Scene, Tile, area_m2, plan_tiles
from terramask.scene.vectors import VectorWriter, to_pyproj
from terramask.scene.writers import PALETTE, write_preview

SEGMENT_OUTPUTS = ("labels", "score", "gpkg", "geojson", "preview", "report")

__all__ = ["LABEL_NODATA", "NO_CLASS_VALUE", "SEGMENT_OUTPUTS", "run_segment"]


def class_colormap(vocabulary: ClassVocabulary) -> dict[int, tuple[int, int, int, int]]:
    """Raster value k+1 for class k, colours cycling through PALETTE."""
    colours = {NO_CLASS_VALUE: (0, 0, 0, 0)}
    for k in range(len(vocabulary)):
        colours[k + 1] = (*PALETTE[k % len(PALETTE)], 255)
    return colours


class TileRunner(Protocol):
    """Computes tiles somewhere and yields their results as they finish, in any order.

    `description` is what the report and the tile store's fingerprint record of the engine;
    it must be the same for every backend given the same settings.
    """

    description: dict

    def run(self, tiles: Sequence[Tile]) -> Iterator[TileResult]: ...


@dataclass
class InProcessRunner:
    """Tiles one after another in this process."""

    scene: Scene
    predictor: OvssPredictor
    vocabulary: ClassVocabulary
    description: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.description:
            self.description = {
                "engine": self.predictor.name,
                "threshold": self.predictor.threshold,
            }

    def run(self, tiles: Sequence[Tile]) -> Iterator[TileResult]:
        for tile in tiles:
            yield compute_tile(self.scene, tile, self.predictor, self.vocabulary)


@dataclass
class SegmentResult:
    """Files written, per-class pixel counts and areas, tiles, timings."""

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


def run_segment(
    scene: Scene,
    vocabulary: ClassVocabulary,
    runner: TileRunner,
    outputs: OutputSet,
    *,
    tile_size: int = 1024,
    overlap: int = 128,
    simplify: float | None = None,
    min_area_px: int = 0,
    progress: Progress | None = None,
) -> SegmentResult:
    """Compute the tiles not yet in the store, then assemble every output from the store."""
    started = time.perf_counter()
    if outputs.overwrite:  # the report marks a finished scene: not while outputs are replaced
        outputs.path("report").unlink(missing_ok=True)
    plan = plan_tiles(scene.width, scene.height, tile_size, overlap)
    store = TileStore(
        outputs.directory / WORK_FOLDER / outputs.stem,
        _fingerprint(scene, vocabulary, runner, tile_size, overlap),
    )
    done = store.done() & set(range(len(plan)))
    pending = [tile for tile in plan if tile.index not in done]
    finished = len(done)
    if progress:
        progress("segment", finished, len(plan))
    for result in runner.run(pending):
        store.save(result)
        finished += 1
        if progress:
            progress("segment", finished, len(plan))
    timings = {"segment": time.perf_counter() - started}

    t = time.perf_counter()
    assembled = _assemble(scene, vocabulary, store, len(plan), outputs, simplify, min_area_px)
    timings["assemble"] = time.perf_counter() - t
    t = time.perf_counter()
    write_preview(
        outputs.path("preview"),
        scene,
        outputs.path("labels"),
        colormap=class_colormap(vocabulary),
        overwrite=outputs.overwrite,
    )
    timings["preview"] = time.perf_counter() - t

    pixel_area = _pixel_area_m2(scene)
    classes = [
        {
            "value": k + 1,
            "name": name,
            "synonyms": list(vocabulary.classes[k]),
            "pixels": int(assembled.pixels[k + 1]),
            "area_m2": None
            if pixel_area is None
            else float(assembled.pixels[k + 1] * pixel_area),
            "polygons": assembled.polygons[name],
        }
        for k, name in enumerate(vocabulary.names)
    ]
    tiles = {"total": len(plan), "skipped_no_data": assembled.skipped}
    written = {
        kind: outputs.path(kind)
        for kind in SEGMENT_OUTPUTS
        if kind != "report" and (kind != "geojson" or (scene.georeferenced and scene.crs))
    }
    report = write_report(
        outputs,
        {
            # names, not paths: beside the report, and identical wherever the folder is
            "outputs": {k: v.name for k, v in written.items()},
            "classes": classes,
            "tiles": tiles,
            **runner.description,
            "no_class_value": NO_CLASS_VALUE,
            "nodata_value": LABEL_NODATA,
        },
    )
    store.remove()
    timings["total"] = time.perf_counter() - started
    return SegmentResult(
        outputs={**written, "report": report},
        classes=classes,
        tiles={**tiles, "resumed": len(done)},
        timings=timings,
    )


def _fingerprint(
    scene: Scene,
    vocabulary: ClassVocabulary,
    runner: TileRunner,
    tile_size: int,
    overlap: int,
) -> dict:
    """Everything a tile's result depends on: a store made under other settings is discarded."""
    return {
        "terramask": terramask.__version__,
        "scene": {
            "source": scene.source,
            "size": [scene.width, scene.height],
            "bands": list(scene.bands),
            "stretch": [scene.stretch.low.tolist(), scene.stretch.high.tolist()],
        },
        "classes": [list(c) for c in vocabulary.classes],
        "background": vocabulary.background,
        "tiling": [tile_size, overlap],
        "store_format": 2,  # 2: polygons kept in scene pixel coordinates
        "engine": runner.description,
    }


@dataclass
class _Assembled:
    pixels: np.ndarray
    polygons: Counter
    skipped: int


def _assemble(
    scene: Scene,
    vocabulary: ClassVocabulary,
    store: TileStore,
    tiles: int,
    outputs: OutputSet,
    simplify: float | None,
    min_area_px: int,
) -> _Assembled:
    """Write the COGs and the vectors from the stored tiles, in tile order, one at a time."""
    pixels = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    polygons: Counter = Counter()
    skipped = 0
    seam_pieces: list[Feature] = []
    vectors = VectorWriter(
        crs=scene.crs,
        gpkg_path=outputs.path("gpkg"),
        geojson_path=outputs.path("geojson") if scene.georeferenced else None,
        overwrite=outputs.overwrite,
    )

    def add(features: list[Feature]) -> None:  # pixel coordinates in, scene CRS out
        finished = finish_polygons(
            to_scene_crs(features, scene), scene, simplify=simplify, min_area_px=min_area_px
        )
        polygons.update(f.label for f in finished)
        vectors.add(finished)

    with (
        label_and_score_writers(
            scene,
            outputs,
            "labels",
            dtype="uint8",
            nodata=LABEL_NODATA,
            colormap=class_colormap(vocabulary),
        ) as (label_writer, score_writer),
        vectors,
    ):
        for result in store.results(range(tiles)):
            shape = (result.core.height, result.core.width)
            if result.skipped:
                skipped += 1
                label_writer.write(np.full(shape, LABEL_NODATA, np.uint8), result.core)
                score_writer.write(np.full(shape, np.nan, np.float32), result.core)
                continue
            label_writer.write(result.values, result.core)
            score_writer.write(result.score, result.core)
            pixels += result.pixels
            pieces = list(zip(result.features, result.on_seam, strict=True))
            add([f for f, on_seam in pieces if not on_seam])
            seam_pieces += [f for f, on_seam in pieces if on_seam]
        add(merge_across_seams(seam_pieces))
    return _Assembled(pixels, polygons, skipped)


def merge_across_seams(pieces: list[Feature]) -> list[Feature]:
    """Join pieces (all touching a seam) of one class that share an edge across a seam.

    Pieces are in pixel coordinates, where shared edges coincide exactly; ground areas are
    computed once features are mapped to the CRS. The merged feature's score is the
    area-weighted mean of its pieces' scores.
    """
    features: list[Feature] = []
    by_class: dict[str, list[Feature]] = {}
    for piece in pieces:
        by_class.setdefault(piece.label, []).append(piece)
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
            features.append(Feature(part, label, score, None))
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
