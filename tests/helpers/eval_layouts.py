"""Mini semantic-segmentation benchmark layouts (mmsegmentation's img_dir / ann_dir), built in
a temporary folder from the real rs-samples, and read back as (image, label) arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def build_layout(rs_samples: Path, name: str, root: Path, split: str = "val") -> Path:
    """root/img_dir/<split>/*.png and root/ann_dir/<split>/*.png linking to the samples."""
    for kind in ("img_dir", "ann_dir"):
        folder = root / kind / split
        folder.mkdir(parents=True)
        for source in sorted((rs_samples / name / kind).glob("*.png")):
            (folder / source.name).symlink_to(source)
    return root


def read_pairs(root: Path, split: str = "val") -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for image_path in sorted((root / "img_dir" / split).glob("*.png")):
        label_path = root / "ann_dir" / split / image_path.name
        pairs.append(
            (np.asarray(Image.open(image_path).convert("RGB")), np.asarray(Image.open(label_path)))
        )
    return pairs


def write_preset_layout(preset, root: Path, samples: dict, split: str | None = None) -> Path:
    """root in `preset`'s layout from {name: (RGB image, label array)}, PNG or TIFF by suffix."""
    img_rel, ann_rel = preset.layout.folders(split)
    for folder in (root / img_rel, root / ann_rel):
        folder.mkdir(parents=True, exist_ok=True)
    for name, (image, label) in samples.items():
        _save(np.asarray(image, np.uint8), root / img_rel / f"{name}{preset.layout.img_suffix}")
        _save(np.asarray(label), root / ann_rel / f"{name}{preset.layout.ann_suffix}")
    return root


def _save(array: np.ndarray, path: Path) -> None:
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0],
                   "count": bands.shape[0], "dtype": array.dtype.name}  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(bands)
        return
    Image.fromarray(array).save(path)
