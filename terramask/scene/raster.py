"""Open a raster scene and read stretched, masked RGB windows of it without loading it whole."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import from_gcps
from rasterio.windows import Window

from terramask.errors import InputError
from terramask.options import RasterOptions
from terramask.scene.inputs import check_source
from terramask.scene.stretch import Stretch, compute_stretch, is_passthrough

STRETCH_SAMPLE_SIZE = 1024
READ_CHUNK = 2048  # source pixels per side of one chunk of a decimated read
#: A raster georeferenced only by ground control points is placed by the affine transform that
#: fits them when it passes within this many pixels of every one of them.
GCP_TOLERANCE_PX = 1.0


class SceneWarning(UserWarning):
    """Something about a scene the user should know, but that does not stop the run."""


class GeoreferenceWarning(SceneWarning):
    """The scene has no CRS or transform: everything happens in pixel coordinates."""


@dataclass(frozen=True, eq=False)
class SceneWindow:
    """A window of a scene as the models see it, with where it lies on the map.

    `image` is (H, W, 3) uint8 RGB after the scene-wide stretch; `valid` is (H, W) bool, False
    where the source is nodata, alpha-transparent, masked, NaN, or beyond the raster edge.
    `transform` maps this array's pixels (at its own, possibly decimated, resolution) to the map.
    """

    image: np.ndarray
    valid: np.ndarray
    window: Window
    transform: Affine

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]


def gdal_path(source: str | os.PathLike) -> str:
    """Turn a path or URL into the string GDAL opens (https → /vsicurl/, s3:// → /vsis3/ …)."""
    text = os.fspath(source)
    lower = text.lower()
    if lower.startswith("/vsi"):
        return text
    if lower.startswith(("http://", "https://", "ftp://")):
        return "/vsicurl/" + text
    for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/")):
        if lower.startswith(scheme):
            return prefix + text[len(scheme) :]
    return text


def _is_local(path: str) -> bool:
    return not path.startswith("/vsi")


def _int_window(window: Window) -> Window:
    return Window(
        round(window.col_off), round(window.row_off), round(window.width), round(window.height)
    )


def _gdal_reason(exc: BaseException) -> str:
    """GDAL's most specific message: rasterio wraps it as the cause of a generic error."""
    messages = []
    while exc is not None and len(messages) < 4:
        text = str(exc).strip().rstrip(".")
        if text and "see previous exception" not in text.lower():
            messages.append(text)
        exc = exc.__cause__ or exc.__context__
    return messages[-1] if messages else "no details"


def _open_dataset(source: str, path: str) -> rasterio.io.DatasetReader:
    check_source(source)
    # Remote files: don't probe the server for sidecar files (.ovr, .msk, .aux.xml) one
    # request each; cloud-optimised rasters carry overviews and masks inside.
    options = {} if _is_local(path) else {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    try:
        with warnings.catch_warnings(), rasterio.Env(**options):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as exc:
        reason = _gdal_reason(exc)
        if "invalid dataset dimensions" in reason.lower():
            raise InputError(
                f"The raster {source} is empty (GDAL says: {reason}). There is nothing to "
                "segment; check that the file was exported completely."
            ) from exc
        if not _is_local(path):
            raise InputError(
                f"{source} cannot be opened (GDAL says: {reason}). Check the URL, the network, "
                "and credentials if the server needs them (AWS_* variables for s3://, "
                "GDAL_HTTP_* options for https://)."
            ) from exc
        raise InputError(
            f"{source} cannot be read as a raster (GDAL says: {reason}). Check that it "
            "is a complete GeoTIFF or another format GDAL reads; a download that stopped early, "
            "or a file of another kind renamed to .tif, gives this error."
        ) from exc
    if dataset.width == 0 or dataset.height == 0 or dataset.count == 0:
        size = f"{dataset.width} × {dataset.height} pixels with {dataset.count} bands"
        dataset.close()
        raise InputError(
            f"The raster {source} is empty ({size}). There is nothing to segment; check that "
            "the file was exported completely."
        )
    return dataset


def _alpha_bands(dataset: rasterio.io.DatasetReader) -> set[int]:
    alpha = set()
    for index, (interp, flags) in enumerate(
        zip(dataset.colorinterp, dataset.mask_flag_enums, strict=True), start=1
    ):
        if interp == ColorInterp.alpha or (
            MaskFlags.alpha in flags and MaskFlags.per_dataset not in flags
        ):
            alpha.add(index)
    return alpha


def select_bands(
    dataset: rasterio.io.DatasetReader, bands: Sequence[int] | None, source: str
) -> tuple[int, int, int]:
    """Pick the three 1-based bands that become R, G, B (repeats allowed for grey)."""
    alpha = _alpha_bands(dataset)
    count = dataset.count
    if bands is not None:
        for band in bands:
            if not 1 <= band <= count:
                raise InputError(
                    f"Band {band} was requested from {source}, but that file has {count} "
                    f"band{'s' if count != 1 else ''} (numbered 1 to {count}). Pick bands in "
                    "that range."
                )
            if band in alpha:
                raise InputError(
                    f"Band {band} of {source} is an alpha (transparency) band, which marks valid "
                    "pixels and is not an image band. Pick another band."
                )
        return bands * 3 if len(bands) == 1 else bands  # type: ignore[return-value]
    interps = dataset.colorinterp
    rgb = [interps.index(c) + 1 if c in interps else None for c in _RGB]
    if None not in rgb:
        return tuple(rgb)  # type: ignore[return-value]
    image_bands = [b for b in range(1, count + 1) if b not in alpha]
    if not image_bands:
        raise InputError(
            f"{source} holds only alpha (transparency) bands, no image band to segment."
        )
    if len(image_bands) >= 3:
        return tuple(image_bands[:3])  # type: ignore[return-value]
    if len(image_bands) == 2:
        warnings.warn(
            f"{source} has two image bands; showing band {image_bands[0]} as grey and ignoring "
            f"band {image_bands[1]}. Pass bands explicitly to choose.",
            SceneWarning,
            stacklevel=3,
        )
    return (image_bands[0],) * 3  # type: ignore[return-value]


_RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


class Scene:
    """One raster, opened once: its geometry, the bands shown as RGB, and the scene-wide stretch.

    Reads go window by window; the whole scene is never read at full resolution. A Scene pickles
    by its source and reopens on the other side, so it can be shipped to worker processes.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        bands: Sequence[int] | None = None,
        stretch: str | tuple[float, float] | Stretch = "auto",
    ) -> None:
        is_stretch = isinstance(stretch, Stretch)
        self.source = os.fspath(source)
        self.name = scene_name(self.source)
        self._path = gdal_path(self.source)
        # check the options before any I/O
        checked = RasterOptions(bands=bands, stretch="auto" if is_stretch else stretch)
        bands = checked.bands
        if not isinstance(stretch, Stretch):
            stretch = checked.stretch
        self._dataset = _open_dataset(self.source, self._path)
        try:
            self.bands = select_bands(self._dataset, bands, self.source)
            self._describe()
            self._probe()
            if isinstance(stretch, Stretch):
                self.stretch = stretch
            else:
                self.stretch = self._compute_stretch(stretch)
        except BaseException:
            self._dataset.close()
            raise
        if self._gcp_note is not None:
            georeferenced, note = self._gcp_note
            warnings.warn(
                note,
                SceneWarning if georeferenced else GeoreferenceWarning,
                stacklevel=3,
            )
        elif not self.georeferenced:
            warnings.warn(
                f"{self.source} has no georeferencing (no CRS, or an identity transform): "
                "working in pixel coordinates, and outputs will carry no CRS.",
                GeoreferenceWarning,
                stacklevel=3,
            )

    # -- geometry -----------------------------------------------------------------------------

    def _describe(self) -> None:
        ds = self._dataset
        self.width: int = ds.width
        self.height: int = ds.height
        self.count: int = ds.count
        self.dtype: str = str(ds.dtypes[self.bands[0] - 1])
        self.nodata = ds.nodatavals[self.bands[0] - 1]
        self.transform: Affine = ds.transform
        has_transform = not self.transform.almost_equals(Affine.identity())
        self.georeferenced: bool = ds.crs is not None and has_transform
        self.crs = ds.crs if self.georeferenced else None
        #: (placed, what to tell the user) for a raster with only ground control points
        self._gcp_note: tuple[bool, str] | None = None
        if not has_transform:
            gcps, gcp_crs = ds.gcps
            if gcps:
                self._from_gcps(list(gcps), gcp_crs)

    def _from_gcps(self, gcps: list, crs: Any) -> None:
        """Place a raster that has ground control points but no geotransform (see README).

        With a CRS, at least three GCPs not on one line, and an affine transform that passes
        within GCP_TOLERANCE_PX of each, the scene takes that transform and the GCPs' CRS;
        otherwise (a swath whose GCPs follow a curved grid, say) it stays in pixel space.
        Either way the user is told why (`_gcp_note`), with no warp or resampling done.
        """
        count = f"{len(gcps)} ground control point{'s' if len(gcps) != 1 else ''}"
        head = f"{self.source} has no geotransform, only {count}"
        unplaced = (
            ": working in pixel coordinates, and outputs will carry no CRS. To place it on the "
            "map, warp it first (e.g. gdalwarp -tps, or -order 2)."
        )
        transform, worst = _fit_gcps(gcps)
        if crs is None:
            self._gcp_note = (False, f"{head} and they have no CRS{unplaced}")
        elif transform is None:
            self._gcp_note = (
                False,
                f"{head}, too few or all on one line to fit a transform (at least 3 are "
                f"needed){unplaced}",
            )
        elif worst > GCP_TOLERANCE_PX:
            self._gcp_note = (
                False,
                f"{head}, which no affine transform fits (it misses one by {worst:.1f} px, more "
                f"than {GCP_TOLERANCE_PX:g} px; the image is warped){unplaced}",
            )
        else:
            self.transform = transform
            self.crs = crs
            self.georeferenced = True
            self._gcp_note = (
                True,
                f"{head}: placed by the affine transform that fits them (within {worst:.2f} px "
                f"of each) in {crs.to_string() or 'their CRS'}; outputs carry that transform.",
            )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the scene in its CRS (envelope when rotated)."""
        corners = ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))
        xs, ys = zip(*(self.transform @ c for c in corners), strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Ground size of a pixel along x and y, in CRS units (also right for rotated grids)."""
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    def window_transform(self, window: Window) -> Affine:
        """The affine of a full-resolution window (offsets may be negative or beyond the edge)."""
        window = _int_window(window)
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    # -- reading ------------------------------------------------------------------------------

    def _unique_bands(self) -> tuple[list[int], list[int]]:
        unique = sorted(set(self.bands))
        return unique, [unique.index(b) for b in self.bands]

    def _read_raw(
        self,
        window: Window,
        out_shape: tuple[int, int],
        resampling: Resampling,
        *,
        with_values: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Source values (C, H, W) of the unique bands and validity, boundless.

        Pixels beyond the raster are zero and invalid. Under decimation GDAL averages only
        valid source pixels and marks an output pixel valid when *any* of its source pixels is.
        Without `with_values` only the masks are read (values stay zero), except for float
        data, where NaN also marks a pixel invalid and so the values must be read.
        """
        ds = self._dataset
        if ds.closed:
            raise ValueError(f"the scene {self.source} is closed")
        unique, _ = self._unique_bands()
        oh, ow = out_shape
        if oh <= 0 or ow <= 0 or window.width <= 0 or window.height <= 0:
            raise ValueError(f"empty window {window} or output shape {out_shape}")
        fx, fy = window.width / ow, window.height / oh
        data = np.zeros((len(unique), oh, ow), dtype=ds.dtypes[unique[0] - 1])
        valid = np.zeros((oh, ow), dtype=bool)
        c0, r0 = max(window.col_off, 0), max(window.row_off, 0)
        c1 = min(window.col_off + window.width, self.width)
        r1 = min(window.row_off + window.height, self.height)
        if c1 <= c0 or r1 <= r0:
            return data, valid
        x0 = min(round((c0 - window.col_off) / fx), ow - 1)
        y0 = min(round((r0 - window.row_off) / fy), oh - 1)
        x1 = max(min(round((c1 - window.col_off) / fx), ow), x0 + 1)
        y1 = max(min(round((r1 - window.row_off) / fy), oh), y0 + 1)
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        shape = (len(unique), y1 - y0, x1 - x0)
        if shape[1:] == (inner.height, inner.width):
            resampling = Resampling.nearest
        floating = np.issubdtype(data.dtype, np.floating)
        try:
            values = (
                _chunked(ds.read, unique, inner, shape, resampling)
                if with_values or floating
                else None
            )
            masks = _chunked(ds.read_masks, unique, inner, shape, resampling)
        except RasterioError as exc:
            raise InputError(
                f"Reading pixels (columns {c0}–{c1}, rows {r0}–{r1}) of {self.source} failed "
                f"(GDAL says: {_gdal_reason(exc)}). The file is probably truncated or corrupt; "
                "check it with gdalinfo -checksum, or download it again."
            ) from exc
        inside = (masks > 0).any(axis=0)
        if values is not None:
            if floating:
                inside &= ~np.isnan(values).any(axis=0)
            data[:, y0:y1, x0:x1] = values
        valid[y0:y1, x0:x1] = inside
        return data, valid

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> SceneWindow:
        """Read a window as stretched RGB, optionally decimated to `out_shape` (rows, cols).

        The window may extend beyond the raster; that part comes back black and invalid.
        Decimation averages the valid source pixels (see `_read_raw` for validity).
        """
        window = _int_window(window)
        if out_shape is None:
            out_shape = (window.height, window.width)
        out_shape = (int(out_shape[0]), int(out_shape[1]))
        data, valid = self._read_raw(window, out_shape, Resampling.average)
        _, order = self._unique_bands()
        image = self.stretch.apply(data[order], valid)
        scale = Affine.scale(window.width / out_shape[1], window.height / out_shape[0])
        return SceneWindow(image, valid, window, self.window_transform(window) @ scale)

    def read_valid(self, window: Window) -> np.ndarray:
        """Only the validity of a full-resolution window: what output writers need, cheaply."""
        window = _int_window(window)
        shape = (window.height, window.width)
        return self._read_raw(window, shape, Resampling.nearest, with_values=False)[1]

    def overview(self, max_size: int) -> SceneWindow:
        """The whole scene decimated so its long side is at most `max_size` pixels."""
        shape = overview_shape(self.width, self.height, max_size)
        return self.read(Window(0, 0, self.width, self.height), shape)

    def _probe(self) -> None:
        """Read the first and last pixel, so a truncated file fails now, with a clear message."""
        for col, row in ((0, 0), (self.width - 1, self.height - 1)):
            self._read_raw(Window(col, row, 1, 1), (1, 1), Resampling.nearest)

    def _stretch_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """About STRETCH_SAMPLE_SIZE² source values (C, H, W) and validity, read cheaply.

        An overview is used when the file has one. Otherwise a small scene is read decimated
        (nearest), and a large one as a spread-out grid of whole, block-aligned windows: a
        decimated read of a big file without overviews decodes every block, and once a row
        of blocks outgrows GDAL's cache, decodes each one many times (minutes at 16k²).
        """
        whole = Window(0, 0, self.width, self.height)
        factors = self._dataset.overviews(self.bands[0])
        shapes = [(math.ceil(self.height / f), math.ceil(self.width / f)) for f in factors]
        shapes = [s for s in shapes if max(s) >= STRETCH_SAMPLE_SIZE]
        if shapes:
            return self._read_raw(whole, min(shapes, key=max), Resampling.nearest)
        if self.width * self.height <= 4 * STRETCH_SAMPLE_SIZE**2:
            shape = overview_shape(self.width, self.height, STRETCH_SAMPLE_SIZE)
            return self._read_raw(whole, shape, Resampling.nearest)
        windows = sample_windows(
            self.width, self.height, self._dataset.block_shapes[0], STRETCH_SAMPLE_SIZE**2
        )
        pieces = [self._read_raw(w, (w.height, w.width), Resampling.nearest) for w in windows]
        data = np.concatenate([d.reshape(d.shape[0], 1, -1) for d, _ in pieces], axis=2)
        valid = np.concatenate([v.reshape(1, -1) for _, v in pieces], axis=1)
        return data, valid

    def _compute_stretch(self, option: str | tuple[float, float]) -> Stretch:
        if is_passthrough(self.dtype, option):
            return Stretch.passthrough(3)
        data, valid = self._stretch_sample()
        _, order = self._unique_bands()
        return compute_stretch(data[order], valid, self.dtype, option)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self._dataset.close()

    @property
    def closed(self) -> bool:
        return self._dataset.closed

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "bands": self.bands, "stretch": self.stretch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SceneWarning)
            self.__init__(state["source"], bands=state["bands"], stretch=state["stretch"])

    def __repr__(self) -> str:
        crs = self.crs.to_string() if self.crs else "no CRS"
        return (
            f"Scene({self.source!r}, {self.width}×{self.height}, bands={self.bands}, "
            f"{self.dtype}, {crs})"
        )


