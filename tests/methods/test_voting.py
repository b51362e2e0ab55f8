"""Mask voting on a real label map: SAM-like masks recover the truth from noisy dense labels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from terramask.methods.mask_generation import MaskProposal, generate_masks
from terramask.methods.vocabulary import NO_CLASS
from terramask.methods.voting import majority_class, vote_masks
from terramask.options import GenerationSettings
from tests.helpers.doubles import ComponentSegmenter


def test_voting_recovers_the_ground_truth_where_noise_is_a_minority(rs_samples):
    truth = np.asarray(Image.open(rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"))
    truth = truth.astype(np.int64)
    rng = np.random.default_rng(0)
    noisy = truth.copy()
    flip = rng.random(truth.shape) < 0.3
    noisy[flip] = rng.integers(0, 7, size=int(flip.sum()))
    seg = ComponentSegmenter(truth)
    image = np.zeros((*truth.shape, 3), np.uint8)
    proposals = generate_masks(seg, image, GenerationSettings(grid=40, min_region_area=0))
    voted = vote_masks(noisy, proposals)

    covered = np.zeros(truth.shape, bool)
    for p in proposals:
        covered |= p.full(truth.shape)
    before = (noisy == truth).mean()
    assert before < 0.8
    assert (voted[covered] == truth[covered]).mean() > 0.999
    assert (voted == truth).mean() > 0.95
    # uncovered pixels keep the dense prediction
    np.testing.assert_array_equal(voted[~covered], noisy[~covered])


def test_single_class_mode_keeps_masks_by_fraction():
    dense = np.zeros((10, 10), np.int64)
    dense[0:5, 0:5] = 1  # 25 of the first mask's 50 pixels are buildings
    dense[6:10, 6:8] = 1  # 8 of the second mask's 16
    first = np.zeros((5, 10), bool)
    first[:, :] = True
    second = np.ones((4, 4), bool)
    proposals = [
        MaskProposal(first, (0, 0), 0.9, 1.0),
        MaskProposal(second, (6, 6), 0.9, 1.0),
    ]
    voted = vote_masks(dense, proposals, single_class=1, min_fraction=0.5, reject=0)
    assert (voted[0:5] == 1).all() and (voted[6:10, 6:10] == 1).all()
    strict = vote_masks(dense, proposals, single_class=1, min_fraction=0.6, reject=0)
    assert (strict[0:5] == 0).all() and (strict[6:10, 6:10] == 0).all()


def test_smaller_masks_inside_larger_ones_keep_their_class():
    dense = np.zeros((8, 8), np.int64)
    dense[2:4, 2:4] = 3
    outer = MaskProposal(np.ones((8, 8), bool), (0, 0), 0.9, 1.0)
    inner = MaskProposal(np.ones((2, 2), bool), (2, 2), 0.9, 1.0)
    voted = vote_masks(dense, [inner, outer])
    assert (voted[2:4, 2:4] == 3).all() and voted.sum() == 3 * 4


def test_majority_counts_no_class_like_any_label():
    assert majority_class(np.array([NO_CLASS, NO_CLASS, 2])) == NO_CLASS
    assert majority_class(np.array([1, 2, 2, 1])) == 1
