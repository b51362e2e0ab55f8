"""Deterministic stand-ins for the model protocols, for exact expectations in tests."""

from __future__ import annotations

import numpy as np

from terramask.protocols import ImageEmbedding, MaskPrediction


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

    def upsample(self, embedding, low_res_logits):
        return low_res_logits  # this double's "low-res" logits are already full size

    def predict(
        self,
        embedding,
        *,
        points=None,
        point_labels=None,
        boxes=None,
        multimask=True,
        full_resolution=True,
    ):
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
            masks=logits > 0 if full_resolution else None,
            logits=logits if full_resolution else None,
            iou_scores=iou.astype(np.float32),
            low_res_logits=logits,
        )


class ComponentSegmenter:
    """A segmenter that knows the objects: a click returns the connected component of a
    reference label map under it (all three candidates, the first with the best score)."""

    name = "component-double"

    def __init__(self, reference: np.ndarray) -> None:
        from scipy import ndimage

        self.components = np.zeros(reference.shape, dtype=np.int64)
        offset = 0
        for value in np.unique(reference):
            labels, count = ndimage.label(reference == value)
            self.components[labels > 0] = labels[labels > 0] + offset
            offset += count
        self.embed_calls = 0

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        self.embed_calls += 1
        return ImageEmbedding(image_size=image.shape[:2], data=None)

    def upsample(self, embedding, low_res_logits):
        return low_res_logits  # this double's "low-res" logits are already full size

    def predict(
        self,
        embedding,
        *,
        points=None,
        point_labels=None,
        boxes=None,
        multimask=True,
        full_resolution=True,
    ):
        h, w = embedding.image_size
        m = 3 if multimask else 1
        logits = np.full((len(points), m, h, w), -10.0, dtype=np.float32)
        for b, ((x, y),) in enumerate(points):
            inside = self.components == self.components[int(y), int(x)]
            logits[b, :, inside] = 10.0
        iou = np.tile(np.array([0.95, 0.6, 0.5][:m], dtype=np.float32), (len(points), 1))
        return MaskPrediction(
            masks=logits > 0 if full_resolution else None,
            logits=logits if full_resolution else None,
            iou_scores=iou,
            low_res_logits=logits,
        )


class GranularSegmenter(ComponentSegmenter):
    """SAM-like granularity: a click gives three accepted candidates, the part of its
    ground-truth component within `radius` of the click, the component, and the component
    with every component touching it (a "whole" that crosses classes, as SAM's third output
    often does). Unlike `ComponentSegmenter`, points of one object give different masks, so
    skipping points can change the result."""

    name = "granular-double"

    def __init__(self, reference: np.ndarray, radius: float) -> None:
        super().__init__(reference)
        self.radius = radius
        self._wholes: dict[int, np.ndarray] = {}

    def _whole(self, component: int) -> np.ndarray:
        from scipy import ndimage

        if component not in self._wholes:
            inside = self.components == component
            ring = ndimage.binary_dilation(inside, iterations=2) & ~inside
            touching = np.append(np.unique(self.components[ring]), component)
            self._wholes[component] = np.isin(self.components, touching)
        return self._wholes[component]

    def predict(self, embedding, *, points=None, point_labels=None, boxes=None,
                multimask=True, full_resolution=True):  # fmt: skip
        h, w = embedding.image_size
        logits = np.full((len(points), 3, h, w), -10.0, dtype=np.float32)
        yy, xx = np.ogrid[0:h, 0:w]
        for b, ((x, y),) in enumerate(points):
            component = self.components[int(y), int(x)]
            inside = self.components == component
            near = (xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2
            logits[b, 0][inside & near] = 10.0
            logits[b, 1][inside] = 10.0
            logits[b, 2][self._whole(component)] = 10.0
        iou = np.tile(np.array([0.90, 0.95, 0.92], dtype=np.float32), (len(points), 1))
        return MaskPrediction(None, None, iou, logits)


class ColourEngine:
    """A semantic engine whose per-pixel probabilities depend on that pixel's colour only
    (softmax of negative distances to one prototype colour per class), so that results
    cannot depend on tiling: what a tiled run must reproduce exactly."""

    name = "colour-double"

    def __init__(self, prototypes: np.ndarray, sharpness: float = 0.05) -> None:
        self.prototypes = np.asarray(prototypes, dtype=np.float32)  # (K, 3)
        self.sharpness = sharpness
        self.calls = 0

    def probabilities(self, image: np.ndarray, vocabulary) -> np.ndarray:
        self.calls += 1
        pixels = image.astype(np.float32)
        distance = np.linalg.norm(pixels[None] - self.prototypes[:, None, None, :], axis=-1)
        logits = -self.sharpness * distance
        logits -= logits.max(axis=0, keepdims=True)
        weights = np.exp(logits)
        return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


class InterruptedColourEngine(ColourEngine):
    """A ColourEngine that raises KeyboardInterrupt (a user's Ctrl-C) on call `stop_at`
    (never when it is None)."""

    def __init__(self, prototypes: np.ndarray, stop_at: int | None = None) -> None:
        super().__init__(prototypes)
        self.stop_at = stop_at

    def probabilities(self, image: np.ndarray, vocabulary) -> np.ndarray:
        if self.calls + 1 == self.stop_at:
            raise KeyboardInterrupt
        return super().probabilities(image, vocabulary)
