"""Coarse-to-fine point pruning in mask generation: fewer points decoded, the same label map.

Masks come from doubles driven by a real ground-truth map (Potsdam); the dense labels are that
map made wrong the way dense CLIP is wrong, in patches: the majority label of each 16-px patch,
with 15% of the patches set to a random class (seeded).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from terramask.methods.mask_generation import generate_masks, grid_passes
from terramask.methods.voting import vote_masks
from terramask.options import GenerationSettings
from tests.helpers.counting import CountingSegmenter as Counting
from tests.helpers.dense_labels import patchy
from tests.helpers.doubles import ComponentSegmenter, GranularSegmenter


@pytest.fixture(scope="module")
def potsdam_truth(rs_samples) -> np.ndarray:
    """The Potsdam crop's labels at half resolution (256 x 256, every object kept)."""
    truth = np.asarray(Image.open(rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"))
    return truth[::2, ::2].astype(np.int64)


def run(segmenter, truth, dense, **settings):
    counting = Counting(segmenter)
    image = np.zeros((*truth.shape, 3), np.uint8)
    proposals = generate_masks(counting, image, GenerationSettings(grid=29, **settings),
                               dense=dense)  # fmt: skip
    voted = None if dense is None else vote_masks(dense, proposals)
    return voted, counting.points, proposals


def test_passes_go_from_coarse_to_fine():
    passes = grid_passes(29, (8, 4, 2)).reshape(29, 29)
    assert np.bincount(passes.ravel()).tolist() == [16, 64 - 16, 225 - 64, 841 - 225]
    assert passes[0, 0] == passes[8, 16] == 0 and passes[4, 8] == 1 and passes[2, 6] == 2
    assert passes[1, 0] == passes[28, 27] == 3
    assert (grid_passes(29, ()) == 0).all()


def test_pruning_off_decodes_every_point(potsdam_truth):
    dense = patchy(potsdam_truth)
    segmenter = ComponentSegmenter(potsdam_truth)
    _, points, _ = run(segmenter, potsdam_truth, dense, prune=False)
    assert points == 29 * 29
    _, points, _ = run(segmenter, potsdam_truth, None)  # no dense labels, nothing to prune by
    assert points == 29 * 29


def test_pruning_is_exact_when_every_point_of_an_object_gives_its_mask(potsdam_truth):
    """With whole-component masks a skipped point would only have found a mask already found,
    so the label map is identical; measured: 224 of 841 points decoded (26.6%; the dense
    labels agree with the truth on 74.7% of pixels, and every point where they disagree with
    its object's majority is decoded)."""
    dense = patchy(potsdam_truth)
    segmenter = ComponentSegmenter(potsdam_truth)
    full, all_points, _ = run(segmenter, potsdam_truth, dense, prune=False, min_region_area=0)
    pruned, points, _ = run(segmenter, potsdam_truth, dense, min_region_area=0)
    assert all_points == 841 and points <= 230
    np.testing.assert_array_equal(pruned, full)


def test_pruned_label_map_matches_the_unpruned_one_with_sam_like_masks(potsdam_truth):
    """Measured: 159 of 841 points decoded (18.9%); 97.3% of pixels carry the unpruned label,
    and agreement with the ground truth is 90.87% pruned against 90.93% unpruned (what changes
    is mostly where a cross-class "whole" mask of a skipped point painted over neighbours)."""
    dense = patchy(potsdam_truth)
    segmenter = GranularSegmenter(potsdam_truth, radius=32)
    full, all_points, _ = run(segmenter, potsdam_truth, dense, prune=False)
    pruned, points, _ = run(segmenter, potsdam_truth, dense)
    assert all_points == 841 and points <= 165
    assert (pruned == full).mean() >= 0.97
    assert (pruned == potsdam_truth).mean() >= (full == potsdam_truth).mean() - 0.002


def test_a_small_object_of_another_class_inside_a_big_mask_survives():
    """A car (class 2) on a field (class 1) that only a finest-pass point hits: the field's
    "whole" mask covers the car, but the dense class at the car's point differs from the
    mask's, so the point is decoded and the car keeps its own mask and class."""
    truth = np.ones((120, 120), np.int64)
    truth[52:59, 52:59] = 2  # holds grid point (55, 55) only: index 5, odd, the last pass
    segmenter = GranularSegmenter(truth, radius=30)
    voted, points, proposals = run(segmenter, truth, truth, min_region_area=0)
    car = truth == 2
    assert any((p.full(truth.shape) == car).all() for p in proposals)
    assert (voted[car] == 2).all()
    # the first pass (16 points) finds the field, whose "whole" settles every other field
    # point; only the car's point is decoded after it
    assert points == 16 + 1
    # the class check is what saves it: dense labels blind to the car skip its point too
    blind, points, proposals = run(segmenter, truth, np.ones_like(truth), min_region_area=0)
    assert points == 16 and (blind[car] == 1).all()
    assert not any((p.full(truth.shape) == car).all() for p in proposals)
