"""Find a benchmark's (image, label) pairs under its root and read them as numpy arrays.

Pairs are matched by the file name without the preset's suffix (iSAID labels carry a longer
suffix than their images), so a stray file never shifts the pairing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terramask.errors import InputError
from terramask.eval.presets import OvssPreset

LABEL_SUFFIXES = (".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image of a benchmark and its ground truth."""

    key: str
    image: Path
    label: Path


@dataclass(frozen=True)
class SampleList:
    """The matched pairs, in name order, and how many images had no label (skipped)."""

    samples: list[Sample]
    unmatched_images: int
    image_dir: Path
    label_dir: Path


def find_samples(
    preset: OvssPreset,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
) -> SampleList:
    """The (image, label) pairs of `preset`'s layout under `root`, first `limit` by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"The data set root {root} is not a folder. Point `root` at the {preset.display_name} "
            f"folder that holds {_layout_text(preset, split)}."
        )
    img_rel, ann_rel = preset.layout.folders(split)
    image_dir, label_dir = root / img_rel, root / ann_rel
    images = _files_by_key(image_dir, preset.layout.img_suffix, preset, split, root, "image")
    labels = _files_by_key(label_dir, preset.layout.ann_suffix, preset, split, root, "label")
    keys = sorted(k for k in images if k in labels)
    if not keys:
        raise InputError(
            f"No image in {image_dir} has a label of the same name in {label_dir} (images end "
            f"in {preset.layout.img_suffix}, labels in {preset.layout.ann_suffix}). Check that "
            "both folders hold the same split, converted as the preset expects."
        )
    unmatched = len(images) - len(keys)
    if limit is not None:
        keys = keys[:limit]
    samples = [Sample(k, images[k], labels[k]) for k in keys]
    return SampleList(samples, unmatched, image_dir, label_dir)


def _files_by_key(
    folder: Path, suffix: str, preset: OvssPreset, split: str | None, root: Path, what: str
) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(
            f"The {what} folder {folder} does not exist. {preset.display_name} is expected as "
            f"{_layout_text(preset, split)} under `root` {root}; point `root` at the folder "
            "that holds them, or pick the split with `split`."
        )
    found = {
        path.name[: -len(suffix)]: path
        for path in folder.iterdir()
        if path.is_file() and path.name.lower().endswith(suffix.lower())
    }
    if not found:
        raise InputError(
            f"The {what} folder {folder} holds no file ending in {suffix}. "
            f"{preset.display_name} is expected as {_layout_text(preset, split)} under `root`."
        )
    return found


def _layout_text(preset: OvssPreset, split: str | None) -> str:
    layout = preset.layout
    img_rel, ann_rel = layout.folders(split)
    return f"images {img_rel}/*{layout.img_suffix} and labels {ann_rel}/*{layout.ann_suffix}"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; grey is repeated, alpha and extra bands are dropped."""
    path = Path(path)
    array = _read_array(path, "image")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] < 3:
        array = np.repeat(array[:, :, :1], 3, axis=2)
    if array.dtype != np.uint8:
        raise InputError(
            f"The image {path} is {array.dtype}, not 8-bit: benchmark and training images are "
            "read as 8-bit RGB, as their data sets ship them; convert it first (e.g. "
            "gdal_translate -ot Byte -scale), or use a verb that stretches scenes (prompt, ask)."
        )
    return np.ascontiguousarray(array[:, :, :3])


def read_label(path: str | os.PathLike) -> np.ndarray:
    """An (H, W) integer array of label ids (single-band PNG/TIFF, or grey stored as RGB)."""
    path = Path(path)
    array = _read_array(path, "label")
    if array.ndim == 3:
        if array.shape[2] == 1 or all(
            np.array_equal(array[:, :, 0], array[:, :, c]) for c in range(1, array.shape[2])
        ):
            array = array[:, :, 0]
        else:
            raise InputError(
                f"The label {path} is a colour image, not a map of class ids. Convert its "
                "colours to ids 0..K-1 (one band) first, as the data set's converter does."
            )
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"The label {path} holds {array.dtype} values, not integer class ids. Save labels "
            "as 8- or 16-bit single-band PNG or TIFF."
        )
    return array


def _read_array(path: Path, what: str) -> np.ndarray:
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import rasterio
            from rasterio.errors import NotGeoreferencedWarning

            # Benchmark tiles are often plain TIFFs; georeferencing plays no part in scoring.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    data = src.read()
            return data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
        from PIL import Image

        with Image.open(path) as img:
            if what == "image" and img.mode not in ("L", "RGB", "RGBA", "I;16", "I"):
                img = img.convert("RGB")
            return np.asarray(img)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"The {what} {path} cannot be read ({type(exc).__name__}: {exc}). Check that it is "
            "a complete PNG, JPEG or TIFF file, or remove it from the folder."
        ) from exc


def label_files(folder: Path, suffixes: Iterable[str] = LABEL_SUFFIXES) -> dict[str, Path]:
    """Label maps in `folder` keyed by file stem (PNG/TIFF)."""
    wanted = tuple(s.lower() for s in suffixes)
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in wanted
    }
