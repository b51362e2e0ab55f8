"""A segmenter wrapper that counts decoded points: how tests and benchmarks see pruning."""

from __future__ import annotations

from typing import Any


class CountingSegmenter:
    """Passes every call through to a segmenter and counts the points it decodes."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter, self.name, self.points = segmenter, segmenter.name, 0

    def embed(self, image: Any) -> Any:
        return self.segmenter.embed(image)

    def upsample(self, embedding: Any, low_res_logits: Any) -> Any:
        return self.segmenter.upsample(embedding, low_res_logits)

    def predict(self, embedding: Any, **prompts: Any) -> Any:
        self.points += len(prompts["points"])
        return self.segmenter.predict(embedding, **prompts)
