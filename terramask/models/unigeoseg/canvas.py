"""UniGeoSeg's square input canvas: the centred letterbox its evaluation code feeds the model,
and the way back from the canvas to the image.

The geometry is the released `preprocess_image` / `preprocess_mask` one (and
`terramask.eval.referring_datasets.letterbox`'s): the long side to the canvas, the short side
`int(short * size / long)` (truncated), zero padding split floor(pad / 2) above/left. The image
is resampled bilinearly as OpenCV's INTER_LINEAR (half-pixel centres, no antialiasing) and
rounded to uint8, as the released code's cv2 call gives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Letterbox:
    """Where an image of `height` x `width` lies on a `size` square canvas."""

    height: int
    width: int
    size: int
    new_height: int
    new_width: int
    top: int
    left: int

    @classmethod
    def of(cls, height: int, width: int, size: int) -> Letterbox:
        if width > height:
            new_w, new_h = size, int(height * (size / width))
        else:
            new_h, new_w = size, int(width * (size / height))
        new_h, new_w = max(1, new_h), max(1, new_w)
        return cls(height, width, size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)

    @property
    def identity(self) -> bool:
        """The image is the canvas already."""
        return self.height == self.width == self.size


def letterbox_canvas(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """An (H, W, 3) uint8 image on the centred `size` canvas, and where it lies."""
    height, width = image.shape[:2]
    box = Letterbox.of(height, width, size)
    if box.identity:
        return np.ascontiguousarray(image), box
    pixels = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(
        pixels, (box.new_height, box.new_width), mode="bilinear", align_corners=False
    )
    resized = torch.floor(resized[0] + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    canvas = np.zeros((size, size, image.shape[2]), dtype=np.uint8)
    canvas[box.top : box.top + box.new_height, box.left : box.left + box.new_width] = (
        resized.numpy()
    )
    return canvas, box


def canvas_to_image(logits: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """(..., size, size) canvas logits to (..., H, W) logits of the image: the image's part
    of the canvas, resized bilinearly."""
    part = logits[..., box.top : box.top + box.new_height, box.left : box.left + box.new_width]
    if (box.new_height, box.new_width) == (box.height, box.width):
        return part
    lead = part.shape[:-2]
    flat = part.reshape(-1, 1, box.new_height, box.new_width).float()
    resized = F.interpolate(flat, (box.height, box.width), mode="bilinear", align_corners=False)
    return resized.reshape(*lead, box.height, box.width)


def to_canvas(logits: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, h, w) decoder logits (1/4 of the canvas) upsampled bilinearly to the canvas,
    as the released evaluation does before thresholding at 0."""
    return F.interpolate(logits.float(), (size, size), mode="bilinear", align_corners=False)


def image_points_to_unit(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 2) pixel x, y of the image to fractions of its width and height."""
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) / np.array([width, height])
