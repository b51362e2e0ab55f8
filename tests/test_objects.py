"""Objects kept as crops and painted into output blocks: exact placement, overlap, resampling."""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.windows import Window

from terramask.methods.interactive import ObjectMask
from terramask.pipeline.objects import crop_object, paint_block
from terramask.scene.writers import block_windows


def object_mask(shape, rows, cols, strength=5.0, score=0.8):
    logits = np.full(shape, -5.0, np.float32)
    logits[rows, cols] = strength
    return ObjectMask(mask=logits > 0, logits=logits, score=score)


def paint_whole(objects, width, height, size):
    ids = np.zeros((height, width), np.int64)
    prob = np.zeros((height, width), np.float32)
    for block in block_windows(width, height, size):
        i, p = paint_block(objects, block)
        sl = block.toslices()
        ids[sl], prob[sl] = i, p
    return ids, prob


def test_crop_keeps_only_the_bounding_box_and_places_it_back_exactly():
    found = object_mask((100, 120), slice(30, 40), slice(50, 70))
    obj = crop_object(1, "house", found, Affine.translation(200, 300))
    assert obj.mask.shape == (12, 22)  # 10 x 20 plus one pixel of padding
    assert obj.scene_bounds() == (249, 329, 271, 341)
    ids, prob = paint_block([obj], Window(200, 300, 120, 100))
    expected = np.zeros((100, 120), bool)
    expected[30:40, 50:70] = True
    np.testing.assert_array_equal(ids == 1, expected)
    assert prob[35, 60] > 0.99 and prob[0, 0] == 0


def test_painting_in_blocks_equals_painting_at_once():
    a = crop_object(1, "a", object_mask((90, 90), slice(10, 60), slice(10, 50)), Affine.identity())
    b = crop_object(
        2, "b", object_mask((90, 90), slice(40, 80), slice(30, 85), 8.0), Affine.identity()
    )
    whole = paint_block([a, b], Window(0, 0, 90, 90))
    blocks = paint_whole([a, b], 90, 90, size=32)
    np.testing.assert_array_equal(whole[0], blocks[0])
    np.testing.assert_allclose(whole[1], blocks[1])
    # the overlap goes to the object with the higher logit
    assert whole[0][50, 40] == 2 and whole[0][20, 20] == 1


def test_objects_from_a_decimated_window_are_resampled_to_full_resolution():
    # a 2x decimated image: its pixel (r, c) covers scene pixels 2r..2r+1, 2c..2c+1
    found = object_mask((50, 50), slice(10, 20), slice(5, 15))
    obj = crop_object(3, "field", found, Affine.scale(2.0))
    ids, _ = paint_whole([obj], 100, 100, size=64)
    rows, cols = np.nonzero(ids == 3)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 10, 29)


def test_empty_objects_paint_nothing():
    found = ObjectMask(
        mask=np.zeros((8, 8), bool), logits=np.full((8, 8), -3, np.float32), score=0.1
    )
    obj = crop_object(1, "none", found, Affine.identity())
    assert obj.is_empty
    ids, prob = paint_block([obj], Window(0, 0, 8, 8))
    assert not ids.any() and not prob.any()


def test_block_grid_covers_odd_sizes_exactly_once():
    count = np.zeros((70, 101), int)
    for w in block_windows(101, 70, 32):
        count[w.toslices()] += 1
    assert np.all(count == 1)
