"""Referring/reasoning metrics checked against values computed by hand on tiny masks."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.eval.referring_metrics import (
    ReferringScores,
    binary_metrics,
    boundary_f_score,
    boundary_tolerance,
    intersection_union,
    mask_boundary,
    sample_iou,
)


def _mask(shape, *boxes):
    """A bool mask with the given (row0, row1, col0, col1) half-open boxes set."""
    out = np.zeros(shape, dtype=bool)
    for r0, r1, c0, c1 in boxes:
        out[r0:r1, c0:c1] = True
    return out


def test_sample_iou_and_the_empty_cases():
    pred = np.array([[1, 1, 0, 0]], dtype=bool)
    gt = np.array([[0, 1, 1, 0]], dtype=bool)
    empty = np.zeros((1, 4), dtype=bool)
    assert intersection_union(pred, gt) == (1, 3)
    assert sample_iou(pred, gt) == pytest.approx(1 / 3)
    assert sample_iou(empty, empty) == 1.0  # "no such object", rightly answered
    assert sample_iou(empty, gt) == 0.0
    assert sample_iou(pred, empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        sample_iou(pred, np.zeros((2, 2), bool))


def _four_samples(scores: ReferringScores) -> list[float]:
    shape = (4, 10)
    samples = [
        # IoU 1/3: ∩1 ∪3
        (_mask(shape, (0, 1, 0, 2)), _mask(shape, (0, 1, 1, 3)), "L1"),
        # empty vs empty: IoU 1, adds nothing to the cIoU sums
        (_mask(shape), _mask(shape), "L1"),
        # IoU 0.8: prediction 4 pixels inside a 5-pixel target
        (_mask(shape, (1, 2, 0, 4)), _mask(shape, (1, 2, 0, 5)), "L2"),
        # empty prediction, 2-pixel target: IoU 0, ∪2
        (_mask(shape), _mask(shape, (3, 4, 0, 2)), "L2"),
    ]
    return [scores.update(pred, gt, group) for pred, gt, group in samples]


def test_giou_ciou_precision_at_thresholds_and_groups():
    scores = ReferringScores()
    ious = _four_samples(scores)
    assert ious == pytest.approx([1 / 3, 1.0, 0.8, 0.0])
    r = scores.result()
    overall = r["overall"]
    assert overall["samples"] == 4
    assert overall["giou"] == pytest.approx(100 * (1 / 3 + 1 + 0.8 + 0) / 4, abs=0.005)  # 53.33
    assert overall["ciou"] == 50.0  # (1 + 0 + 4 + 0) / (3 + 0 + 5 + 2)
    assert [overall[f"pr@{t}"] for t in ("0.5", "0.6", "0.7", "0.8", "0.9")] == [
        50.0,
        50.0,
        50.0,
        25.0,  # an IoU of exactly 0.8 does not pass 0.8: strictly above, as the reference
        25.0,
    ]
    assert "binary" not in overall
    l1, l2 = r["groups"]["L1"], r["groups"]["L2"]
    assert (l1["samples"], l1["giou"], l1["ciou"]) == (2, 66.67, 33.33)
    assert (l2["samples"], l2["giou"], l2["ciou"]) == (2, 40.0, 57.14)  # cIoU 4/7
    assert l2["pr@0.9"] == 0.0 and l1["pr@0.9"] == 50.0


def test_precision_is_strictly_above_the_threshold_and_empty_pairs_pass_every_threshold():
    shape = (1, 10)
    scores = ReferringScores()
    for n in (5, 6, 7, 8, 9):  # IoU exactly 0.5, 0.6, 0.7, 0.8, 0.9
        scores.update(_mask(shape, (0, 1, 0, n)), _mask(shape, (0, 1, 0, 10)))
    scores.update(_mask(shape), _mask(shape))  # both empty: IoU 1
    overall = scores.result()["overall"]
    # at t, only the IoUs above t and the empty pair: 0.5 -> 0.6..0.9 + empty = 5 of 6
    assert [overall[f"pr@{t}"] for t in ("0.5", "0.6", "0.7", "0.8", "0.9")] == [
        pytest.approx(100 * k / 6, abs=0.005) for k in (5, 4, 3, 2, 1)
    ]
    assert overall["giou"] == pytest.approx(100 * (0.5 + 0.6 + 0.7 + 0.8 + 0.9 + 1) / 6, abs=0.005)
    assert overall["ciou"] == 70.0  # (5+6+7+8+9) / 50: the empty pair adds to neither sum


def test_ciou_is_none_when_nothing_was_ever_in_any_mask_and_empty_results():
    scores = ReferringScores()
    scores.update(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    r = scores.result()
    assert r["overall"]["giou"] == 100.0 and r["overall"]["ciou"] is None
    assert r["groups"] == {}
    nothing = ReferringScores().result()["overall"]
    assert nothing["samples"] == 0 and nothing["giou"] is None and nothing["pr@0.5"] is None


def test_binary_metrics_by_hand():
    gt = _mask((4, 4), (0, 2, 0, 2))
    pred = _mask((4, 4), (0, 2, 1, 3))
    m = binary_metrics(pred, gt)  # tp 2, fp 2, fn 2, tn 10
    assert m["iou"] == pytest.approx(2 / 6)
    assert m["dice"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(12 / 16)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(10 / 12)
    assert m["f1"] == pytest.approx(0.5)
    # Every boundary pixel lies within 2 px of the other boundary.
    assert m["boundary_f"] == pytest.approx(1.0)


def test_binary_metrics_zero_denominators():
    empty = np.zeros((4, 5), bool)
    gt = _mask((4, 5), (0, 2, 0, 2))
    both_empty = binary_metrics(empty, empty)
    assert set(both_empty.values()) == {1.0}

    missed = binary_metrics(empty, gt)  # tp 0, fp 0, fn 4, tn 16
    assert missed["iou"] == missed["dice"] == missed["f1"] == 0.0
    assert missed["precision"] == 0.0  # 0/0, prediction differs from the truth
    assert missed["recall"] == 0.0
    assert missed["specificity"] == 1.0  # 16/16
    assert missed["accuracy"] == pytest.approx(16 / 20)
    assert missed["boundary_f"] == 0.0

    invented = binary_metrics(gt, empty)  # tp 0, fp 4, fn 0, tn 16
    assert invented["precision"] == 0.0
    assert invented["recall"] == 0.0  # 0/0, prediction differs from the truth
    assert invented["specificity"] == pytest.approx(16 / 20)
    assert invented["boundary_f"] == 0.0

    full = np.ones((3, 3), bool)
    all_target = binary_metrics(full, full)
    assert all_target["specificity"] == 1.0  # 0/0, identical masks
    assert all_target["boundary_f"] == 1.0  # the frame is no boundary: both empty


def test_boundary_of_a_square_and_the_frame():
    square = _mask((30, 30), (10, 20, 10, 20))
    ring = mask_boundary(square)
    assert ring.sum() == 36 and not ring[11:19, 11:19].any()
    at_edge = mask_boundary(_mask((6, 6), (0, 3, 0, 3)))
    # Only the sides facing the inside of the image are boundary.
    assert sorted(zip(*np.nonzero(at_edge), strict=True)) == [
        (0, 2),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ]


def test_boundary_f_of_shifted_squares_with_a_2_pixel_tolerance():
    gt = _mask((30, 30), (10, 20, 10, 20))
    by_one = _mask((30, 30), (10, 20, 11, 21))
    by_five = _mask((30, 30), (10, 20, 15, 25))
    # Shifted by 1: every boundary pixel is within 1 px of the other ring.
    assert boundary_f_score(by_one, gt, 2) == 1.0
    # With less than a pixel of tolerance only the 18 shared top/bottom pixels of 36 match.
    assert boundary_f_score(by_one, gt, 0.5) == pytest.approx(0.5)
    # Shifted by 5, of each 36-pixel ring: 7 on the top row (5 shared, 2 within 1-2 px),
    # 7 on the bottom row, 4 on the near side (rows within 2 px of top/bottom) -> 18/36.
    assert boundary_f_score(by_five, gt, 2) == pytest.approx(0.5)
    assert binary_metrics(by_five, gt)["boundary_f"] == pytest.approx(0.5)


def test_boundary_tolerance_default_and_diagonal_fraction():
    assert boundary_tolerance((300, 400)) == 2.0
    assert boundary_tolerance((300, 400), 0.008) == 4  # ceil(0.008 * 500)
    assert boundary_tolerance((10, 10), 0.008) == 1.0  # never below one pixel


def test_binary_means_are_averaged_per_group():
    scores = ReferringScores(binary=True)
    _four_samples(scores)
    r = scores.result()
    binary = r["overall"]["binary"]
    assert binary["iou"] == r["overall"]["giou"]
    # dice per sample: 2/4, 1, 8/9, 0
    assert binary["dice"] == pytest.approx(100 * (0.5 + 1 + 8 / 9 + 0) / 4, abs=0.005)
    assert binary["f1"] == binary["dice"]
    # recall: 1/2, 1 (0/0 identical), 4/5, 0
    assert binary["recall"] == pytest.approx(100 * (0.5 + 1 + 0.8) / 4, abs=0.005)
    assert r["groups"]["L2"]["binary"]["precision"] == 50.0  # 4/4 and 0/0 differing