def _chunked(
    read: Any, bands: list[int], inner: Window, shape: tuple[int, ...], resampling: Resampling
) -> np.ndarray:
    """`read(bands, window=inner, out_shape=shape)`, in chunks when a large area is decimated.

    GDAL decimates output row by output row; once the blocks under one row (all bands)
    outgrow its block cache, every block is decoded again for each output row it feeds
    (minutes for the overview of a 16k² scene without overviews). Chunks of about
    READ_CHUNK² source pixels, cut on output pixel edges (float windows), keep each chunk's
    blocks cached and give the same pixels as one read.
    """
    rows, cols = shape[1], shape[2]
    fy, fx = inner.height / rows, inner.width / cols
    if inner.width * inner.height <= 4 * READ_CHUNK**2 or (fy <= 1 and fx <= 1):
        return read(bands, window=inner, out_shape=shape, resampling=resampling)
    step_r = max(1, int(READ_CHUNK / fy))
    step_c = max(1, int(READ_CHUNK / fx))
    out = None
    for r0 in range(0, rows, step_r):
        r1 = min(rows, r0 + step_r)
        for c0 in range(0, cols, step_c):
            c1 = min(cols, c0 + step_c)
            window = Window(
                inner.col_off + c0 * fx, inner.row_off + r0 * fy, (c1 - c0) * fx, (r1 - r0) * fy
            )
            part = read(bands, window=window, out_shape=(shape[0], r1 - r0, c1 - c0),
                        resampling=resampling)  # fmt: skip
            if out is None:
                out = np.empty(shape, dtype=part.dtype)
            out[:, r0:r1, c0:c1] = part
    return out


