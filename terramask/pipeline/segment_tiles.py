"""One `segment` tile: predict its whole window, keep its core's labels, scores and polygons.

This is the unit of work every backend runs (in process, or on a Ray actor) and the tile
store keeps; it holds nothing of other tiles, so tiles can run anywhere, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from rasterio.windows import Window

from terramask.methods.ovss import OvssPredictor
from terramask.methods.vocabulary import ClassVocabulary
from terramask.protocols import SceneReader
from terramask.scene import Feature, Tile, polygonize
from terramask.scene.polygons import seam_lines

#: Values of the label raster `segment` writes besides the classes (class k is k + 1).
LABEL_RASTER_NODATA = 255
LABEL_RASTER_NO_CLASS = 0


@dataclass
class TileResult:
    """A finished tile: core label values and scores (None when it had no data), its polygons.

    Features are in scene pixel coordinates. `on_seam[i]` says whether `features[i]` touches
    a core edge shared with another tile (such pieces are merged with their neighbours' once
    all tiles are done).
    """

    index: int
    core: Window
    values: np.ndarray | None  # (h, w) uint8 label raster values
    score: np.ndarray | None  # (h, w) float32, NaN where invalid
    pixels: np.ndarray  # per raster value 0..len(vocabulary), valid pixels only
    features: list[Feature] = field(default_factory=list)
    on_seam: list[bool] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return self.values is None


def class_names(vocabulary: ClassVocabulary) -> dict[int, str]:
    """Raster value k+1 names class k."""
    return {k + 1: name for k, name in enumerate(vocabulary.names)}


def compute_tile(
    scene: SceneReader, tile: Tile, predictor: OvssPredictor, vocabulary: ClassVocabulary
) -> TileResult:
    """Predict `tile` on its whole window (overlap is context) and keep its core."""
    window = scene.read(tile.window)
    core = _core_slices(tile.window, tile.core)
    valid = window.valid[core]
    pixels = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    if not valid.any():  # nothing to see: no model call
        return TileResult(tile.index, tile.core, None, None, pixels)
    labels, confidence = predictor.predict(window.image, vocabulary, valid=window.valid)
    values = np.where(labels[core] >= 0, labels[core] + 1, LABEL_RASTER_NO_CLASS)
    values = np.where(valid, values, LABEL_RASTER_NODATA).astype(np.uint8)
    score = np.where(valid, confidence[core], np.nan).astype(np.float32)
    pixels += np.bincount(values[valid].ravel(), minlength=len(pixels))[: len(pixels)]
    # Polygons in scene pixel coordinates (exact for integer offsets): edges that two tiles
    # share then coincide exactly, which merging across seams relies on. `to_scene_crs`
    # maps them once merged.
    transform = Affine.translation(tile.core.col_off, tile.core.row_off)
    features = polygonize(
        values,
        transform,
        names=class_names(vocabulary),
        score_map=np.nan_to_num(score),
        valid=valid,
    )
    seams = seam_lines(tile.core, scene.width, scene.height)
    on_seam = [seams is not None and f.geometry.intersects(seams) for f in features]
    return TileResult(tile.index, tile.core, values, score, pixels, features, on_seam)


def _core_slices(window: Window, core: Window) -> tuple[slice, slice]:
    r0 = core.row_off - window.row_off
    c0 = core.col_off - window.col_off
    return slice(r0, r0 + core.height), slice(c0, c0 + core.width)
