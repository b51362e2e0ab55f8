"""Turns per-class probabilities into a label map, with a background threshold."""

from __future__ import annotations

import numpy as np

from terramask.methods.vocabulary import NO_CLASS, ClassVocabulary


def labels_from_probabilities(
    probabilities: np.ndarray, vocabulary: ClassVocabulary, threshold: float | None = None
) -> np.ndarray:
    """(H, W) int16 argmax of (K, H, W) probabilities; unsure pixels become background.

    A pixel whose best probability is below `threshold` gets `vocabulary.background`, or
    NO_CLASS when the vocabulary names none: dense CLIP is confidently wrong on things no
    class describes, and the per-dataset threshold is how the papers keep those out.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] != len(vocabulary):
        raise ValueError(
            f"expected ({len(vocabulary)}, H, W) class probabilities, got {probabilities.shape}"
        )
    labels = probabilities.argmax(axis=0).astype(np.int16)
    if threshold is not None:
        reject = NO_CLASS if vocabulary.background is None else vocabulary.background
        labels[probabilities.max(axis=0) < threshold] = reject
    return labels
