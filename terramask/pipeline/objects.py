"""Found objects kept as small crops, painted into output blocks on demand.

Holding each object as a crop around its mask (not as a scene-sized array) is what keeps
memory flat as scenes grow: a run's memory is the objects' own size plus one block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from terramask.methods.interactive import ObjectMask


@dataclass(frozen=True)
class FoundObject:
    """One segmented object: a crop of its mask and logits, placed in scene pixels."""

    id: int
    name: str
    score: float
    mask: np.ndarray  # (h, w) bool crop
    logits: np.ndarray  # (h, w) float32 crop
    to_scene: Affine  # crop pixel -> scene pixel

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())

    def scene_bounds(self) -> tuple[float, float, float, float]:
        """(col0, row0, col1, row1) of the crop in scene pixels."""
        h, w = self.mask.shape
        xs, ys = zip(*(self.to_scene @ c for c in ((0, 0), (w, 0), (0, h), (w, h))), strict=True)
        return min(xs), min(ys), max(xs), max(ys)


def crop_object(
    obj_id: int, name: str, found: ObjectMask, image_to_scene: Affine, pad: int = 1
) -> FoundObject:
    """Cut an object's mask and logits down to its bounding box (plus `pad` pixels)."""
    rows = np.flatnonzero(found.mask.any(axis=1))
    cols = np.flatnonzero(found.mask.any(axis=0))
    if len(rows) == 0:
        r0 = r1 = c0 = c1 = 0
    else:
        h, w = found.mask.shape
        r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, h)
        c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, w)
    return FoundObject(
        id=obj_id,
        name=name,
        score=found.score,
        mask=found.mask[r0:r1, c0:c1].copy(),
        logits=found.logits[r0:r1, c0:c1].astype(np.float32, copy=True),
        to_scene=image_to_scene @ Affine.translation(c0, r0),
    )


def paint_block(objects: Sequence[FoundObject], block: Window) -> tuple[np.ndarray, np.ndarray]:
    """Object ids (0 = none) and mask probabilities over a block of scene pixels.

    Where objects overlap, the one with the higher logit owns the pixel. Objects segmented
    on a decimated window are resampled bilinearly (on logits) to full resolution.
    """
    h, w = int(block.height), int(block.width)
    ids = np.zeros((h, w), dtype=np.int64)
    best = np.full((h, w), -np.inf, dtype=np.float32)
    for obj in objects:
        if obj.is_empty:
            continue
        logits = _logits_on_block(obj, block)
        if logits is None:
            continue
        wins = (logits > 0) & (logits > best)
        ids[wins] = obj.id
        best = np.maximum(best, logits)
    prob = np.where(ids > 0, 1.0 / (1.0 + np.exp(-np.clip(best, -50, 50))), 0.0)
    return ids, prob.astype(np.float32)


def _logits_on_block(obj: FoundObject, block: Window) -> np.ndarray | None:
    c0, r0, c1, r1 = obj.scene_bounds()
    bc0, br0 = block.col_off, block.row_off
    bc1, br1 = bc0 + block.width, br0 + block.height
    if c1 <= bc0 or c0 >= bc1 or r1 <= br0 or r0 >= br1:
        return None
    out = np.full((int(block.height), int(block.width)), -np.inf, dtype=np.float32)
    # Scene pixel centres of the overlap, mapped into the crop's pixel frame.
    ic0, ic1 = max(int(np.floor(c0)), bc0), min(int(np.ceil(c1)), bc1)
    ir0, ir1 = max(int(np.floor(r0)), br0), min(int(np.ceil(r1)), br1)
    cols, rows = np.meshgrid(np.arange(ic0, ic1) + 0.5, np.arange(ir0, ir1) + 0.5)
    to_crop = ~obj.to_scene
    u = to_crop.a * cols + to_crop.b * rows + to_crop.c - 0.5
    v = to_crop.d * cols + to_crop.e * rows + to_crop.f - 0.5
    h, w = obj.logits.shape
    inside = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    finite = np.where(np.isfinite(obj.logits), obj.logits, -50.0)
    sampled = ndimage.map_coordinates(finite, [v, u], order=1, mode="nearest")
    out[ir0 - br0 : ir1 - br0, ic0 - bc0 : ic1 - bc0] = np.where(inside, sampled, -np.inf)
    return out