def _fit_gcps(gcps: Sequence[Any]) -> tuple[Affine | None, float]:
    """The least-squares affine (pixel → map) through ground control points, and the largest
    distance in pixels between a GCP's pixel and where the affine puts its map position;
    (None, inf) with fewer than 3 GCPs or when they lie on one line."""
    if len(gcps) < 3:
        return None, math.inf
    transform = from_gcps(gcps)
    if not transform.determinant or not all(map(math.isfinite, transform[:6])):
        return None, math.inf
    back = ~transform
    worst = 0.0
    for gcp in gcps:
        col, row = back @ (gcp.x, gcp.y)
        worst = max(worst, math.hypot(col - gcp.col, row - gcp.row))
    return transform, worst


def sample_windows(
    width: int, height: int, block_shape: tuple[int, int], pixels: int
) -> list[Window]:
    """Windows of whole blocks, spread evenly over the raster, holding about `pixels` in all.

    Each window is one block (at least 256 rows and columns, at most 1024 by 1024 pixels, so
    striped files give row bands), so every block read is decoded once.
    """
    bh, bw = block_shape
    wh = min(height, max(bh, 256) if bh <= 1024 else 1024)
    ww = min(width, max(bw, 256) if bw <= 1024 else 1024)
    count = max(1, round(pixels / (wh * ww)))
    per_row = max(1, round(math.sqrt(count * width / height)))
    per_col = max(1, math.ceil(count / per_row))
    rows = np.linspace(0, height - wh, per_col).round().astype(int)
    cols = np.linspace(0, width - ww, per_row).round().astype(int)
    rows = rows // bh * bh if bh <= wh else rows
    cols = cols // bw * bw if bw <= ww else cols
    return [Window(int(c), int(r), ww, wh) for r in np.unique(rows) for c in np.unique(cols)]


def overview_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(rows, cols) of a decimated shape whose long side is at most max_size."""
    scale = min(1.0, max_size / max(width, height))
    rows = min(max_size, max(1, round(height * scale)))
    cols = min(max_size, max(1, round(width * scale)))
    return rows, cols


def scene_name(source: str) -> str:
    """The name outputs of `source` are called by: its file name without the suffix."""
    name = source.rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    return Path(name).stem or "scene"


def open_scene(source: str | os.PathLike, raster: RasterOptions = RasterOptions()) -> Scene:
    """Open a local path or GDAL URL as a Scene (see `Scene`) with `raster`'s bands and stretch.

    Raises:
        InputError: The raster cannot be opened or read, or a band does not exist.
    """
    return Scene(source, bands=raster.bands, stretch=raster.stretch)
