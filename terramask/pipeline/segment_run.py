"""The `segment` run: class names to a georeferenced label map and polygons, tile by tile.

Seam rule: every tile is predicted on its whole window (overlap included, for context) but
keeps only its core; cores partition the scene, seams sit in the middle of each overlap.
Polygons are made per core and those of one class that meet across a seam are merged.

Beside the label raster go its category names and attribute table (GDAL's `.aux.xml`) and
QGIS styles for it and the polygons, so GIS software shows class names in the run's colours.

A run has two phases. Tiles are computed by a runner (in this process, or on Ray actors),
in any order, and each finished tile is kept on disk in the tile store; a re-run of the
same command skips the tiles already there. Then the outputs are assembled from the store in
tile order, one tile at a time: the COGs window by window, polygons streamed to the vector
files as tiles go by, only the pieces on seams held back for merging. Assembling from the
store whatever happened before is what makes outputs identical across backends, and
byte-identical after an interruption.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

import terramask
from terramask.methods.ovss import OvssPredictor
from terramask.methods.vocabulary import ClassVocabulary
from terramask.options import PolygonOptions, Tiling
from terramask.pipeline.object_outputs import (
    SIDECAR_KINDS,
    label_and_score_writers,
    staged_paths,
    staged_sidecars,
    write_report,
)
from terramask.pipeline.segment_tiles import (
    LABEL_RASTER_NO_CLASS,
    LABEL_RASTER_NODATA,
    TileResult,
    compute_tile,
)
from terramask.pipeline.tile_store import TileStore
from terramask.protocols import Progress
from terramask.scene import Feature, OutputSet, Scene, Tile, plan_tiles
from terramask.scene.polygons import (
    finish_polygons,
    merge_across_seams,
    pixel_area_m2,
    to_scene_crs,
)
from terramask.scene.styles import Category, write_raster_styles, write_vector_style
from terramask.scene.vectors import VectorWriter
from terramask.scene.writers import PALETTE, write_preview

SEGMENT_OUTPUTS = (
    "labels", "score", "gpkg", "geojson", "preview", "labels_aux", "labels_style",
    "vector_style", "report",
)  # fmt: skip
#: The name of value 0 ("no class") in the label raster's category names.
NO_CLASS_NAME = "no class"

__all__ = ["LABEL_RASTER_NODATA", "LABEL_RASTER_NO_CLASS", "SEGMENT_OUTPUTS", "run_segment"]


def class_colormap(vocabulary: ClassVocabulary) -> dict[int, tuple[int, int, int, int]]:
    """Raster value k+1 for class k, colours cycling through PALETTE."""
    colours = {LABEL_RASTER_NO_CLASS: (0, 0, 0, 0)}
    for k in range(len(vocabulary)):
        colours[k + 1] = (*PALETTE[k % len(PALETTE)], 255)
    return colours


def class_categories(vocabulary: ClassVocabulary) -> list[Category]:
    """Each class as the label raster holds it: value k + 1, its name, its colour."""
    colours = class_colormap(vocabulary)
    return [Category(k + 1, name, colours[k + 1]) for k, name in enumerate(vocabulary.names)]


def label_raster_tags(vocabulary: ClassVocabulary) -> dict[str, str]:
    """GDAL metadata that says how to read the label raster: `terramask score` and other
    tools find the class of each value here (class k is value k + 1)."""
    return {
        "TERRAMASK_CLASSES": json.dumps(list(vocabulary.names)),
        "TERRAMASK_FIRST_CLASS_VALUE": "1",
        "TERRAMASK_NO_CLASS_VALUE": str(LABEL_RASTER_NO_CLASS),
    }


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
    """Files written (layers and report; their sidecars apart), per-class pixel counts and
    areas, tiles, timings."""

    outputs: dict[str, Path]
    classes: list[dict]
    tiles: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    sidecars: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "sidecars": {k: str(v) for k, v in self.sidecars.items()},
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
    tiling: Tiling = Tiling(),
    polygons: PolygonOptions = PolygonOptions(),
    settings: dict | None = None,
    progress: Progress | None = None,
) -> SegmentResult:
    """Compute the tiles not yet in the store, then assemble every output from the store.

    `settings` (what the run was asked) go into the report."""
    started = time.perf_counter()
    plan = plan_tiles(scene.width, scene.height, tiling)
    store = TileStore.for_scene(
        outputs.directory, outputs.stem, _fingerprint(scene, vocabulary, runner, tiling)
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

    with outputs.writing():
        t = time.perf_counter()
        assembled = _assemble(scene, vocabulary, store, len(plan), outputs, polygons)
        categories = class_categories(vocabulary)
        write_raster_styles(
            outputs.target("labels_aux"),
            outputs.target("labels_style"),
            categories,
            unnamed=NO_CLASS_NAME,
        )
        write_vector_style(outputs.target("vector_style"), categories, "label")
        timings["assemble"] = time.perf_counter() - t
        t = time.perf_counter()
        write_preview(
            outputs.target("preview"),
            scene,
            outputs.target("labels"),
            colormap=class_colormap(vocabulary),
            legend=[(c.name, c.colour) for c in categories],
        )
        timings["preview"] = time.perf_counter() - t

        pixel_area = pixel_area_m2(scene)
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
        written = staged_paths(outputs)
        sidecars = staged_sidecars(outputs)
        write_report(
            outputs,
            {
                # names, not paths: beside the report, and identical wherever the folder is
                "outputs": {k: v.name for k, v in written.items()},
                "sidecars": {k: v.name for k, v in sidecars.items()},
                "classes": classes,
                "tiles": tiles,
                **runner.description,
                "no_class_value": LABEL_RASTER_NO_CLASS,
                "nodata_value": LABEL_RASTER_NODATA,
                "settings": settings,
            },
        )
        committed = outputs.commit()
    store.remove()
    timings["total"] = time.perf_counter() - started
    return SegmentResult(
        outputs={k: v for k, v in committed.items() if k not in SIDECAR_KINDS},
        classes=classes,
        tiles={**tiles, "resumed": len(done)},
        timings=timings,
        sidecars={k: v for k, v in committed.items() if k in SIDECAR_KINDS},
    )


def _fingerprint(
    scene: Scene,
    vocabulary: ClassVocabulary,
    runner: TileRunner,
    tiling: Tiling,
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
        "tiling": [tiling.tile, tiling.overlap],
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
    polygons: PolygonOptions,
) -> _Assembled:
    """Write the COGs and the vectors from the stored tiles, in tile order, one at a time."""
    pixels = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    counts: Counter = Counter()
    skipped = 0
    seam_pieces: list[Feature] = []
    vectors = VectorWriter(
        crs=scene.crs,
        gpkg_path=outputs.target("gpkg"),
        geojson_path=outputs.target("geojson") if scene.georeferenced else None,
    )

    def add(features: list[Feature]) -> None:  # pixel coordinates in, scene CRS out
        finished = finish_polygons(to_scene_crs(features, scene), scene, polygons)
        counts.update(f.label for f in finished)
        vectors.add(finished)

    with (
        label_and_score_writers(
            scene,
            outputs,
            "labels",
            dtype="uint8",
            nodata=LABEL_RASTER_NODATA,
            colormap=class_colormap(vocabulary),
            tags=label_raster_tags(vocabulary),
        ) as (label_writer, score_writer),
        vectors,
    ):
        for result in store.results(range(tiles)):
            shape = (result.core.height, result.core.width)
            if result.skipped:
                skipped += 1
                label_writer.write(np.full(shape, LABEL_RASTER_NODATA, np.uint8), result.core)
                score_writer.write(np.full(shape, np.nan, np.float32), result.core)
                continue
            label_writer.write(result.values, result.core)
            score_writer.write(result.score, result.core)
            pixels += result.pixels
            pieces = list(zip(result.features, result.on_seam, strict=True))
            add([f for f, on_seam in pieces if not on_seam])
            seam_pieces += [f for f, on_seam in pieces if on_seam]
        add(merge_across_seams(seam_pieces))
    return _Assembled(pixels, counts, skipped)
