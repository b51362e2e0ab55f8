"""Score a folder of predicted label maps against a folder of ground truth, matched by name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from terramask.errors import InputError
from terramask.eval.datasets import label_files, read_label
from terramask.eval.metrics import SegmentationScores
from terramask.protocols import Progress


def score_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    classes: Sequence[str],
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """mIoU, aAcc and per-class IoU (percent) over every prediction that has a ground truth.

    Predictions hold class indices 0..K-1 in `classes` order (any other value is "no class");
    ground truth is as stored, reduced here when `reduce_zero_label`. Files are PNG or TIFF,
    paired by stem; files on one side only are counted, not scored.
    """
    if not classes:
        raise InputError("No class was given: pass the class names in index order, e.g. a,b,c.")
    preds = _folder(Path(pred_dir), "prediction")
    truths = _folder(Path(gt_dir), "ground-truth")
    keys = sorted(k for k in preds if k in truths)
    if not keys:
        raise InputError(
            f"No prediction in {pred_dir} has a ground truth of the same name in {gt_dir} "
            f"(e.g. {next(iter(preds))} vs {next(iter(truths))}). Files are paired by name "
            "without extension; rename them to match."
        )
    scores = SegmentationScores(
        classes, ignore_index=ignore_index, reduce_zero_label=reduce_zero_label
    )
    for done, key in enumerate(keys, start=1):
        pred, gt = read_label(preds[key]), read_label(truths[key])
        if pred.shape != gt.shape:
            raise InputError(
                f"The prediction {preds[key]} is {pred.shape[1]}x{pred.shape[0]} pixels but its "
                f"ground truth {truths[key]} is {gt.shape[1]}x{gt.shape[0]}. Predictions must "
                "be at the ground truth's resolution; resample them (nearest) first."
            )
        scores.update(pred, gt)
        if progress:
            progress("score", done, len(keys))
    result = scores.result()
    result.update(
        classes=list(classes),
        ignore_index=ignore_index,
        reduce_zero_label=reduce_zero_label,
        unmatched_predictions=len(preds) - len(keys),
        unmatched_ground_truth=len(truths) - len(keys),
    )
    return result


def _folder(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(
            f"The {what} folder {folder} does not exist or is not a folder. Give the folder "
            "that holds the PNG or TIFF label maps."
        )
    files = label_files(folder)
    if not files:
        raise InputError(
            f"The {what} folder {folder} holds no PNG or TIFF label map. Give the folder "
            "that holds them (single-band class ids)."
        )
    return files
