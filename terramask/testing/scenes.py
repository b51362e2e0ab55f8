"""Write small synthetic or image-derived GeoTIFF scenes, for tests and `terramask doctor`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage

# Upper value of "bright" pixels per dtype, so 16-bit and float scenes look like real sensors.
_RANGES = {"uint8": 255.0, "uint16": 4000.0, "int16": 4000.0, "float32": 0.4, "float64": 0.4}
DEFAULT_ORIGIN = (500_000.0, 4_650_000.0)  # UTM 33N, somewhere in central Italy


def synthetic_rgb(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An (3, H, W) float image in [0, 1] and its (H, W) bool mask of "buildings".

    Textured fields and a dark road, with bright rectangular roofs and a few round trees, so
    promptable segmenters find distinct objects.
    """
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((height, width)), sigma=max(2, width // 32))
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-9)
    rgb = np.stack([0.30 + 0.15 * noise, 0.42 + 0.2 * noise, 0.25 + 0.1 * noise])
    rgb += rng.normal(0, 0.015, rgb.shape)
    rows, cols = np.mgrid[0:height, 0:width]
    road = np.abs(rows - height * 0.55 - 0.15 * (cols - width / 2)) < max(2, height // 40)
    rgb[:, road] = np.array([0.35, 0.35, 0.37])[:, None]
    buildings = np.zeros((height, width), dtype=bool)
    for _ in range(max(3, width * height // 8000)):
        h = int(rng.integers(max(4, height // 16), max(5, height // 6)))
        w = int(rng.integers(max(4, width // 16), max(5, width // 6)))
        r0 = int(rng.integers(0, max(1, height - h)))
        c0 = int(rng.integers(0, max(1, width - w)))
        buildings[r0 : r0 + h, c0 : c0 + w] = True
    buildings &= ~road
    roof = rng.uniform(0.75, 0.95, size=3)
    rgb[:, buildings] = roof[:, None]
    for _ in range(max(2, width * height // 16000)):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        radius = max(2, min(width, height) // 25)
        tree = (rows - cy) ** 2 + (cols - cx) ** 2 < radius**2
        tree &= ~buildings
        rgb[:, tree] = np.array([0.12, 0.3, 0.12])[:, None]
    return np.clip(rgb, 0.0, 1.0), buildings


def default_transform(pixel_size: float = 0.5, origin: tuple[float, float] = DEFAULT_ORIGIN):
    """North-up affine with square pixels and the top-left corner at `origin`."""
    return Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1])


def write_synthetic_scene(
    path: str | os.PathLike,
    *,
    width: int = 256,
    height: int = 256,
    count: int = 3,
    dtype: str = "uint8",
    crs: str | None = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    nodata_border: int = 0,
    rotation_deg: float = 0.0,
    seed: int = 0,
    alpha: bool = False,
    overviews: bool = False,
) -> Path:
    """Write a synthetic GeoTIFF and return its path.

    Bands beyond the third are a near-infrared-like copy of green. `nodata_border` pixels
    around the edge get the nodata value (0, or NaN for floats, unless `nodata` is given).
    `alpha` adds an alpha band (transparent on the border); `crs=None` writes no
    georeferencing at all; `rotation_deg` rotates the pixel grid about the origin.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb, _ = synthetic_rgb(width, height, seed)
    top = _RANGES.get(dtype, 255.0)
    bands = [rgb[min(b, 2)] if b < 3 else rgb[1] * 0.8 + 0.2 for b in range(count)]
    data = np.stack(bands) * top
    is_float = np.issubdtype(np.dtype(dtype), np.floating)
    if nodata_border and nodata is None and not alpha:
        nodata = float("nan") if is_float else 0
    if not is_float:
        data = np.clip(np.rint(data), 1, top)  # keep 0 free for nodata
    data = data.astype(dtype)
    border = np.zeros((height, width), dtype=bool)
    if nodata_border:
        b = nodata_border
        border[:b, :] = border[-b:, :] = border[:, :b] = border[:, -b:] = True
        if nodata is not None:
            data[:, border] = nodata
    if transform is None and crs is not None:
        transform = default_transform()
        if rotation_deg:
            transform = (
                Affine.translation(transform.c, transform.f)
                @ Affine.rotation(rotation_deg)
                @ Affine.scale(transform.a, transform.e)
            )
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count + int(alpha),
        "dtype": dtype,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if count >= 3 or alpha:
        profile["photometric"] = "RGB" if count >= 3 else "MINISBLACK"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, indexes=list(range(1, count + 1)))
            interps = [ColorInterp.gray] * count
            if count >= 3:
                interps[:3] = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
                interps[3:] = [ColorInterp.undefined] * (count - 3)
            if alpha:
                top_alpha = np.iinfo(dtype).max if not is_float else 1.0
                dst.write(np.where(border, 0, top_alpha).astype(dtype), count + 1)
                interps.append(ColorInterp.alpha)
            dst.colorinterp = interps
            if overviews:
                dst.build_overviews([2, 4, 8])
    return path


def write_geotiff_from_image(
    src_png_or_jpg: str | os.PathLike,
    dst_tif: str | os.PathLike,
    *,
    crs: str = "EPSG:32650",
    origin: tuple[float, float] = (240_000.0, 3_386_000.0),
    pixel_size: float = 0.3,
) -> Path:
    """Georeference a plain image (e.g. an rs-samples tile) as an RGB GeoTIFF.

    The default origin lies in UTM 50N near Wuhan, where the LoveDA tiles come from.
    """
    dst = Path(dst_tif)
    with Image.open(src_png_or_jpg) as img:
        rgb = np.asarray(img.convert("RGB"))
    height, width = rgb.shape[:2]
    with rasterio.open(
        dst,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=default_transform(pixel_size, origin),
        tiled=True,
        compress="deflate",
        photometric="RGB",
    ) as out:
        out.write(np.moveaxis(rgb, -1, 0))
    return dst
