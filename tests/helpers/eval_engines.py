"""Semantic-engine doubles for evaluation tests: they look the answer up by image content."""

from __future__ import annotations

import hashlib

import numpy as np

from terramask.eval.metrics import reduce_zero_label


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class OracleEngine:
    """One-hot probabilities of a known label map per image (class ids after reduction).

    `remap` maps true class -> predicted class, to be systematically wrong in a known way;
    ignored pixels (ids outside the vocabulary) get class 0.
    """

    name = "oracle"

    def __init__(self, answers: dict[str, np.ndarray], remap: dict[int, int] | None = None):
        self.answers = answers
        self.remap = remap or {}
        self.calls = 0

    def probabilities(self, image: np.ndarray, vocabulary) -> np.ndarray:
        self.calls += 1
        labels = self.answers[image_key(image)].astype(np.int64)
        k = len(vocabulary)
        predicted = labels.copy()
        for true, wrong in self.remap.items():
            predicted[labels == true] = wrong
        predicted[(predicted < 0) | (predicted >= k)] = 0
        probs = np.zeros((k, *labels.shape), dtype=np.float32)
        np.put_along_axis(probs, predicted[None], 1.0, axis=0)
        return probs


class UniformEngine:
    """Equal probability for every class: every pixel falls below any positive threshold."""

    name = "uniform"

    def probabilities(self, image: np.ndarray, vocabulary) -> np.ndarray:
        k = len(vocabulary)
        return np.full((k, *image.shape[:2]), 1.0 / k, dtype=np.float32)


def answers_for(pairs, reduce: bool) -> dict[str, np.ndarray]:
    """image key -> label ids as the metric sees them, from (image, label) arrays."""
    return {
        image_key(image): (reduce_zero_label(label) if reduce else label.astype(np.int64))
        for image, label in pairs
    }
