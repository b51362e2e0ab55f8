"""Scores of binary masks answering referring/reasoning questions: gIoU, cIoU, Pr@t, GeoSeg's set.

Conventions, fixed here so that every data set is scored the same way, each checked against
the evaluation code behind the published numbers (UniGeoSeg's and SegEarth-R1's `eval.py`,
`compute_metric`, which LISA's evaluation also follows); `METRIC_CONVENTIONS` repeats them
for the reports:

- A sample's IoU is |P ∩ G| / |P ∪ G|; when both masks are empty ("no such object", rightly
  answered) it is 1, as the reference sets IoU = 1 where the union is 0. An empty prediction
  for a non-empty target, or a non-empty prediction for an empty one, scores 0. (The
  reference divides by union + 1e-5; we divide exactly, a difference below 1e-5 per sample.)
- gIoU is the mean of the per-sample IoUs (empty-vs-empty counting 1).
- cIoU is Σ intersection / Σ union over the samples; empty-vs-empty samples add nothing to
  either sum, as in the reference. With no union at all it is None (the reference's
  0 / 1e-10 would print 0).
- Pr@t is the fraction of samples whose IoU is strictly above t (the reference's
  `iou > threshold`): an IoU of exactly t does not count; an empty-vs-empty sample (IoU 1)
  counts at every t.
- GeoSeg-Bench's binary metrics are per-sample ratios of the confusion counts, averaged over
  samples (GeoSeg's evaluation scripts are not published; this is TerraMask's reading). A
  ratio whose denominator is 0 (e.g. precision with nothing predicted) scores 1 when the
  prediction equals the ground truth ("nothing to find, nothing wrongly found") and 0
  otherwise. F1 is 2PR/(P+R) per sample (0 when P+R = 0), which per sample equals Dice.
- The boundary F-score compares the 1-pixel inner boundaries of prediction and ground truth
  (mask minus its 3x3 erosion; the image frame is not a boundary, the object may go on
  beyond it). A boundary pixel is matched when a pixel of the other boundary lies within a
  Euclidean distance d: d = 2 pixels by default, or a fraction of the image diagonal
  (DAVIS uses 0.008). Both boundaries empty scores 1; one empty scores 0.

Results are in percent, rounded to 2 decimals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

#: IoU thresholds of the Pr@t columns published for RRSIS-D/EarthReason.
THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)

#: Default boundary tolerance in pixels.
BOUNDARY_TOLERANCE_PX = 2.0

#: How each reported score treats its edge cases, in one sentence each (for report.md).
METRIC_CONVENTIONS: dict[str, str] = {
    "gIoU": "mean of per-sample IoU; a sample with both masks empty scores 1 (as the "
    "reference evaluation code sets IoU = 1 where the union is 0).",
    "cIoU": "Σ intersection / Σ union over all samples; a sample with both masks empty adds "
    "nothing to either sum; '-' when no sample has any union.",
    "Pr@t": "share of samples whose IoU is strictly above t (the reference's `iou > t`); "
    "both-empty samples (IoU 1) count at every t.",
    "binary": "GeoSeg-Bench's IoU, Dice, accuracy, precision, recall, specificity, F1 and "
    "boundary F: per-sample ratios averaged over samples; a 0/0 ratio scores 1 when "
    "prediction and ground truth are equal, else 0; boundary F uses a 2-pixel tolerance "
    "(GeoSeg's own scripts are not published).",
}


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    return pred, gt


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts of P ∩ G and P ∪ G (the terms of both gIoU and cIoU)."""
    pred, gt = _pair(pred, gt)
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def sample_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU in 0..1; 1 when both masks are empty (a rightly answered "no such object"), as the
    reference evaluation code (UniGeoSeg, SegEarth-R1, LISA) scores a zero union."""
    inter, union = intersection_union(pred, gt)
    return 1.0 if union == 0 else inter / union


def _ratio(numerator: int, denominator: int, same: bool) -> float:
    if denominator == 0:
        return 1.0 if same else 0.0
    return numerator / denominator


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """The inner 1-pixel boundary: pixels of `mask` with a 3x3 neighbour outside it.

    Pixels outside the frame count as inside (border_value=1), so an object cut by the image
    edge gets no boundary along the edge: we cannot tell where it really ends.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=1)
    return mask & ~eroded


def boundary_tolerance(shape: Sequence[int], fraction: float | None = None) -> float:
    """d in pixels: `fraction` of the image diagonal (at least 1), or the 2-pixel default."""
    if fraction is None:
        return BOUNDARY_TOLERANCE_PX
    return max(1.0, math.ceil(fraction * math.hypot(shape[0], shape[1])))


