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
