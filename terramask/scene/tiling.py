"""Cut a raster into overlapping tiles whose cores partition it, and find the tile owning a box."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from rasterio.windows import Window

from terramask.errors import InputError
from terramask.options import Tiling


@dataclass(frozen=True)
class Tile:
    """One tile: `window` is what is read (overlap included), `core` is the part it owns.

    Cores of all tiles partition the raster exactly; results outside a tile's core are
    someone else's, which is how seams are resolved without double counting.
    """

    index: int
    row: int
    col: int
    window: Window
    core: Window


def _axis(size: int, tile: int, overlap: int) -> tuple[list[int], list[int], list[int]]:
    """Tile starts, ends and core boundaries along one axis.

    Tiles are full size where the scene allows: the last one is shifted back to end at the
    edge (its overlap with the previous one grows). The seam between two neighbours is the
    middle of their overlap, rounded down.
    """
    if size <= tile:
        return [0], [size], [0, size]
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    starts = [i * stride for i in range(n - 1)] + [size - tile]
    ends = [s + tile for s in starts]
    seams = [0] + [(starts[i + 1] + ends[i]) // 2 for i in range(n - 1)] + [size]
    return starts, ends, seams


@dataclass
class TilePlan:
    """The tiles of a `width` × `height` raster, in row-major order."""

    width: int
    height: int
    tile_size: int
    overlap: int
    tiles: list[Tile] = field(default_factory=list)
    _cols: tuple[list[int], list[int], list[int]] = field(default=([], [], []), repr=False)
    _rows: tuple[list[int], list[int], list[int]] = field(default=([], [], []), repr=False)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __getitem__(self, index: int) -> Tile:
        return self.tiles[index]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return len(self._rows[0]), len(self._cols[0])

    def tile_for_box(self, x0: float, y0: float, x1: float, y1: float) -> Tile | None:
        """The tile that owns a pixel box (x0, y0) – (x1, y1), or None if no tile holds it whole.

        Among tiles whose window contains the box, the one whose core contains the box centre;
        failing that, the one where the centre lies farthest from the window edge.
        """
        cols = _candidates(self._cols, x0, x1)
        rows = _candidates(self._rows, y0, y1)
        if not cols or not rows:
            return None
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        n_cols = len(self._cols[0])
        best, best_margin = None, -math.inf
        for r in rows:
            for c in cols:
                tile = self.tiles[r * n_cols + c]
                core = tile.core
                if (
                    core.col_off <= cx < core.col_off + core.width
                    and core.row_off <= cy < core.row_off + core.height
                ):
                    return tile
                w = tile.window
                margin = min(
                    cx - w.col_off, w.col_off + w.width - cx, cy - w.row_off,
                    w.row_off + w.height - cy,
                )
                if margin > best_margin:
                    best, best_margin = tile, margin
        return best


def _candidates(axis: tuple[list[int], list[int], list[int]], lo: float, hi: float) -> list[int]:
    """Indexes of tiles along one axis whose [start, end) contains [lo, hi]."""
    starts, ends, _ = axis
    first = bisect.bisect_left(ends, hi)  # starts and ends both increase along the axis
    last = bisect.bisect_right(starts, lo)
    return list(range(first, last))


def plan_tiles(width: int, height: int, tiling: Tiling = Tiling()) -> TilePlan:
    """Plan overlapping tiles over a raster; a raster smaller than a tile is one tile.

    Each axis is cut on its own, so a scene thinner than a tile (a 1 × 20 000 strip) gets one
    row of tiles along its long side, each as thin as the scene: windows are never padded to
    a square beyond the raster, and neighbours overlap by at least `Tiling.overlap` along the
    strip. Models that need a minimum size pad what they are given themselves and cut their
    results back (see `models.sam.pad_thin`, `methods.dense_clip`).
    """
    if width <= 0 or height <= 0:
        raise InputError(f"Cannot tile an empty raster of {width} × {height} pixels.")
    tile_size, overlap = tiling.tile, tiling.overlap
    cols = _axis(width, tile_size, overlap)
    rows = _axis(height, tile_size, overlap)
    tiles = []
    for r, (r0, r1) in enumerate(zip(rows[0], rows[1], strict=True)):
        for c, (c0, c1) in enumerate(zip(cols[0], cols[1], strict=True)):
            core = Window(
                cols[2][c], rows[2][r], cols[2][c + 1] - cols[2][c], rows[2][r + 1] - rows[2][r]
            )
            tiles.append(Tile(len(tiles), r, c, Window(c0, r0, c1 - c0, r1 - r0), core))
    return TilePlan(width, height, tile_size, overlap, tiles, cols, rows)
