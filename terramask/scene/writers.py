"""Write rasters (as Cloud-Optimized GeoTIFFs) and previews atomically, window by window."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from terramask.atomic import atomic_output, remove_with_sidecars, temp_sibling
from terramask.errors import OutputError

if TYPE_CHECKING:
    from terramask.scene.raster import Scene

Color = tuple[int, int, int] | tuple[int, int, int, int]


def block_windows(width: int, height: int, block_size: int) -> Iterator[Window]:
    """Windows of a regular block grid covering a raster, row by row (edge blocks clipped)."""
    for row in range(0, height, block_size):
        for col in range(0, width, block_size):
            yield Window(col, row, min(block_size, width - col), min(block_size, height - row))


class RasterWriter:
    """Write a raster window by window, finishing as a Cloud-Optimized GeoTIFF.

    Windows go to a tiled temporary GeoTIFF (memory stays flat whatever the size); on a clean
    exit GDAL's COG driver copies it, building overviews, keeping the colour table, nodata, CRS
    and transform; then the result is renamed over `path`. On an exception no file is left.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        count: int = 1,
        dtype: str | np.dtype,
        crs: Any,
        transform: Affine,
        nodata: float | None = None,
        colormap: Mapping[int, Color] | None = None,
        tags: Mapping[str, str] | None = None,
        overwrite: bool = False,
        block_size: int = 512,
        resampling: str = "nearest",
    ) -> None:
        self.path = Path(path)
        self.width, self.height, self.count = width, height, count
        self.dtype = np.dtype(dtype).name
        self.crs, self.transform, self.nodata = crs, transform, nodata
        self.colormap = dict(colormap) if colormap else None
        self.tags = dict(tags) if tags else {}
        self.overwrite = overwrite
        self.block_size = block_size
        self.resampling = Resampling[resampling].name.upper()
        self._atomic: Any = None
        self._dataset: Any = None
        self._work: Path | None = None

    def __enter__(self) -> RasterWriter:
        self._atomic = atomic_output(self.path, overwrite=self.overwrite)
        self._final_temp = self._atomic.__enter__()
        self._work = temp_sibling(self.path, "work")
        profile = {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtype": self.dtype,
            "crs": self.crs,
            "transform": self.transform,
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": self.block_size,
            "blockysize": self.block_size,
            "compress": "deflate",
            "zlevel": 1,
            "bigtiff": "IF_SAFER",
            "sparse_ok": True,
        }
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self._work, "w", **profile)
            if self.colormap:
                self._dataset.write_colormap(1, self.colormap)
            if self.tags:
                self._dataset.update_tags(**self.tags)
        except BaseException as exc:
            self._cleanup(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write an (H, W) or (C, H, W) array into `window` of the output."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.shape[1:] != (int(window.height), int(window.width)):
            raise ValueError(f"array of shape {array.shape} does not fit window {window}")
        self._dataset.write(array.astype(self.dtype, copy=False), window=window)

    def blocks(self) -> Iterator[Window]:
        """The output's block windows: writing block by block is the cheapest order."""
        return block_windows(self.width, self.height, self.block_size)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._dataset.close()
            if exc_type is None:
                self._to_cog()
        except BaseException as error:
            self._cleanup(type(error), error, error.__traceback__)
            raise
        self._cleanup(exc_type, exc, tb)

    def _to_cog(self) -> None:
        options = {
            "COMPRESS": "DEFLATE",
            "BLOCKSIZE": self.block_size,
            "OVERVIEW_RESAMPLING": self.resampling,
            "BIGTIFF": "IF_SAFER",
        }
        if np.issubdtype(np.dtype(self.dtype), np.floating):
            options["PREDICTOR"] = "YES"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                rasterio.shutil.copy(self._work, self._final_temp, driver="COG", **options)
        except RasterioError as exc:
            raise OutputError(
                f"Writing {self.path} failed (GDAL says: {exc}). Check free disk space and "
                "permissions in that folder."
            ) from exc

    def _cleanup(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._work is not None:
            remove_with_sidecars(self._work)
        self._atomic.__exit__(exc_type, exc, tb)


#: A qualitative palette for class values (cycled); also the fallback for labels a caller's
#: colormap does not name.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip
_FALLBACK = np.array(PALETTE, dtype=np.float32)


def write_preview(
    path: str | os.PathLike,
    scene: Scene,
    raster_path: str | os.PathLike,
    *,
    colormap: Mapping[int, Color],
    overwrite: bool = False,
    max_size: int = 2048,
    alpha: float = 0.5,
) -> Path:
    """Write a PNG of the scene overview with the labels of `raster_path` blended over it.

    Label 0 and the raster's nodata are left clear; labels missing from `colormap` get a
    fallback colour. A 4-tuple colour's own alpha scales `alpha`.
    """
    overview = scene.overview(max_size)
    rows, cols = overview.shape
    with rasterio.open(raster_path) as src:
        labels = src.read(1, out_shape=(rows, cols), resampling=Resampling.nearest)
        nodata = src.nodata
    image = overview.image.astype(np.float32)
    paint = labels != 0
    if nodata is not None:
        paint &= labels != nodata
    for value in np.unique(labels[paint]):
        colour = colormap.get(int(value))
        if colour is None:
            rgb, weight = _FALLBACK[int(value) % len(_FALLBACK)], alpha
        else:
            rgb = np.array(colour[:3], dtype=np.float32)
            weight = alpha * (colour[3] / 255 if len(colour) == 4 else 1.0)
        where = labels == value
        image[where] = (1 - weight) * image[where] + weight * rgb
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as temp:
        Image.fromarray(out).save(temp, format="PNG")
    return path
