"""Fit the box refinement to labelled data: the expansion and shift that maximise IoU.

GeoSeg's fixed correction was tuned on its own MLLM and imagery; another model (or another
GSD) is biased differently. Given the MLLM's boxes and ground-truth boxes for a few dozen
samples, find the per-side expansion and shift under which refined boxes overlap the truth
best, and save it for `AskOptions.refine` 'calibrated'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple

import numpy as np
from scipy.optimize import minimize

from terramask.errors import InputError
from terramask.methods.geoseg import GEOSEG_REFINEMENT, BoxRefinement, refine_box


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mean_refined_iou(
    refinement: BoxRefinement,
    predicted: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    image_sizes: Sequence[tuple[int, int]],
) -> float:
    """Mean IoU between refined predicted boxes and the true boxes."""
    return float(
        np.mean(
            [
                box_iou(refine_box(p, size, refinement), t)
                for p, t, size in zip(predicted, truth, image_sizes, strict=True)
            ]
        )
    )


def fit_refinement(
    predicted: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    image_sizes: Sequence[tuple[int, int]],
    *,
    start: BoxRefinement = GEOSEG_REFINEMENT,
) -> tuple[BoxRefinement, dict]:
    """The refinement maximising mean IoU (Nelder-Mead from `start` and from no refinement).

    Returns it with a summary: IoU with no refinement, with GeoSeg's, and with the fit.
    """
    if len(predicted) < 3 or len(predicted) != len(truth) or len(truth) != len(image_sizes):
        raise InputError(
            f"Calibration needs at least 3 samples, each with a predicted box, a true box and an "
            f"image size; got {len(predicted)} predicted, {len(truth)} true boxes and "
            f"{len(image_sizes)} sizes."
        )
    min_size = start.min_size

    def loss(params: np.ndarray) -> float:
        candidate = BoxRefinement(*params, min_size=min_size)
        return -mean_refined_iou(candidate, predicted, truth, image_sizes)

    best = None
    for origin in (start, BoxRefinement.none()):
        x0 = np.array(astuple(origin)[:6])
        result = minimize(loss, x0, method="Nelder-Mead",
                          options={"xatol": 1e-3, "fatol": 1e-5, "maxiter": 2000})  # fmt: skip
        if best is None or result.fun < best.fun:
            best = result
    fitted = BoxRefinement(*(float(v) for v in best.x), min_size=min_size)
    summary = {
        "samples": len(predicted),
        "iou_unrefined": mean_refined_iou(BoxRefinement.none(), predicted, truth, image_sizes),
        "iou_geoseg": mean_refined_iou(GEOSEG_REFINEMENT, predicted, truth, image_sizes),
        "iou_calibrated": -float(best.fun),
    }
    return fitted, summary
