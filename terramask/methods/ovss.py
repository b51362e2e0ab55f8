"""Open-vocabulary semantic segmentation of one image: a dense engine, optionally SAM voting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terramask.methods.mask_generation import generate_masks, generation_description
from terramask.methods.vocabulary import NO_CLASS, ClassVocabulary
from terramask.methods.voting import vote_masks
from terramask.options import GenerationSettings
from terramask.protocols import Segmenter, SemanticEngine


@dataclass
class OvssPredictor:
    """Labels and a confidence map for an image and a vocabulary.

    The engine gives per-class probabilities (dense CLIP, SAM 3 concepts); pixels whose best
    probability is below `threshold` become the vocabulary's background (or NO_CLASS). With a
    `segmenter`, SAM's automatic masks then vote (the SAM+CLIP paper's engine). With
    `single_class` (a class index), masks are kept for that class only when at least
    `min_fraction` of their pixels carry it. `generation` says how SAM's masks are made
    (`methods.mask_generation`: the reference AMG or the fast variant, pruning, clean-up).
    """

    engine: SemanticEngine
    segmenter: Segmenter | None = None
    threshold: float | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    single_class: int | None = None
    min_fraction: float = 0.5

    @property
    def name(self) -> str:
        if self.segmenter is None:
            return self.engine.name
        return f"{self.segmenter.name}+{self.engine.name}"

    @property
    def configuration(self) -> dict[str, Any]:
        """How this predictor labels, for reports: the dense engine's own configuration (its
        upsampler: "bilinear" or SimFeatUp) and, with a segmenter, the mask generation."""
        described: dict[str, Any] = {"predictor": self.name}
        dense = getattr(self.engine, "configuration", None)
        if dense is not None:
            described["dense"] = dict(dense)
        if self.segmenter is not None:
            described["generation"] = generation_description(self.generation)
            described["single_class"] = self.single_class
            described["min_fraction"] = self.min_fraction
        return described

    def predict(
        self,
        image: np.ndarray,
        vocabulary: ClassVocabulary,
        *,
        valid: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels (H, W) int16 class indexes or NO_CLASS, confidence (H, W) float32)."""
        from terramask.methods.labels import labels_from_probabilities

        probabilities = self.engine.probabilities(image, vocabulary)
        labels = labels_from_probabilities(probabilities, vocabulary, self.threshold)
        confidence = probabilities.max(axis=0).astype(np.float32)
        if self.segmenter is not None:
            # the dense labels come first: they let mask generation skip settled points
            proposals = generate_masks(
                self.segmenter, image, self.generation, valid=valid, dense=labels
            )
            reject = NO_CLASS if vocabulary.background is None else vocabulary.background
            labels = vote_masks(
                labels,
                proposals,
                single_class=self.single_class,
                min_fraction=self.min_fraction,
                reject=reject,
            )
        if valid is not None:
            labels = np.where(valid, labels, NO_CLASS)
            confidence = np.where(valid, confidence, 0.0).astype(np.float32)
        return labels.astype(np.int16), confidence
