"""Open-vocabulary semantic segmentation with a concept segmenter (SAM 3, SegEarth-OV3 style).

Per synonym phrase SAM 3 gives instance masks with scores, a semantic map and a presence
probability. SegEarth-OV3 fuses them into one probability map per phrase:

    instance map = max over instances of sigmoid(mask logits) * score   (0 with no instance)
    fused        = max(instance map, sigmoid(semantic logits)) * presence

and a class takes the max over its synonyms. Instance aggregation keeps small objects the
semantic head blurs; the semantic head covers stuff (land cover) the instance head misses;
presence switches off classes that are not in the tile at all.

Note that SAM 3's instance scores (what `Sam3ConceptSegmenter` returns) already include the
presence probability, so presence weighs the instance branch twice; that is SegEarth-OV3's
published arithmetic, kept here on purpose.
"""

from __future__ import annotations

import numpy as np

from terramask.errors import InputError
from terramask.methods.vocabulary import ClassVocabulary
from terramask.protocols import ConceptResult, ConceptSegmenter


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow warnings for large |x| (±inf give 0 and 1)."""
    logits = np.asarray(logits, dtype=np.float32)
    return np.exp(-np.logaddexp(np.float32(0.0), -logits)).astype(np.float32, copy=False)


def fuse_concept(result: ConceptResult, *, instance_threshold: float = 0.0) -> np.ndarray:
    """(H, W) float32 probability of one phrase from its instances, semantic map and presence.

    Instances whose score is below `instance_threshold` are ignored.
    """
    semantic = sigmoid(result.semantic_logits)
    scores = np.asarray(result.instance_scores, dtype=np.float32).reshape(-1)
    keep = scores >= instance_threshold
    fused = semantic
    if keep.any():
        masks = sigmoid(np.asarray(result.instance_logits)[keep])
        instances = (masks * scores[keep][:, None, None]).max(axis=0)
        fused = np.maximum(instances, semantic)
    return (fused * np.float32(result.presence)).astype(np.float32, copy=False)


class ConceptEngine:
    """A `SemanticEngine` that asks a concept segmenter about every synonym and fuses the answers.

    `instance_threshold` drops instances scored below it before fusion. It defaults to 0.0
    (keep every instance the segmenter returns) because the SAM 3 adapter already applies
    SAM 3's own confidence threshold (0.5) to its scores.
    """

    def __init__(self, concept_segmenter: ConceptSegmenter, *, instance_threshold: float = 0.0):
        self.segmenter = concept_segmenter
        self.instance_threshold = float(instance_threshold)
        self.name = f"concepts:{getattr(concept_segmenter, 'name', 'segmenter')}"

    def probabilities(self, image: np.ndarray, vocabulary: ClassVocabulary) -> np.ndarray:
        """(K, H, W) float32 per-class probabilities of an (H, W, 3) uint8 image."""
        height, width = image.shape[:2]
        prompts = vocabulary.prompts
        phrases = list(dict.fromkeys(name for name, _ in prompts))  # each phrase asked once
        results = self.segmenter.segment_concepts(image, phrases)
        if len(results) != len(phrases):
            raise InputError(
                f"The concept segmenter '{self.segmenter.name}' answered {len(results)} of "
                f"{len(phrases)} phrases; it must return one result per phrase."
            )
        by_phrase = dict(zip(phrases, results, strict=True))
        probabilities = np.zeros((len(vocabulary), height, width), dtype=np.float32)
        fused_cache: dict[str, np.ndarray] = {}
        for name, index in prompts:
            if name not in fused_cache:
                result = by_phrase[name]
                if result.semantic_logits.shape != (height, width):
                    raise InputError(
                        f"The concept segmenter returned a {result.semantic_logits.shape} map for "
                        f"'{name}' on a {(height, width)} image; results must be at image size."
                    )
                fused_cache[name] = fuse_concept(
                    result, instance_threshold=self.instance_threshold)
            np.maximum(probabilities[index], fused_cache[name], out=probabilities[index])
        return probabilities
