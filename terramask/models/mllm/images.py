"""Prepares an image for a multimodal LLM: checks it, shrinks it, hashes it, encodes it.

The client resizes before sending (long side ≤ max_side) because endpoints bill and slow down
by pixels, and because the model's coordinates then refer to *this* size; the caller keeps
the original size to map them back.
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
from PIL import Image

from terramask.errors import InputError

IMAGE_FORMATS = ("png", "jpeg")
#: The longest side, in pixels, of the image a client shows the model unless told otherwise
#: (`max_side`); smaller images are shown at their native resolution.
DEFAULT_MAX_SIDE = 1024


def as_rgb(image: np.ndarray, *, what: str = "the image") -> np.ndarray:
    """The image as (H, W, 3) uint8; grey (H, W) is repeated, an alpha band is dropped."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InputError(
            f"{what[0].upper()}{what[1:]} given to the multimodal LLM has dtype {array.dtype}, "
            "but 8-bit RGB (uint8) is needed. Stretch 16-bit or float imagery to 0-255 first "
            "(terramask does this per scene when it reads a raster)."
        )
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise InputError(
            f"{what[0].upper()}{what[1:]} given to the multimodal LLM has shape {array.shape}, "
            "but an (H, W, 3) RGB array is needed. Select three bands (`RasterOptions.bands`, "
            "e.g. 1,2,3)."
        )
    return np.ascontiguousarray(array[:, :, :3])


def fitted_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The (H, W) `fit_long_side` gives an image of `size` (H, W): unchanged when its long
    side is at most `max_side`, else shrunk to it with the aspect kept."""
    height, width = int(size[0]), int(size[1])
    scale = max_side / max(height, width, 1)
    if scale >= 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_long_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image shrunk (never enlarged) so its long side is at most `max_side`, aspect kept.

    This is the only resize a client does: an image within the limit is sent at its native
    resolution."""
    height, width = fitted_size(image.shape[:2], max_side)
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def image_digest(image: np.ndarray) -> str:
    """sha256 of the pixels and their shape: equal images give equal keys, whatever encoding."""
    digest = hashlib.sha256()
    digest.update(repr((image.shape, str(image.dtype))).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def encode_image(image: np.ndarray, image_format: str = "png", *, quality: int = 90) -> bytes:
    """The image as PNG (lossless, the default) or JPEG bytes."""
    if image_format not in IMAGE_FORMATS:
        raise InputError(
            f"The image format '{image_format}' cannot be sent to a multimodal LLM. "
            f"Use one of: {', '.join(IMAGE_FORMATS)}."
        )
    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(image).save(buffer, format="PNG")
    else:
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_url(encoded: bytes, image_format: str = "png") -> str:
    """A `data:image/...;base64,` URL, the form OpenAI-compatible servers accept inline."""
    return f"data:image/{image_format};base64,{base64.b64encode(encoded).decode('ascii')}"


def decode_data_url(url: str) -> np.ndarray:
    """The (H, W, 3) uint8 image inside a data URL (tests and the scripted server read it)."""
    _, _, payload = url.partition(",")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as opened:
        return np.asarray(opened.convert("RGB"))
