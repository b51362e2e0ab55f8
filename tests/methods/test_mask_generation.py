"""Automatic mask generation: grid, filters, NMS and clean-up, with segmenter doubles."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.methods.mask_generation import (
    MaskProposal,
    generate_masks,
    mask_iou,
    mask_nms,
    one_point_per_pixel,
    point_grid,
    stability_scores,
)
from terramask.options import GenerationSettings
from tests.helpers.doubles import ComponentSegmenter, ShapeSegmenter

IMAGE = np.zeros((60, 90, 3), np.uint8)


def proposal(mask, iou=0.9):
    return MaskProposal(mask=mask, offset=(0, 0), predicted_iou=iou, stability=1.0)


def test_point_grid_is_cell_centres():
    grid = point_grid(3, 30, 60)
    assert grid.shape == (9, 2)
    np.testing.assert_allclose(grid[:3], [[10, 5], [30, 5], [50, 5]])
    np.testing.assert_allclose(grid[-1], [50, 25])


def test_stability_is_the_iou_of_the_offset_thresholds():
    logits = np.array([[[-2.0, -0.5, 0.5, 2.0]]])  # > +1: one pixel; > -1: three pixels
    np.testing.assert_allclose(stability_scores(logits, 1.0), [1 / 3])


def test_every_object_once_and_nothing_else():
    reference = np.zeros((60, 90), np.int64)
    reference[5:25, 10:40] = 1
    reference[30:55, 50:85] = 2
    seg = ComponentSegmenter(reference)
    found = generate_masks(seg, IMAGE, GenerationSettings(grid=6, min_region_area=0))
    assert seg.embed_calls == 1
    masks = sorted((p.full(reference.shape) for p in found), key=lambda m: m.sum())
    # three components (two objects and the background around them), each exactly once
    assert len(masks) == 3
    np.testing.assert_array_equal(masks[0], reference == 1)
    np.testing.assert_array_equal(masks[1], reference == 2)


def test_low_predicted_iou_and_unstable_masks_are_dropped():
    seg = ShapeSegmenter(radius=5)  # predicted IoUs 0.5 / 0.9 / 0.7 for its three candidates
    found = generate_masks(
        seg, IMAGE, GenerationSettings(grid=2, pred_iou_thresh=0.88, min_region_area=0, nms_iou=1.0)
    )
    assert [p.predicted_iou for p in found] == pytest.approx([0.9] * 4)  # one per grid point
    unstable = GenerationSettings(grid=2, stability_offset=20.0, min_region_area=0)
    assert generate_masks(seg, IMAGE, unstable) == []  # logits of ±10 flip at offset 20


def test_nms_keeps_the_best_of_overlapping_masks():
    a = np.zeros((20, 20), bool)
    a[2:12, 2:12] = True
    b = np.zeros((20, 20), bool)
    b[3:12, 2:12] = True  # IoU 0.9 with a
    c = np.zeros((20, 20), bool)
    c[14:18, 14:18] = True
    kept = mask_nms([proposal(b, 0.8), proposal(a, 0.95), proposal(c, 0.7)], 0.7)
    assert [k.predicted_iou for k in kept] == [0.95, 0.7]
    assert mask_iou(proposal(a), proposal(b)) == pytest.approx(0.9)


def test_islands_are_removed_and_holes_filled():
    reference = np.zeros((60, 90), np.int64)
    reference[10:50, 10:50] = 1
    reference[20:23, 20:23] = 0  # a 9-pixel hole (its own component in the reference)
    reference[2:4, 80:82] = 1  # a 4-pixel island of the same class
    seg = ComponentSegmenter(reference)
    # a component double returns connected components, so build the mask by hand
    mask = reference == 1
    from terramask.methods.mask_generation import _clean

    cleaned = _clean(proposal(mask), min_area=20).full(mask.shape)
    assert cleaned[21, 21] and not cleaned[3, 81]
    assert cleaned.sum() == 40 * 40
    assert seg.embed_calls == 0


def test_no_prompts_where_there_is_no_data():
    seg = ShapeSegmenter(radius=3)
    valid = np.zeros((60, 90), bool)
    valid[:, 45:] = True
    found = generate_masks(
        seg, IMAGE, GenerationSettings(grid=4, min_region_area=0, nms_iou=1.0), valid=valid
    )
    assert len(found) == 8  # half the grid
    assert all(p.bbox[1] >= 45 for p in found)


def test_a_thin_strip_decodes_each_pixel_once():
    """A 29 × 29 grid on a 2-px strip puts ~14 points in each pixel: each pixel is decoded
    once (SAM would give the same masks 14 times), by the point of the earliest pass."""
    seg = ShapeSegmenter(radius=3)
    settings = GenerationSettings(grid=29, min_region_area=0, nms_iou=1.0, prune=False)
    generate_masks(seg, np.zeros((2, 300, 3), np.uint8), settings)
    decoded = np.concatenate([call["points"][:, 0] for call in seg.predict_calls])
    pixels = {(int(x), int(y)) for x, y in decoded}
    assert len(decoded) == len(pixels) == 29 * 2  # 29 columns, 2 rows

    points = np.array([[0.2, 0.5], [0.7, 0.5], [5.5, 0.1], [0.9, 0.9]])
    passes = np.array([1, 0, 2, 0])
    np.testing.assert_array_equal(one_point_per_pixel(points, passes, width=10), [1, 2])


def test_an_image_as_large_as_the_grid_keeps_every_point():
    grid = point_grid(29, 29, 40)
    kept = one_point_per_pixel(grid, np.zeros(len(grid), int), width=40)
    np.testing.assert_array_equal(kept, np.arange(29 * 29))
