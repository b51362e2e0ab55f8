"""A deterministic disc segmenter for click-synthesis tests."""

from __future__ import annotations

import numpy as np

from terramask.protocols import ImageEmbedding, MaskPrediction


class DiscSegmenter:
    """Masks of known shape: the union of discs of `radius` around the positive clicks, minus
    discs of `negative_radius` around the negative ones (pixel indices; distance <= radius).
    Multimask gives three identical candidates whose scores favour the first."""

    name = "disc-double"

    def __init__(self, radius: float = 6.0, negative_radius: float = 3.0) -> None:
        self.radius, self.negative_radius = radius, negative_radius
        self.calls: list[tuple[list, list, bool]] = []

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        return ImageEmbedding(image_size=image.shape[:2], data=None)

    def upsample(self, embedding, low_res_logits):
        return low_res_logits

    def predict(self, embedding, *, points=None, point_labels=None, boxes=None, multimask=True,
                full_resolution=True):
        h, w = embedding.image_size
        rows, cols = np.mgrid[0:h, 0:w]
        mask = np.zeros((h, w), dtype=bool)
        pts, labels = points[0], point_labels[0]
        self.calls.append(([tuple(p) for p in pts.tolist()], labels.tolist(), multimask))
        for (x, y), label in zip(pts, labels, strict=True):
            if label == 1:
                mask |= (cols - x) ** 2 + (rows - y) ** 2 <= self.radius**2
        for (x, y), label in zip(pts, labels, strict=True):
            if label == 0:
                mask &= (cols - x) ** 2 + (rows - y) ** 2 > self.negative_radius**2
        m = 3 if multimask else 1
        logits = np.where(mask, 10.0, -10.0).astype(np.float32)[None, None].repeat(m, axis=1)
        scores = np.array([[0.9, 0.5, 0.1][:m]], dtype=np.float32)
        return MaskPrediction(masks=logits > 0, logits=logits, iou_scores=scores,
                              low_res_logits=logits)