def boundary_f_score(
    pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE_PX
) -> float:
    """F-score (0..1) of boundary pixels matched within Euclidean distance `tolerance`."""
    pred, gt = _pair(pred, gt)
    pred_b, gt_b = mask_boundary(pred), mask_boundary(gt)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 or n_gt == 0:
        return 1.0 if n_pred == n_gt else 0.0
    # Distance from every pixel to the nearest boundary pixel of the other mask.
    to_gt = ndimage.distance_transform_edt(~gt_b)
    to_pred = ndimage.distance_transform_edt(~pred_b)
    precision = np.count_nonzero(to_gt[pred_b] <= tolerance) / n_pred
    recall = np.count_nonzero(to_pred[gt_b] <= tolerance) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def binary_metrics(
    pred: np.ndarray, gt: np.ndarray, *, boundary_fraction: float | None = None
) -> dict[str, float]:
    """GeoSeg-Bench's per-sample metrics in 0..1 (see the module notes for 0/0 cases).

    `boundary_fraction` sets the boundary tolerance as a fraction of the diagonal; by
    default it is 2 pixels.
    """
    pred, gt = _pair(pred, gt)
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    tn = int(pred.size) - tp - fp - fn
    same = fp == 0 and fn == 0
    precision = _ratio(tp, tp + fp, same)
    recall = _ratio(tp, tp + fn, same)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    tolerance = boundary_tolerance(gt.shape, boundary_fraction)
    return {
        "iou": _ratio(tp, tp + fp + fn, same),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, same),
        "accuracy": _ratio(tp + tn, pred.size, same),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp, same),
        "f1": f1,
        "boundary_f": boundary_f_score(pred, gt, tolerance),
    }


@dataclass
class _Tally:
    """Running sums for one group of samples."""

    ious: list[float] = field(default_factory=list)
    intersection: int = 0
    union: int = 0
    binary: dict[str, float] = field(default_factory=dict)

    def result(self, thresholds: Sequence[float]) -> dict:
        n = len(self.ious)
        ious = np.asarray(self.ious, dtype=float)
        out: dict = {
            "samples": n,
            "giou": _percent(ious.mean()) if n else None,
            "ciou": _percent(self.intersection / self.union) if self.union else None,
        }
        for t in thresholds:
            # Strictly above t, as the reference's `iou > threshold`: 7/10 does not pass 0.7.
            out[f"pr@{t:g}"] = _percent(np.mean(ious > t)) if n else None
        if self.binary:
            out["binary"] = {k: _percent(v / n) for k, v in self.binary.items()}
        return out


class ReferringScores:
    """Per-sample IoUs and summed areas, overall and by group (difficulty level, task, ...).

    With `binary=True` GeoSeg-Bench's per-sample metrics are averaged too (they cost two
    distance transforms per sample for the boundary F-score).
    """

    def __init__(
        self,
        *,
        thresholds: Sequence[float] = THRESHOLDS,
        binary: bool = False,
        boundary_fraction: float | None = None,
    ) -> None:
        self.thresholds = tuple(thresholds)
        self.binary = binary
        self.boundary_fraction = boundary_fraction
        self._overall = _Tally()
        self._groups: dict[str, _Tally] = {}

    def update(self, pred: np.ndarray, gt: np.ndarray, group: str | None = None) -> float:
        """Add one sample; return its IoU in 0..1 (for the per-sample record)."""
        inter, union = intersection_union(pred, gt)
        iou = 1.0 if union == 0 else inter / union
        extra = {}
        if self.binary:
            extra = binary_metrics(pred, gt, boundary_fraction=self.boundary_fraction)
        tallies = [self._overall]
        if group is not None:
            tallies.append(self._groups.setdefault(group, _Tally()))
        for tally in tallies:
            tally.ious.append(iou)
            tally.intersection += inter
            tally.union += union
            for name, value in extra.items():
                tally.binary[name] = tally.binary.get(name, 0.0) + value
        return iou

    @property
    def samples(self) -> int:
        return len(self._overall.ious)

    def result(self) -> dict:
        """{"overall": {...}, "groups": {name: {...}}}: samples, giou, ciou, pr@t (, binary)."""
        return {
            "overall": self._overall.result(self.thresholds),
            "groups": {
                name: tally.result(self.thresholds) for name, tally in sorted(self._groups.items())
            },
        }


def _percent(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(100.0 * value, 2)
