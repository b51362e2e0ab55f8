"""Instances and the rule filter on synthetic label maps whose kept set is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.data.instances import find_instances
from terramask.data.tiling import offsets, patch_windows
from terramask.options import DataRecipe

BUILDING, TREE, WATER, ROAD, CAR = range(5)
#: 100 x 100 patches: 0.5 % is 50 px, 70 % is 7000 px.
RECIPE = DataRecipe(patch=100, stride=100)


def rules_map() -> np.ndarray:
    """Every rule meets one case (see `test_each_rule_removes_exactly_its_case`)."""
    ids = np.full((100, 100), -1, dtype=np.int32)
    ids[2:12, 2:12] = BUILDING  # A: 100 px, alone -> kept
    ids[2:5, 30:33] = BUILDING  # 9 px < min_pixels -> tiny
    ids[2:7, 45:50] = BUILDING  # 25 px < 50 -> area (33 px from A: not A's neighbour)
    ids[40:50, 2:12] = BUILDING  # B and C: 5 px apart -> neighbour, both
    ids[40:50, 17:27] = BUILDING
    for k in range(7):  # seven 8 x 8 trees: more than 6 -> crowded, all seven
        ids[60:68, 2 + 12 * k : 10 + 12 * k] = TREE
    ids[70:100, 0:100] = WATER  # 3000 px, kept ...
    ids[2:10, 60:68] = CAR  # two squares touching at a corner: one 8-connected car
    ids[10:18, 68:76] = CAR
    for col in (40, 65, 90):  # three roads 16 px apart (centres): keep_limit keeps two
        ids[25:35, col : col + 10] = ROAD
    return ids


def test_each_rule_removes_exactly_its_case():
    found = find_instances(rules_map(), RECIPE, np.random.default_rng(0))
    removed = {key: n for key, n in found.removed.items() if n}
    assert removed == {
        ("tiny", BUILDING): 1,
        ("area", BUILDING): 1,
        ("neighbour", BUILDING): 2,
        ("crowded", TREE): 7,
        ("keep_limit", ROAD): 1,
    }
    kept = {(i.class_id, i.pixels) for i in found.kept}
    assert kept == {(BUILDING, 100), (WATER, 3000), (CAR, 128), (ROAD, 100)}
    assert sorted(i.class_id for i in found.kept).count(ROAD) == 2
    # visible instances: the tiny one is not one
    assert {k: len(v) for k, v in found.visible.items()} == {
        BUILDING: 4, TREE: 7, WATER: 1, ROAD: 3, CAR: 1,
    }
    [car] = [i for i in found.kept if i.class_id == CAR]
    assert car.bbox == (2, 60, 18, 76)


def test_the_largest_share_is_a_rule_too():
    ids = np.full((100, 100), -1, dtype=np.int32)
    ids[:, :71] = WATER  # 71 % of the patch
    found = find_instances(ids, RECIPE, np.random.default_rng(0))
    assert found.removed[("area", WATER)] == 1 and not found.kept


@pytest.mark.parametrize(("gap", "removed"), [(13, 2), (14, 2), (15, 0), (16, 0)])
def test_the_neighbour_rule_is_a_disk_of_its_radius(gap, removed):
    """Centres at most 15 px apart (a gap of 14 background pixels or fewer) are neighbours."""
    ids = np.full((100, 100), -1, dtype=np.int32)
    ids[10:20, 10:20] = BUILDING
    ids[10:20, 20 + gap : 30 + gap] = BUILDING
    found = find_instances(ids, RECIPE, np.random.default_rng(0))
    assert found.removed[("neighbour", BUILDING)] == removed
    assert len(found.kept) == 2 - removed


def test_every_threshold_is_an_option():
    recipe = DataRecipe(patch=100, stride=100, min_pixels=5, min_area=0.0005, max_instances=7,
                        neighbour_px=0, keep_per_class=7)  # fmt: skip
    found = find_instances(rules_map(), recipe, np.random.default_rng(0))
    assert not any(found.removed.values())
    assert len(found.kept) == 5 + 7 + 1 + 1 + 3


def test_keep_limit_draws_with_the_generator_it_is_given():
    picks = {
        tuple(sorted(i.bbox for i in find_instances(
            rules_map(), RECIPE, np.random.default_rng(seed)).kept if i.class_id == ROAD))
        for seed in range(12)
    }  # fmt: skip
    assert len(picks) > 1  # random, not always the first two
    again = find_instances(rules_map(), RECIPE, np.random.default_rng(3)).kept
    assert [i.bbox for i in again] == [
        i.bbox for i in find_instances(rules_map(), RECIPE, np.random.default_rng(3)).kept
    ]


def test_patches_cover_every_pixel_and_stay_inside():
    assert offsets(1024, 512, 256) == [0, 256, 512]
    assert offsets(1000, 512, 256) == [0, 256, 488]
    assert offsets(300, 512, 256) == [0]
    windows = patch_windows(1000, 300, 512, 256)
    assert [(w.col, w.row, w.width, w.height) for w in windows] == [
        (0, 0, 512, 300), (256, 0, 512, 300), (488, 0, 512, 300)]  # fmt: skip
    assert windows[0].name("scene") == "scene_0_0_512_300"
