"""Route object prompts to the scene windows where they are segmented, sharing embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from rasterio.windows import Window

from terramask.methods.interactive import PointBoxPrompt
from terramask.scene import ObjectPrompt, TilePlan

#: Context kept around a prompt too large for any tile, as a fraction of its size.
LARGE_PROMPT_MARGIN = 0.15
#: The thinnest window `job_for_bounds` gives a box, in scene pixels (one CLIP patch, and
#: GeoSeg's smallest box) ...
MIN_WINDOW_SIDE = 16
#: ... and the largest ratio of its long side to its short side (see `job_for_bounds`).
MAX_WINDOW_ASPECT = 4


@dataclass(frozen=True)
class WindowJob:
    """A scene window to embed once, and the prompts it answers.

    `out_shape` is None when the window is read at full resolution; prompts larger than a
    tile get a window of their own read decimated so that its long side is one tile.
    """

    window: Window
    out_shape: tuple[int, int] | None
    prompt_ids: list[int] = field(default_factory=list)

    @property
    def to_scene(self) -> Affine:
        """Maps pixels of the image the segmenter sees to scene pixels."""
        sx = sy = 1.0
        if self.out_shape is not None:
            sx = self.window.width / self.out_shape[1]
            sy = self.window.height / self.out_shape[0]
        return Affine(sx, 0.0, self.window.col_off, 0.0, sy, self.window.row_off)

    def local_prompt(self, prompt: ObjectPrompt) -> PointBoxPrompt:
        """The prompt in this window's image frame."""
        to_local = ~self.to_scene
        points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
        points = np.array([to_local @ (x, y) for x, y in points]).reshape(-1, 2)
        box = None
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            box = np.array([*(to_local @ (x1, y1)), *(to_local @ (x2, y2))], dtype=np.float64)
        return PointBoxPrompt(points=points, labels=np.asarray(prompt.labels), box=box)


def route_prompts(
    prompts: Sequence[ObjectPrompt], plan: TilePlan, width: int, height: int
) -> list[WindowJob]:
    """Group prompts by the tile that holds them; oversized prompts get their own window."""
    by_tile: dict[int, WindowJob] = {}
    jobs: list[WindowJob] = []
    for i, prompt in enumerate(prompts):
        x0, y0, x1, y1 = prompt.bounds()
        tile = plan.tile_for_box(x0, y0, x1, y1)
        if tile is not None:
            if tile.index not in by_tile:
                by_tile[tile.index] = WindowJob(window=tile.window, out_shape=None)
                jobs.append(by_tile[tile.index])
            by_tile[tile.index].prompt_ids.append(i)
        else:
            jobs.append(_oversized_job(i, (x0, y0, x1, y1), plan.tile_size, width, height))
    return jobs


def _oversized_job(
    index: int, bounds: tuple[float, float, float, float], tile_size: int, width: int, height: int
) -> WindowJob:
    x0, y0, x1, y1 = bounds
    side = max(x1 - x0, y1 - y0) * (1 + 2 * LARGE_PROMPT_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    square = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    job = job_for_bounds(square, tile_size, width, height, always_decimate=True)
    job.prompt_ids.append(index)
    return job


def job_for_bounds(
    bounds: tuple[float, float, float, float],
    tile_size: int,
    width: int,
    height: int,
    *,
    always_decimate: bool = False,
    widen: bool = True,
) -> WindowJob:
    """The window covering pixel `bounds` (clipped to the scene), read at full resolution
    when its long side fits in a tile, else decimated so that it does.

    Context around thin boxes (unless `widen` is false: GeoSeg reads exactly its refined
    box): a side of `bounds` shorter than MIN_WINDOW_SIDE, or than the
    long side / MAX_WINDOW_ASPECT, is widened to that about its centre (moved back inside the
    scene at an edge; a scene thinner than that stays its own width). A box one pixel tall
    (a road, a wall, an MLLM's box with no height) is so segmented in a window that shows
    what lies around it, never in a sliver that models would have to blow up to their input
    size; what is found there may reach beyond the box's thin side.
    """
    x0, y0, x1, y1 = bounds
    if widen:
        minimum = max(MIN_WINDOW_SIDE, max(x1 - x0, y1 - y0) / MAX_WINDOW_ASPECT)
        x0, x1 = _widen(x0, x1, minimum, width)
        y0, y1 = _widen(y0, y1, minimum, height)
    col0 = int(np.clip(np.floor(x0), 0, width - 1))
    row0 = int(np.clip(np.floor(y0), 0, height - 1))
    col1 = int(np.clip(np.ceil(x1), col0 + 1, width))
    row1 = int(np.clip(np.ceil(y1), row0 + 1, height))
    window = Window(col0, row0, col1 - col0, row1 - row0)
    if max(window.width, window.height) <= tile_size and not always_decimate:
        return WindowJob(window=window, out_shape=None)
    scale = max(window.width, window.height) / tile_size
    out_shape = (max(1, round(window.height / scale)), max(1, round(window.width / scale)))
    return WindowJob(window=window, out_shape=out_shape)


def _widen(lo: float, hi: float, size: float, limit: int) -> tuple[float, float]:
    """[lo, hi] widened about its centre to at least `size`, shifted back into [0, limit]
    when that side of the scene allows (a range already that wide is returned as it is)."""
    if hi - lo >= size:
        return lo, hi
    centre = (lo + hi) / 2
    lo, hi = centre - size / 2, centre + size / 2
    if lo < 0:
        lo, hi = 0.0, min(size, float(limit))
    elif hi > limit:
        lo, hi = max(0.0, limit - size), float(limit)
    return lo, hi
