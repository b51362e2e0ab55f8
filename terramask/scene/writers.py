"""Write rasters (as Cloud-Optimized GeoTIFFs) and previews atomically, window by window."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from PIL import Image, ImageDraw, ImageFont
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


@dataclass(frozen=True)
class Mark:
    """A prompt drawn on a preview, in scene pixels: a click (x, y) or a box (x1, y1, x2, y2).

    `kind` is one of MARK_STYLES: "positive" / "negative" clicks, a "box" prompt, an MLLM's
    box ("mllm_box") and the box it was refined to ("refined_box")."""

    kind: str
    coords: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in MARK_STYLES:
            raise ValueError(f"unknown mark kind {self.kind!r}; known: {', '.join(MARK_STYLES)}")
        object.__setattr__(self, "coords", tuple(float(v) for v in self.coords))


#: How each kind of mark is drawn and named in the legend: (legend text, colour).
MARK_STYLES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "positive": ("positive click", (0, 230, 64)),
    "negative": ("negative click", (255, 40, 40)),
    "box": ("box prompt", (255, 230, 0)),
    "mllm_box": ("MLLM box", (255, 140, 0)),
    "refined_box": ("refined box", (0, 220, 255)),
}
_CLICKS = ("positive", "negative")
#: Legend text longer than this is cut (with "...").
LEGEND_TEXT_MAX = 40
#: At most this many classes or objects are listed in a legend; a last line counts the rest.
LEGEND_ENTRIES_MAX = 40


def write_preview(
    path: str | os.PathLike,
    scene: Scene,
    raster_path: str | os.PathLike,
    *,
    colormap: Mapping[int, Color],
    legend: Sequence[tuple[str, Color]] = (),
    marks: Sequence[Mark] = (),
    overwrite: bool = False,
    max_size: int = 2048,
    alpha: float = 0.5,
) -> Path:
    """Write a PNG of the scene overview with the labels of `raster_path` blended over it.

    Label 0 and the raster's nodata are left clear; labels missing from `colormap` get a
    fallback colour. A 4-tuple colour's own alpha scales `alpha`. `marks` (prompts, in scene
    pixels) are drawn over the labels. With a `legend` ((name, colour) per class or object)
    or marks, a legend panel is added to the right of the map: each entry's colour and
    name, then each kind of mark drawn and what it is. Drawing is deterministic (Pillow's
    own font, no dates), so identical runs write identical files.
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
    out = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    if marks or legend:
        scale = (cols / scene.width, rows / scene.height)
        look = _Look.for_size(rows, cols)
        _draw_marks(ImageDraw.Draw(out), marks, scale, look)
        out = _with_legend(out, legend, [m.kind for m in marks], look)
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as temp:
        out.save(temp, format="PNG")
    return path


@dataclass(frozen=True)
class _Look:
    """Sizes that grow with the preview, so marks and text stay legible at any size."""

    line: int
    radius: int
    font_size: int

    @classmethod
    def for_size(cls, rows: int, cols: int) -> _Look:
        s = max(rows, cols) / 512
        return cls(
            line=max(1, round(1.5 * s)),
            radius=max(3, round(4 * s)),
            font_size=min(36, max(11, round(9 * s))),
        )

    @property
    def font(self) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
        return _font(self.font_size)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font (no font files needed): scalable with FreeType, else a bitmap."""
    return ImageFont.load_default(size=size)


def _draw_marks(
    draw: ImageDraw.ImageDraw, marks: Sequence[Mark], scale: tuple[float, float], look: _Look
) -> None:
    """Boxes first, then clicks on top, each kind in its colour, in the given order."""
    sx, sy = scale
    for mark in sorted(marks, key=lambda m: m.kind in _CLICKS):  # stable: order kept
        colour = MARK_STYLES[mark.kind][1]
        if mark.kind in _CLICKS:
            x, y = mark.coords
            _draw_click(draw, mark.kind, (x * sx, y * sy), colour, look)
        else:
            x1, y1, x2, y2 = mark.coords
            box = [round(x1 * sx), round(y1 * sy), round(x2 * sx) - 1, round(y2 * sy) - 1]
            box[2], box[3] = max(box[0], box[2]), max(box[1], box[3])
            draw.rectangle(box, outline=colour, width=look.line)


def _draw_click(
    draw: ImageDraw.ImageDraw,
    kind: str,
    centre: tuple[float, float],
    colour: tuple[int, int, int],
    look: _Look,
) -> None:
    """A positive click is a filled disc, a negative one a cross, both outlined in black."""
    x, y, r = round(centre[0]), round(centre[1]), look.radius
    if kind == "positive":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0),
                     width=max(1, look.line // 2))  # fmt: skip
        return
    width = max(2, look.line + 1)
    for dx in (r, -r):
        draw.line([x - dx, y - r, x + dx, y + r], fill=(0, 0, 0), width=width + 2)
    for dx in (r, -r):
        draw.line([x - dx, y - r, x + dx, y + r], fill=colour, width=width)


def _with_legend(
    image: Image.Image, legend: Sequence[tuple[str, Color]], kinds: Sequence[str], look: _Look
) -> Image.Image:
    """The image with a white legend panel to its right (taller than the image if needed):
    at most LEGEND_ENTRIES_MAX classes or objects, then the kinds of marks drawn."""
    font = look.font
    entries: list[tuple[str, Color | None, str | None]] = [
        (_legend_text(name, font), colour, None) for name, colour in legend
    ]
    if len(entries) > LEGEND_ENTRIES_MAX:
        rest = len(entries) - (LEGEND_ENTRIES_MAX - 1)
        entries = [*entries[: LEGEND_ENTRIES_MAX - 1], (f"... and {rest} more", None, None)]
    entries += [
        (_legend_text(MARK_STYLES[k][0], font), None, k) for k in MARK_STYLES if k in kinds
    ]
    size = look.font_size
    pad, gap, row = size // 2 + 2, size // 2 + 2, size + size // 2
    width = max((round(font.getlength(text)) for text, _, _ in entries), default=0)
    panel_w = pad + size + gap + width + pad
    panel_h = pad + row * len(entries) + pad
    canvas = Image.new("RGB", (image.width + panel_w, max(image.height, panel_h)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = image.width + pad
    for i, (text, colour, kind) in enumerate(entries):
        top = pad + i * row
        swatch = [x0, top, x0 + size - 1, top + size - 1]
        if kind is None:
            if colour is not None:  # else a line of text only
                draw.rectangle(swatch, fill=tuple(colour[:3]), outline=(0, 0, 0))
        elif kind in _CLICKS:
            centre = (x0 + (size - 1) / 2, top + (size - 1) / 2)
            small = _Look(look.line, max(2, size // 2 - 1), size)
            _draw_click(draw, kind, centre, MARK_STYLES[kind][1], small)
        else:
            draw.rectangle(swatch, outline=MARK_STYLES[kind][1], width=max(2, look.line))
        draw.text((x0 + size + gap, top + size / 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def _legend_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """One line, at most LEGEND_TEXT_MAX characters, in characters the font can draw."""
    text = " ".join(str(text).split())
    if len(text) > LEGEND_TEXT_MAX:
        text = text[: LEGEND_TEXT_MAX - 3] + "..."
    if not isinstance(font, ImageFont.FreeTypeFont):  # the bitmap font knows Latin-1 only
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text
