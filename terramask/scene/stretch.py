"""Scene-wide contrast stretch: maps any source dtype to uint8 RGB, identically for every tile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True, eq=False)
class Stretch:
    """Per-band linear stretch from [low, high] to [0, 255].

    It is computed once per scene and applied pointwise, so a pixel gets the same byte whether
    it is read in a small tile or inside a larger window.
    """

    low: np.ndarray
    high: np.ndarray
    identity: bool = False
    description: str = ""

    @classmethod
    def passthrough(cls, bands: int = 3) -> Stretch:
        """The no-op stretch for uint8 data: values already are display bytes."""
        return cls(np.zeros(bands), np.full(bands, 255.0), identity=True, description="none")

    def apply(self, array: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Stretch a (C, H, W) array to an (H, W, C) uint8 image; invalid pixels become 0."""
        if array.ndim != 3:
            raise ValueError(f"expected a (C, H, W) array, got shape {array.shape}")
        if self.identity and array.dtype == np.uint8:
            out = np.moveaxis(array, 0, -1).copy()
        else:
            low = self.low.astype(np.float32)[:, None, None]
            span = (self.high - self.low).astype(np.float32)
            # A constant band has no range: map it to 0 instead of dividing by zero.
            scale = np.where(span > 0, 255.0 / np.where(span > 0, span, 1.0), 0.0)
            scaled = (array.astype(np.float32) - low) * scale.astype(np.float32)[:, None, None]
            scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
            out = np.moveaxis(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), 0, -1)
            out = np.ascontiguousarray(out)
        if valid is not None:
            out[~valid] = 0
        return out


def is_passthrough(dtype: str, option: str | tuple[float, float]) -> bool:
    """8-bit data is shown as it is unless percentiles are asked for."""
    return dtype == "uint8" and option in ("auto", "none")


def compute_stretch(
    sample: np.ndarray, valid: np.ndarray, dtype: str, option: str | tuple[float, float] = "auto"
) -> Stretch:
    """Derive the stretch from a decimated (C, H, W) sample of the scene.

    `option` is `RasterOptions.stretch`: "auto", "none" or (P1, P2) percentiles. NaN and
    invalid (nodata, alpha, masked) pixels are excluded, so a nodata frame or NaN holes do
    not drag the percentiles.
    """
    bands = sample.shape[0]
    if is_passthrough(dtype, option):
        return Stretch.passthrough(bands)
    if option == "auto":
        percentiles = DEFAULT_PERCENTILES
    elif option == "none":
        percentiles = (0.0, 100.0)
    else:
        percentiles = (float(option[0]), float(option[1]))
    low = np.zeros(bands)
    high = np.ones(bands)
    for b in range(bands):
        values = sample[b][valid].astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            low[b], high[b] = np.percentile(values, percentiles)
    return Stretch(low, high, description=f"percentiles {percentiles[0]:g},{percentiles[1]:g}")
