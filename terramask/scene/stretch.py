"""Scene-wide contrast stretch: maps any source dtype to uint8 RGB, identically for every tile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terramask.errors import InputError

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


def parse_stretch(option: str) -> tuple[str, tuple[float, float] | None]:
    """Read a `stretch` option: "auto", "none" or "P1,P2" percentiles (e.g. "1,99")."""
    text = str(option).strip().lower()
    if text in ("auto", "none"):
        return text, None
    parts = text.split(",")
    try:
        p1, p2 = (float(p) for p in parts)
    except ValueError:
        p1 = p2 = None
    if p1 is None or p2 is None or not 0 <= p1 < p2 <= 100:
        raise InputError(
            f"The stretch option {option!r} is not understood. Use 'auto' (8-bit data as is, "
            "other data stretched between the 2nd and 98th percentiles), 'none' (8-bit as is, "
            "other data between its minimum and maximum), or two percentiles such as '1,99' "
            "with 0 <= P1 < P2 <= 100."
        )
    return "percentiles", (p1, p2)


def compute_stretch(
    sample: np.ndarray, valid: np.ndarray, dtype: str, option: str = "auto"
) -> Stretch:
    """Derive the stretch from a decimated (C, H, W) sample of the scene.

    NaN and invalid (nodata, alpha, masked) pixels are excluded, so a nodata frame or NaN
    holes do not drag the percentiles.
    """
    mode, percentiles = parse_stretch(option)
    bands = sample.shape[0]
    if dtype == "uint8" and mode in ("auto", "none"):
        return Stretch.passthrough(bands)
    if mode == "auto":
        percentiles = DEFAULT_PERCENTILES
    elif mode == "none":
        percentiles = (0.0, 100.0)
    low = np.zeros(bands)
    high = np.ones(bands)
    for b in range(bands):
        values = sample[b][valid].astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            low[b], high[b] = np.percentile(values, percentiles)
    return Stretch(low, high, description=f"percentiles {percentiles[0]:g},{percentiles[1]:g}")
