"""An image already in memory, behind the same reading interface as a raster `Scene`.

Benchmarks hand the pipelines plain images (PNG/JPEG tiles without georeferencing); wrapping
them lets the same scene-level code (overviews, windows, decimation) serve both.
"""

from __future__ import annotations

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from terramask.scene.raster import SceneWindow, overview_shape


class ArrayScene:
    """An (H, W, 3) uint8 image as a scene in pixel space (no CRS, identity transform)."""

    crs = None
    georeferenced = False
    transform = Affine.identity()

    def __init__(self, image: np.ndarray, valid: np.ndarray | None = None, name: str = "image"):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        self.image = image
        self.valid = np.ones(image.shape[:2], bool) if valid is None else valid.astype(bool)
        self.name = self.source = name
        self.height, self.width = image.shape[:2]
        self.bands = (1, 2, 3)

    def window_transform(self, window: Window) -> Affine:
        return Affine.translation(window.col_off, window.row_off)

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> SceneWindow:
        """The window (zero and invalid beyond the image), resized to `out_shape` if given."""
        c0, r0 = int(window.col_off), int(window.row_off)
        h, w = int(window.height), int(window.width)
        image = np.zeros((h, w, 3), np.uint8)
        valid = np.zeros((h, w), bool)
        ic0, ir0 = max(c0, 0), max(r0, 0)
        ic1, ir1 = min(c0 + w, self.width), min(r0 + h, self.height)
        if ic1 > ic0 and ir1 > ir0:
            image[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = self.image[ir0:ir1, ic0:ic1]
            valid[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = self.valid[ir0:ir1, ic0:ic1]
        transform = self.window_transform(window)
        if out_shape is not None and tuple(out_shape) != (h, w):
            oh, ow = out_shape
            image = np.asarray(Image.fromarray(image).resize((ow, oh), Image.BILINEAR))
            valid = np.asarray(Image.fromarray(valid).resize((ow, oh), Image.NEAREST))
            transform = transform @ Affine.scale(w / ow, h / oh)
        return SceneWindow(image, valid, window, transform)

    def read_valid(self, window: Window) -> np.ndarray:
        return self.read(window).valid

    def overview(self, max_size: int) -> SceneWindow:
        shape = overview_shape(self.width, self.height, max_size)
        return self.read(Window(0, 0, self.width, self.height), shape)
