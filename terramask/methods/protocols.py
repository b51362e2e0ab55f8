"""The small protocols every algorithm talks to: a promptable segmenter and an image-text model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ImageEmbedding:
    """An image encoded once by a segmenter; reused by every prompt on that image.

    `image_size` is the (height, width) of the image that was embedded; `data` is the
    segmenter's own representation and is opaque to callers.
    """

    image_size: tuple[int, int]
    data: Any
    key: str = ""


@dataclass(frozen=True)
class MaskPrediction:
    """Masks for B prompts with M candidates each, at the embedded image's resolution.

    masks:          bool   (B, M, H, W)
    logits:         float32 (B, M, H, W) mask logits (threshold 0 gives `masks`)
    iou_scores:     float32 (B, M)       the segmenter's predicted IoU of each candidate
    low_res_logits: float32 (B, M, h, w) the decoder's raw output (256x256 for SAM)
    """

    masks: np.ndarray
    logits: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: np.ndarray


@runtime_checkable
class Segmenter(Protocol):
    """A promptable segmenter (SAM family)."""

    name: str

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an (H, W, 3) uint8 RGB image; identical images hit a cache."""
        ...

    def predict(
        self,
        embedding: ImageEmbedding,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask: bool = True,
    ) -> MaskPrediction:
        """Decode B prompts against one embedding.

        points (B, N, 2) float x, y in image pixels; point_labels (B, N) int, 1 positive,
        0 negative, -1 padding; boxes (B, 4) float x1, y1, x2, y2 in image pixels.
        Either may be None, not both. multimask gives M=3 candidates, otherwise M=1.
        """
        ...


@runtime_checkable
class ImageText(Protocol):
    """A contrastive image-text model (CLIP family) with access to its patch tokens."""

    name: str

    def encode_text(
        self, texts: Sequence[str], templates: Sequence[str] | None = None
    ) -> np.ndarray:
        """(K, D) L2-normalised text embeddings, each averaged over the templates."""
        ...

    def encode_image(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) L2-normalised image embeddings of (H, W, 3) uint8 images."""
        ...

    def patch_tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, h, w, D) patch tokens projected into the joint space (not normalised)."""
        ...
