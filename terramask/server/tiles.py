"""XYZ map tiles of a scene, read and warped to Web Mercator by rio-tiler, drawn with the
scene's own bands and stretch (the pixels the models see) and transparent where it has no
data. A scene of any size is shown tile by tile; nothing reads it whole."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from terramask.server.problems import Problem

TILE_SIZE = 256
#: Zoom levels shown beyond the scene's native resolution (pixels get larger on screen).
EXTRA_ZOOM = 3


def _reader(served: Any):
    from rio_tiler.io import Reader

    from terramask.scene import gdal_path

    return Reader(gdal_path(served.source))


def zoom_range(served: Any) -> tuple[int, int]:
    """The zoom levels the page offers: rio-tiler's range for the scene, a few levels deeper."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _reader(served) as reader:
            minzoom, maxzoom = int(reader.minzoom), int(reader.maxzoom)
    return max(0, minzoom), min(24, maxzoom + EXTRA_ZOOM)


def render_tile(
    served: Any,
    z: int,
    x: int,
    y: int,
    *,
    bands: tuple[int, ...] | None = None,
    stretch: Any = None,
) -> bytes:
    """One 256 px PNG tile (RGBA) of the scene at z/x/y.

    Raises:
        Problem: 422 for a scene without georeferencing, 404 for a tile outside the scene.
    """
    from rio_tiler.errors import TileOutsideBounds

    scene = served.scene()
    if not scene.georeferenced:
        raise Problem(
            422,
            f"The scene {served.id!r} has no georeferencing, so it cannot be drawn on a map; "
            "prompts in its pixel coordinates still work.",
        )
    rgb_bands, stretch_ = served.display(bands, stretch)
    unique = sorted(set(rgb_bands))
    order = [unique.index(b) for b in rgb_bands]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _reader(served) as reader:
                image = reader.tile(x, y, z, tilesize=TILE_SIZE, indexes=unique)
    except TileOutsideBounds:
        raise Problem(404, f"Tile {z}/{x}/{y} lies outside the scene {served.id!r}.",
                      "not-found") from None  # fmt: skip
    data = np.asarray(image.array.data)
    valid = np.asarray(image.mask) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= ~np.isnan(data).any(axis=0)
    rgb = stretch_.apply(data[order], valid)
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    return encode_png(np.dstack([rgb, alpha]))


def encode_png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
