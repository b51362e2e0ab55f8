"""Dense label maps made wrong the way dense CLIP is wrong, in patches, from a ground truth:
what mask voting and point pruning are tested (and benchmarked) against."""

from __future__ import annotations

import numpy as np


def patchy(truth: np.ndarray, patch: int = 16, wrong: float = 0.15, seed: int = 0) -> np.ndarray:
    """Dense labels as a patch-level classifier gets them (the majority label of each `patch`-px
    patch, with a `wrong` share of the patches set to a random class, seeded); edge patches
    of sizes that are not a multiple of `patch` are padded by repeating the border."""
    rng = np.random.default_rng(seed)
    h, w = truth.shape
    rows, cols = -(-h // patch), -(-w // patch)
    padded = np.pad(truth, ((0, rows * patch - h), (0, cols * patch - w)), mode="edge")
    blocks = padded.reshape(rows, patch, cols, patch).swapaxes(1, 2).reshape(rows, cols, -1)
    modes = np.apply_along_axis(lambda v: np.bincount(v).argmax(), 2, blocks)
    flip = rng.random(modes.shape) < wrong
    modes[flip] = rng.integers(0, truth.max() + 1, int(flip.sum()))
    return np.kron(modes, np.ones((patch, patch), dtype=modes.dtype))[:h, :w]
