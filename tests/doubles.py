"""Deterministic stand-ins for the model protocols, for exact expectations in tests."""

from __future__ import annotations

import numpy as np

from terramask.methods.protocols import ImageEmbedding, MaskPrediction


class ShapeSegmenter:
    """A segmenter whose masks are known shapes: a box prompt fills its box; clicks give a
    disc of `radius` around the mean positive click, minus discs around negative clicks.

    With multimask it returns three candidates (radius/2, radius, 2*radius) whose predicted
    IoU favours the middle one, so choosing the best candidate is observable.
    """

    name = "shape-double"

    def __init__(self, radius: float = 6.0) -> None:
        self.radius = radius
        self.embed_calls = 0
        self.predict_calls: list[dict] = []

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        self.embed_calls += 1
        return ImageEmbedding(image_size=image.shape[:2], data=None)

    def predict(self, embedding, *, points=None, point_labels=None, boxes=None, multimask=True):
        self.predict_calls.append(
            {"points": points, "labels": point_labels, "boxes": boxes, "multimask": multimask}
        )
        h, w = embedding.image_size
        batch = len(points) if points is not None else len(boxes)
        radii = [self.radius / 2, self.radius, self.radius * 2] if multimask else [self.radius]
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        logits = np.full((batch, len(radii), h, w), -10.0, dtype=np.float32)
        for b in range(batch):
            for m, r in enumerate(radii):
                logit = np.full((h, w), -10.0, dtype=np.float32)
                if boxes is not None:
                    x1, y1, x2, y2 = boxes[b]
                    inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
                    logit[inside] = 10.0
                if points is not None:
                    labels = point_labels[b]
                    pos = points[b][labels == 1]
                    if len(pos) and boxes is None:
                        cx, cy = pos.mean(axis=0)
                        logit[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 10.0
                    for nx, ny in points[b][labels == 0]:
                        logit[(xx - nx) ** 2 + (yy - ny) ** 2 <= r * r] = -10.0
                logits[b, m] = logit
        iou = np.tile(np.array([0.5, 0.9, 0.7][: len(radii)] if multimask else [0.8]), (batch, 1))
        return MaskPrediction(
            masks=logits > 0,
            logits=logits,
            iou_scores=iou.astype(np.float32),
            low_res_logits=logits,
        )
