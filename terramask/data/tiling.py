"""The patch windows of the recipe: squares of `patch` pixels every `stride` pixels.

Windows start at 0, stride, 2·stride ... along each axis; when the last one would run past
the edge, one more window is placed flush with the edge, so that every pixel lies in some
patch and every patch lies inside the image. An image smaller than a patch along an axis
gives one window of the image's size along that axis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PatchWindow:
    """One patch: its column and row offsets and size in the image's pixels."""

    col: int
    row: int
    width: int
    height: int

    def name(self, image: str) -> str:
        """The patch's id: the image's name, the offsets and the size (as Potsdam's tiles)."""
        return f"{image}_{self.col}_{self.row}_{self.width}_{self.height}"


def offsets(length: int, patch: int, stride: int) -> list[int]:
    """Window starts along one axis of `length` pixels (see the module notes)."""
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def patch_windows(width: int, height: int, patch: int, stride: int) -> list[PatchWindow]:
    """The patches of a `width` x `height` image, row by row."""
    w, h = min(patch, width), min(patch, height)
    return [
        PatchWindow(col, row, w, h)
        for row in offsets(height, patch, stride)
        for col in offsets(width, patch, stride)
    ]
