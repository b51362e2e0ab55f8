"""Calibrated refinement recovers a known systematic bias of MLLM boxes."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.methods.calibration import box_iou, fit_refinement, mean_refined_iou
from terramask.methods.geoseg import BoxRefinement


def test_box_iou_by_hand():
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0


def test_fit_recovers_a_shifted_and_tight_model():
    rng = np.random.default_rng(3)
    truth, predicted, sizes = [], [], []
    for _ in range(40):
        x1, y1 = rng.uniform(100, 600, size=2)
        w, h = rng.uniform(40, 200, size=2)
        truth.append([x1, y1, x1 + w, y1 + h])
        # this "model" reports boxes 30 % too narrow, 20 % too short, shifted right by 10 %
        px1 = x1 + 0.25 * w
        py1 = y1 + 0.1 * h
        predicted.append([px1, py1, px1 + 0.7 * w, py1 + 0.8 * h])
        sizes.append((1000, 1000))
    fitted, summary = fit_refinement(predicted, truth, sizes)
    assert summary["iou_calibrated"] > 0.97
    assert summary["iou_calibrated"] > summary["iou_geoseg"] > 0
    assert summary["iou_calibrated"] == pytest.approx(
        mean_refined_iou(fitted, predicted, truth, sizes)
    )
    assert isinstance(fitted, BoxRefinement)


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(InputError, match="at least 3"):
        fit_refinement([[0, 0, 1, 1]], [[0, 0, 1, 1]], [(10, 10)])
