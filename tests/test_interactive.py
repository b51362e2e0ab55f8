"""Interactive segmentation: batching by prompt kind, candidate choice, validity."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.methods.interactive import PointBoxPrompt, pad_points, segment_prompts
from tests.helpers.doubles import ShapeSegmenter

IMAGE = np.zeros((64, 80, 3), dtype=np.uint8)


def click(x, y, label=1):
    return PointBoxPrompt(points=np.array([[x, y]], float), labels=np.array([label]))


def test_single_click_chooses_the_candidate_with_best_predicted_iou():
    seg = ShapeSegmenter(radius=6)
    [obj] = segment_prompts(seg, IMAGE, [click(40, 30)])
    assert seg.predict_calls[0]["multimask"] is True
    assert obj.score == pytest.approx(0.9)
    # the middle candidate: a disc of radius 6 around (40, 30)
    yy, xx = np.mgrid[0:64, 0:80] + 0.5
    expected = (xx - 40) ** 2 + (yy - 30) ** 2 <= 36
    np.testing.assert_array_equal(obj.mask, expected)


def test_image_is_embedded_once_and_prompt_kinds_share_decoder_calls():
    seg = ShapeSegmenter()
    box = PointBoxPrompt(
        points=np.zeros((0, 2)), labels=np.zeros(0, int), box=np.array([5, 5, 20, 15.0])
    )
    two = PointBoxPrompt(points=np.array([[10, 10], [30, 30.0]]), labels=np.array([1, 0]))
    prompts = [click(10, 10), box, click(50, 40), two, box]
    objs = segment_prompts(seg, IMAGE, prompts)
    assert seg.embed_calls == 1
    assert len(objs) == 5
    # single clicks (multimask), boxes, multi-click: three decoder calls
    assert len(seg.predict_calls) == 3
    assert objs[1].mask.sum() == objs[4].mask.sum() > 0
    assert objs[1].mask[10, 10] and not objs[1].mask[30, 30]


def test_batches_are_split_at_batch_size():
    seg = ShapeSegmenter()
    segment_prompts(seg, IMAGE, [click(5 + i, 5) for i in range(7)], batch_size=3)
    assert [len(c["points"]) for c in seg.predict_calls] == [3, 3, 1]


def test_invalid_pixels_never_belong_to_a_mask():
    seg = ShapeSegmenter(radius=10)
    valid = np.ones((64, 80), bool)
    valid[:, :40] = False
    [obj] = segment_prompts(seg, IMAGE, [click(40, 30)], valid=valid)
    assert not obj.mask[:, :40].any()
    assert obj.mask[:, 40:].any()
    assert np.all(np.isneginf(obj.logits[:, :40]))


def test_ragged_clicks_are_padded_with_label_minus_one():
    a = PointBoxPrompt(points=np.array([[1, 2.0]]), labels=np.array([1]))
    b = PointBoxPrompt(points=np.array([[3, 4], [5, 6], [7, 8.0]]), labels=np.array([1, 0, 1]))
    points, labels = pad_points([a, b])
    assert points.shape == (2, 3, 2)
    np.testing.assert_array_equal(labels, [[1, -1, -1], [1, 0, 1]])
    np.testing.assert_array_equal(points[1], [[3, 4], [5, 6], [7, 8]])


def test_a_prompt_needs_a_point_or_a_box():
    with pytest.raises(ValueError):
        PointBoxPrompt(points=np.zeros((0, 2)), labels=np.zeros(0, int))
