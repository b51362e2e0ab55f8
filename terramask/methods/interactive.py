"""Interactive segmentation: point and box prompts on one image, one mask per object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from terramask.protocols import ImageEmbedding, Segmenter

PAD_LABEL = -1


@dataclass(frozen=True)
class PointBoxPrompt:
    """One object's prompt in the image's pixel frame: any clicks, at most one box."""

    points: np.ndarray  # (N, 2) float x, y
    labels: np.ndarray  # (N,) int: 1 positive, 0 negative
    box: np.ndarray | None = None  # (4,) float x1, y1, x2, y2

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise ValueError("points and labels must have the same length")
        if len(self.points) == 0 and self.box is None:
            raise ValueError("a prompt needs at least one point or a box")

    @property
    def wants_multimask(self) -> bool:
        """A lone click is ambiguous (part, object, group): let SAM propose three masks.

        SAM's authors recommend multimask output for a single point and a single mask
        once the prompt is unambiguous (a box or several clicks).
        """
        return self.box is None and len(self.points) == 1


@dataclass(frozen=True)
class ObjectMask:
    """The chosen mask of one prompt, at the image's resolution."""

    mask: np.ndarray  # (H, W) bool
    logits: np.ndarray  # (H, W) float32
    score: float  # the segmenter's predicted IoU of the chosen candidate


def segment_prompts(
    segmenter: Segmenter,
    image: np.ndarray,
    prompts: Sequence[PointBoxPrompt],
    *,
    valid: np.ndarray | None = None,
    batch_size: int = 32,
) -> list[ObjectMask]:
    """Segment each prompt on `image`, embedding the image once.

    Prompts of the same kind (points only, box only, both; single or multi mask) share a
    decoder call in batches of `batch_size`. Of several candidates the one with the highest
    predicted IoU is kept. Pixels where `valid` is False are never part of a mask.
    """
    embedding = segmenter.embed(image)
    results: list[ObjectMask | None] = [None] * len(prompts)
    for indexes in _batches_by_kind(prompts, batch_size):
        batch = [prompts[i] for i in indexes]
        for i, obj in zip(indexes, _decode(segmenter, embedding, batch), strict=True):
            results[i] = obj
    masks = [r for r in results if r is not None]
    if valid is not None:
        masks = [
            ObjectMask(
                mask=m.mask & valid, logits=np.where(valid, m.logits, -np.inf), score=m.score
            )
            for m in masks
        ]
    return masks


def _batches_by_kind(prompts: Sequence[PointBoxPrompt], batch_size: int) -> list[list[int]]:
    groups: dict[tuple[bool, bool, bool], list[int]] = {}
    for i, p in enumerate(prompts):
        key = (len(p.points) > 0, p.box is not None, p.wants_multimask)
        groups.setdefault(key, []).append(i)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def _decode(
    segmenter: Segmenter, embedding: ImageEmbedding, batch: Sequence[PointBoxPrompt]
) -> list[ObjectMask]:
    points = labels = boxes = None
    if len(batch[0].points):
        points, labels = pad_points(batch)
    if batch[0].box is not None:
        boxes = np.stack([np.asarray(p.box, dtype=np.float64) for p in batch])
    multimask = batch[0].wants_multimask
    pred = segmenter.predict(
        embedding, points=points, point_labels=labels, boxes=boxes, multimask=multimask
    )
    best = np.argmax(pred.iou_scores, axis=1)
    return [
        ObjectMask(
            mask=pred.masks[b, best[b]],
            logits=pred.logits[b, best[b]].astype(np.float32),
            score=float(pred.iou_scores[b, best[b]]),
        )
        for b in range(len(batch))
    ]


def pad_points(batch: Sequence[PointBoxPrompt]) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged click lists into (B, N, 2) and (B, N), padding with label -1."""
    n = max(len(p.points) for p in batch)
    points = np.zeros((len(batch), n, 2), dtype=np.float64)
    labels = np.full((len(batch), n), PAD_LABEL, dtype=np.int64)
    for b, p in enumerate(batch):
        points[b, : len(p.points)] = p.points
        labels[b, : len(p.labels)] = p.labels
    return points, labels
