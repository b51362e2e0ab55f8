"""One `segment` tile: predict its whole window, keep its core's labels, scores and polygons.

This is the unit of work every backend runs (in process, or on a Ray actor) and the tile
store keeps; it holds nothing of other tiles, so tiles can run anywhere, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from rasterio.windows import Window

from terramask.methods.ovss import OvssPredictor
from terramask.methods.vocabulary import ClassVocabulary
from terramask.scene import Feature, Scene, Tile, area_m2, polygonize
from terramask.scene.vectors import to_pyproj

LABEL_NODATA = 255
NO_CLASS_VALUE = 0


@dataclass
class TileResult:
    """A finished tile: core label values and scores (None when it had no data), its polygons.

    Features are in scene pixel coordinates. `on_seam[i]` says whether `features[i]` touches
    a core edge shared with another tile (such pieces are merged with their neighbours' once
    all tiles are done).
    """

    index: int
    core: Window
    values: np.ndarray | None  # (h, w) uint8: class k is k+1, NO_CLASS_VALUE, LABEL_NODATA
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
    scene: Scene, tile: Tile, predictor: OvssPredictor, vocabulary: ClassVocabulary
) -> TileResult:
    """Predict `tile` on its whole window (overlap is context) and keep its core."""
    window = scene.read(tile.window)
    core = _core_slices(tile.window, tile.core)
    valid = window.valid[core]
    pixels = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    if not valid.any():  # nothing to see: no model call
        return TileResult(tile.index, tile.core, None, None, pixels)
    labels, confidence = predictor.predict(window.image, vocabulary, valid=window.valid)
    values = np.where(labels[core] >= 0, labels[core] + 1, NO_CLASS_VALUE)
    values = np.where(valid, values, LABEL_NODATA).astype(np.uint8)
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
    seams = _inner_seams(scene, tile.core, transform)
    on_seam = [seams is not None and f.geometry.intersects(seams) for f in features]
    return TileResult(tile.index, tile.core, values, score, pixels, features, on_seam)


def to_scene_crs(features: list[Feature], scene: Scene) -> list[Feature]:
    """Pixel-coordinate features on the scene's grid, with their ground areas."""
    t = scene.transform
    crs = to_pyproj(scene.crs) if scene.georeferenced else None
    moved = []
    for f in features:
        geometry = shapely.affinity.affine_transform(f.geometry, [t.a, t.b, t.d, t.e, t.c, t.f])
        area = area_m2(geometry, crs) if crs is not None else None
        moved.append(Feature(geometry, f.label, f.score, area, f.properties))
    return moved


def _core_slices(window: Window, core: Window) -> tuple[slice, slice]:
    r0 = core.row_off - window.row_off
    c0 = core.col_off - window.col_off
    return slice(r0, r0 + core.height), slice(c0, c0 + core.width)


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
