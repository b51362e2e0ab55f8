"""Tile plans: cores partition the raster exactly, windows overlap, boxes find their owner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.options import Tiling
from terramask.scene import plan_tiles


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(1000, 777, 256, 32), (257, 255, 128, 0), (1025, 3000, 512, 128), (99, 100, 64, 31)],
)
def test_cores_partition_the_raster(width, height, tile, overlap):
    plan = plan_tiles(width, height, Tiling(tile, overlap))
    count = np.zeros((height, width), dtype=np.int32)
    for t in plan:
        core, win = t.core, t.window
        count[core.toslices()] += 1
        # the core lies inside the window, windows lie inside the raster and are full size
        (wr0, wr1), (wc0, wc1) = win.toranges()
        (cr0, cr1), (cc0, cc1) = core.toranges()
        assert wc0 <= cc0 and cc1 <= wc1 and wr0 <= cr0 and cr1 <= wr1
        assert win.col_off >= 0 and win.col_off + win.width <= width
        assert win.width == min(tile, width) and win.height == min(tile, height)
    assert (count == 1).all()
    assert [t.index for t in plan] == list(range(len(plan)))


def test_neighbours_overlap_and_seam_is_mid_overlap():
    plan = plan_tiles(1000, 300, Tiling(256, 64))
    row0 = [t for t in plan if t.row == 0]
    for a, b in itertools.pairwise(row0):
        overlap_start, overlap_end = b.window.col_off, a.window.col_off + a.window.width
        assert overlap_end - overlap_start >= 64
        seam = a.core.col_off + a.core.width
        assert seam == (overlap_start + overlap_end) // 2 == b.core.col_off


def test_small_scene_is_one_tile():
    plan = plan_tiles(100, 50, Tiling(1024, 128))
    assert len(plan) == 1
    (tile,) = plan
    assert (tile.window.width, tile.window.height) == (100, 50)
    assert tile.core == tile.window


@pytest.mark.parametrize(("tile", "overlap"), [(256, 128), (100, 60), (256, -1)])
def test_bad_tile_size_or_overlap(tile, overlap):
    with pytest.raises(InputError, match="overlap"):
        plan_tiles(1000, 1000, Tiling(tile, overlap))


def test_tile_for_box():
    plan = plan_tiles(1000, 1000, Tiling(256, 64))
    rng = np.random.default_rng(0)
    for _ in range(300):
        x0, y0 = rng.uniform(0, 950, 2)
        w, h = rng.uniform(1, 60, 2)
        box = (x0, y0, min(x0 + w, 1000), min(y0 + h, 1000))
        tile = plan.tile_for_box(*box)
        assert tile is not None
        win = tile.window
        assert win.col_off <= box[0] and box[2] <= win.col_off + win.width
        assert win.row_off <= box[1] and box[3] <= win.row_off + win.height
        # it is the owner by core whenever some containing tile's core holds the centre
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        owners = [
            t for t in plan
            if t.core.col_off <= cx < t.core.col_off + t.core.width
            and t.core.row_off <= cy < t.core.row_off + t.core.height
            and t.window.col_off <= box[0] and box[2] <= t.window.col_off + t.window.width
            and t.window.row_off <= box[1] and box[3] <= t.window.row_off + t.window.height
        ]
        if owners:
            assert tile is owners[0]


def test_tile_for_box_on_a_seam_and_too_big():
    plan = plan_tiles(1000, 300, Tiling(256, 64))
    first, second = plan[0], plan[1]
    seam = first.core.col_off + first.core.width
    # With the seam in the middle of the overlap, a box that fits in the overlap goes to the
    # tile whose core holds its centre; it always fits that tile's window too.
    assert plan.tile_for_box(seam - 30, 10, seam + 20, 30) is first
    assert plan.tile_for_box(seam - 20, 10, seam + 30, 30) is second
    assert plan.tile_for_box(0, 0, 400, 10) is None  # wider than any tile
    assert plan.tile_for_box(first.window.width - 10, 10, second.window.col_off + 260, 20) is None


@pytest.mark.parametrize(("width", "height"), [(20000, 1), (5000, 2), (3, 3000), (2500, 3)])
def test_thin_scenes_are_tiled_along_their_long_side_only(width, height):
    """A scene thinner than a tile gets one row (or column) of tiles as thin as the scene,
    full length along it, overlapping by at least the overlap, cores partitioning it."""
    plan = plan_tiles(width, height, Tiling(1024, 128))
    rows, cols = plan.shape
    long_side, thin_side = max(width, height), min(width, height)
    assert min(rows, cols) == 1 and max(rows, cols) == len(plan) > 1
    count = np.zeros((height, width), dtype=np.int32)
    for t in plan:
        win = t.window
        assert sorted((win.width, win.height)) == [thin_side, 1024]  # never square
        assert win.col_off >= 0 and win.col_off + win.width <= width
        assert win.row_off >= 0 and win.row_off + win.height <= height
        count[t.core.toslices()] += 1
    assert (count == 1).all()
    along = [t.window.col_off if width > height else t.window.row_off for t in plan]
    for start, following in itertools.pairwise(along):
        assert start + 1024 - following >= 128  # the overlap holds between neighbours
    assert along[-1] + 1024 == long_side
    # a click anywhere on the strip has a tile, and a box across the whole thin side too
    if width > height:
        assert plan.tile_for_box(width / 2, 0.5, width / 2, 0.5) is not None
        assert plan.tile_for_box(100, 0, 400, height) is not None
    else:
        assert plan.tile_for_box(0.5, height / 2, 0.5, height / 2) is not None
        assert plan.tile_for_box(0, 100, width, 400) is not None
