"""The pictures the MLLMs see: a patch with targets outlined by thin contours.

A contour is the ring of `width` pixels just outside the mask (8-connected dilation), so the
object's own pixels stay visible. The recipe chose a thin contour over a filled overlay and
over a separate mask image (specs/unigeoseg.md §1.6). Contextual questions show every
instance of the category in a distinct colour, the target in the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Contour colours by name, in the order instances get them (the target first).
CONTOUR_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (255, 0, 0)),
    ("blue", (0, 80, 255)),
    ("yellow", (255, 230, 0)),
    ("magenta", (255, 0, 255)),
    ("cyan", (0, 255, 255)),
    ("orange", (255, 140, 0)),
)

_EIGHT = np.ones((3, 3), dtype=bool)


def contour(mask: np.ndarray, width: int) -> np.ndarray:
    """The (H, W) ring of `width` pixels just outside `mask`."""
    mask = np.asarray(mask, dtype=bool)
    grown = ndimage.binary_dilation(mask, structure=_EIGHT, iterations=max(1, int(width)))
    return grown & ~mask


def outlined(
    image: np.ndarray, masks: Sequence[np.ndarray], width: int
) -> tuple[np.ndarray, list[str]]:
    """`image` with each mask outlined in the next of `CONTOUR_COLOURS`; the colour names.

    Raises:
        ValueError: More masks than colours.
    """
    if len(masks) > len(CONTOUR_COLOURS):
        raise ValueError(f"at most {len(CONTOUR_COLOURS)} outlined masks, not {len(masks)}")
    out = np.array(image[:, :, :3], dtype=np.uint8, copy=True)
    names = []
    for mask, (name, rgb) in zip(masks, CONTOUR_COLOURS, strict=False):
        out[contour(mask, width)] = rgb
        names.append(name)
    return out, names
