"""Semantic-segmentation scores accumulated over a data set, as mmsegmentation's IoUMetric does.

Intersections, prediction areas and label areas are summed per class over every image
before any ratio is taken, so one large image weighs more than a small one; that is how the
published OVSS numbers were computed, and ours must be comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """LoveDA/ISPRS encoding: 0 (no-data) becomes `ignore_index`, every other id moves down one."""
    label = np.asarray(label).astype(np.int64)
    out = label - 1
    out[label == 0] = ignore_index
    out[label == ignore_index] = ignore_index
    return out


def value_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an integer array and their pixel counts (int64, ascending)."""
    array = np.asarray(array)
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:
        counts = np.bincount(array.ravel())
        values = np.flatnonzero(counts)
        return values.astype(np.int64), counts[values].astype(np.int64)
    values, counts = np.unique(array, return_counts=True)
    return values.astype(np.int64), counts.astype(np.int64)


def expected_label_values(
    values: np.ndarray, k: int, ignore_index: int, reduce_zero_label: bool
) -> np.ndarray:
    """Which stored ground-truth `values` a K-class list expects: class ids 0..K-1 (1..K and
    0 with `reduce_zero_label`) and `ignore_index`."""
    values = np.asarray(values, dtype=np.int64)
    top = k if reduce_zero_label else k - 1
    return ((values >= 0) & (values <= top)) | (values == ignore_index)


class SegmentationScores:
    """Per-class intersection, union and label areas summed over the images seen so far.

    Pixels whose ground truth equals `ignore_index` count nowhere. A predicted value outside
    0..K-1 (e.g. -1, "no class") counts in no class's prediction area, so the ground-truth
    pixel under it is simply missed: lower IoU and accuracy for its class.

    A ground-truth value that is neither a class id nor ignored (e.g. 255 with another
    `ignore_index`, or K and above) is scored as mmsegmentation scores it: in no class's label
    area, but the class predicted there counts it as a false positive. Such pixels are
    counted and reported by `result()` under `unexpected_labels`, never dropped silently;
    `terramask.eval.label_check` stops a run when they are many.
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
    ) -> None:
        self.classes = tuple(classes)
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        k = len(self.classes)
        self.intersection = np.zeros(k, dtype=np.int64)
        self.pred_area = np.zeros(k, dtype=np.int64)
        self.label_area = np.zeros(k, dtype=np.int64)
        self.images = 0
        self.pixels = 0
        self.unexpected: dict[int, int] = {}

    def update(
        self, pred: np.ndarray, gt: np.ndarray, *, leave_out: np.ndarray | None = None
    ) -> None:
        """Add one image: `pred` class indices, `gt` labels as stored (reduced here if asked).

        `leave_out` (boolean, like `gt`) marks pixels scored nowhere, as if ignored (e.g.
        where the prediction has no data).
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from label shape {gt.shape}")
        if leave_out is not None and np.shape(leave_out) != gt.shape:
            raise ValueError(f"leave_out shape {np.shape(leave_out)} differs from {gt.shape}")
        values, counts = value_counts(gt)
        odd = ~expected_label_values(
            values, len(self.classes), self.ignore_index, self.reduce_zero_label
        )
        for value, count in zip(values[odd].tolist(), counts[odd].tolist(), strict=True):
            self.unexpected[value] = self.unexpected.get(value, 0) + count
        self.pixels += gt.size
        if self.reduce_zero_label:
            gt = reduce_zero_label(gt, self.ignore_index)
        valid = gt != self.ignore_index
        if leave_out is not None:
            valid &= ~np.asarray(leave_out, dtype=bool)
        pred = pred[valid].astype(np.int64)
        gt = gt[valid].astype(np.int64)
        k = len(self.classes)
        self.intersection += _histogram(pred[pred == gt], k)
        self.pred_area += _histogram(pred, k)
        self.label_area += _histogram(gt, k)
        self.images += 1

    def result(self) -> dict:
        """mIoU, aAcc, mAcc and per-class IoU/Acc in percent (NaN-free: absent classes are None).

        A class with an empty union (in neither ground truth nor prediction) has no IoU and is
        left out of the mean, as mmsegmentation's nanmean does; one only predicted scores 0.
        """
        union = self.pred_area + self.label_area - self.intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.intersection / union
            acc = self.intersection / self.label_area
        total_label = self.label_area.sum()
        aacc = self.intersection.sum() / total_label if total_label else float("nan")
        return {
            "miou": _percent(_nanmean(iou)),
            "aacc": _percent(aacc),
            "macc": _percent(_nanmean(acc)),
            "iou": {name: _percent(v) for name, v in zip(self.classes, iou, strict=True)},
            "acc": {name: _percent(v) for name, v in zip(self.classes, acc, strict=True)},
            "pixels": {name: int(v) for name, v in zip(self.classes, self.label_area, strict=True)},
            "images": self.images,
            "unexpected_labels": self.unexpected_summary(),
        }

    def unexpected_summary(self, top: int = 10) -> dict:
        """Ground-truth pixels with values neither a class id nor ignored: how many, their
        percentage of every ground-truth pixel, and the `top` most frequent values."""
        total = sum(self.unexpected.values())
        ranked = sorted(self.unexpected.items(), key=lambda item: (-item[1], item[0]))
        return {
            "pixels": int(total),
            "percent": round(100.0 * total / self.pixels, 4) if self.pixels else 0.0,
            "values": {str(value): int(count) for value, count in ranked[:top]},
        }


def _histogram(values: np.ndarray, k: int) -> np.ndarray:
    # torch.histc(min=0, max=k-1) as mmseg uses it: values outside 0..k-1 are dropped.
    inside = values[(values >= 0) & (values < k)]
    return np.bincount(inside, minlength=k)[:k].astype(np.int64)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _percent(value: float) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(100.0 * value, 2)
