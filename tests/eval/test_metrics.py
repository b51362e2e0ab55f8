"""Data-set-level IoU as mmsegmentation's IoUMetric computes it, checked on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.eval.metrics import SegmentationScores, reduce_zero_label


def test_hand_computed_iou_accuracy_and_means():
    gt = np.array([[0, 0, 1], [1, 1, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 2]])
    scores = SegmentationScores(["a", "b", "c"])
    scores.update(pred, gt)
    r = scores.result()
    # a: ∩1 ∪2; b: ∩2 ∪4 (pred 3, gt 3); c: ∩1 ∪2
    assert r["iou"] == {"a": 50.0, "b": 50.0, "c": 50.0}
    assert r["acc"] == {"a": 50.0, "b": pytest.approx(66.67), "c": 100.0}
    assert r["miou"] == 50.0
    assert r["aacc"] == pytest.approx(100 * 4 / 6, abs=0.005)
    assert r["macc"] == pytest.approx(100 * (0.5 + 2 / 3 + 1) / 3, abs=0.005)
    assert r["images"] == 1


def test_ignored_pixels_count_nowhere():
    gt = np.array([[255, 255, 0, 1]])
    pred = np.array([[1, 0, 0, 1]])
    r = _score(pred, gt, ["a", "b"])
    assert r["iou"] == {"a": 100.0, "b": 100.0}
    assert r["pixels"] == {"a": 1, "b": 1}


def test_class_absent_from_both_is_skipped_and_predicted_only_scores_zero():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 1, 2]])
    r = _score(pred, gt, ["a", "b", "c", "d"])
    assert r["iou"]["a"] == 100.0
    assert r["iou"]["b"] == 50.0
    assert r["iou"]["c"] == 0.0  # predicted, never in ground truth
    assert r["iou"]["d"] is None  # in neither: no IoU, not in the mean
    assert r["acc"]["c"] is None
    assert r["miou"] == pytest.approx((100 + 50 + 0) / 3, abs=0.005)


def test_reduce_zero_label_ignores_zero_and_shifts_the_rest():
    stored = np.array([[0, 1, 2, 3, 255]])
    assert reduce_zero_label(stored).tolist() == [[255, 0, 1, 2, 255]]
    pred = np.array([[2, 0, 1, 1, 0]])
    scores = SegmentationScores(["x", "y", "z"], reduce_zero_label=True)
    scores.update(pred, stored)
    r = scores.result()
    # after reduction gt = [ign, 0, 1, 2, ign]: x ∩1 ∪1, y ∩1 ∪2 (pred y twice), z ∪1 ∩0
    assert r["iou"] == {"x": 100.0, "y": 50.0, "z": 0.0}


def test_no_class_predictions_are_misses():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, -1, 1, 255]])
    r = _score(pred, gt, ["a", "b"])
    assert r["iou"] == {"a": 50.0, "b": 50.0}
    assert r["aacc"] == 50.0


def test_sums_over_images_before_dividing():
    scores = SegmentationScores(["a", "b"])
    scores.update(np.zeros((1, 1), int), np.zeros((1, 1), int))  # a perfect, b absent
    scores.update(np.zeros((1, 3), int), np.array([[0, 1, 1]]))  # a ∩1 ∪3, b ∪2 ∩0
    r = scores.result()
    assert r["iou"]["a"] == pytest.approx(100 * 2 / 4)  # not the per-image mean (0.67)
    assert r["iou"]["b"] == 0.0
    assert r["images"] == 2


def test_shape_mismatch_is_a_bug_not_silence():
    with pytest.raises(ValueError, match="shape"):
        SegmentationScores(["a"]).update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_nothing_scored_gives_no_numbers():
    r = SegmentationScores(["a"]).result()
    assert r["miou"] is None and r["aacc"] is None


def test_ground_truth_values_at_or_above_k_are_reported_not_dropped():
    gt = np.array([[0, 1, 5, 5, 255]])
    pred = np.array([[0, 1, 1, 0, 0]])
    r = _score(pred, gt, ["a", "b"])
    assert r["unexpected_labels"] == {"pixels": 2, "percent": 40.0, "values": {"5": 2}}
    # scored as mmsegmentation does: in no label area, a false positive for the class predicted
    assert r["iou"] == {"a": 50.0, "b": 50.0} and r["pixels"] == {"a": 1, "b": 1}
    reduced = _score(np.zeros((1, 4), int), np.array([[0, 1, 2, 3]]), ["x", "y"],
                     reduce_zero_label=True)  # fmt: skip
    assert reduced["unexpected_labels"]["values"] == {"3": 1}  # stored 0 and 1..K are expected
    assert _score(pred, np.zeros((1, 5), int), ["a", "b"])["unexpected_labels"]["pixels"] == 0


def test_left_out_pixels_count_nowhere():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[1, 0, 1, 0]])
    leave_out = np.array([[True, False, False, True]])
    r = _score(pred, gt, ["a", "b"], leave_out=leave_out)
    assert r["iou"] == {"a": 100.0, "b": 100.0} and r["pixels"] == {"a": 1, "b": 1}


def _score(pred, gt, classes, leave_out=None, **kw):
    scores = SegmentationScores(classes, **kw)
    if leave_out is None:
        scores.update(pred, gt)
    else:
        scores.update(pred, gt, leave_out=leave_out)
    return scores.result()
