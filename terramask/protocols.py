"""The small protocols every layer talks through: models, scenes and progress reports.

This module sits at the bottom of the import graph (it imports only numpy): `methods/`
writes algorithms against it, `models/` implements the model protocols, `scene/` the
`SceneReader`, and pipelines pass a `Progress` callback down without knowing who listens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.windows import Window

    from terramask.scene.raster import SceneWindow

#: Reports progress as (stage, done, total); a stage restarts when `done` goes back down.
Progress = Callable[[str, int, int], None]

#: The identity template of `ImageText.encode_text`: texts are encoded exactly as written.
RAW_TEMPLATE: tuple[str, ...] = ("{}",)


def fill_template(template: str, text: str) -> str:
    """Put `text` into a template's `{}`; literal braces in the class name stay as they are."""
    return template.replace("{}", text)


@runtime_checkable
class SceneReader(Protocol):
    """Anything the runs read imagery from: a raster `Scene` or an in-memory `ArrayScene`.

    Coordinates are scene pixels (column, row; (0, 0) the top-left corner); `transform` maps
    them to the map (identity and `crs` None for scenes without georeferencing).
    """

    name: str
    source: str
    width: int
    height: int
    crs: Any
    georeferenced: bool
    transform: Affine
    bands: tuple[int, ...]

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> SceneWindow:
        """A window as stretched (H, W, 3) uint8 RGB with its validity, optionally resized."""
        ...

    def read_valid(self, window: Window) -> np.ndarray:
        """Only the (H, W) validity of a full-resolution window."""
        ...

    def overview(self, max_size: int) -> SceneWindow:
        """The whole scene decimated so that its long side is at most `max_size`."""
        ...

    def window_transform(self, window: Window) -> Affine:
        """The map transform of a full-resolution window."""
        ...


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

    masks:          bool   (B, M, H, W)  (None when decoded without full resolution)
    logits:         float32 (B, M, H, W) mask logits, threshold 0 gives `masks` (or None)
    iou_scores:     float32 (B, M)       the segmenter's predicted IoU of each candidate
    low_res_logits: float32 (B, M, h, w) the decoder's raw output (256x256 for SAM)
    """

    masks: np.ndarray | None
    logits: np.ndarray | None
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
        full_resolution: bool = True,
    ) -> MaskPrediction:
        """Decode B prompts against one embedding.

        points (B, N, 2) float x, y in image pixels; point_labels (B, N) int, 1 positive,
        0 negative, -1 padding; boxes (B, 4) float x1, y1, x2, y2 in image pixels.
        Either may be None, not both. multimask gives M=3 candidates, otherwise M=1.
        Without `full_resolution`, `masks` and `logits` are None: callers that filter many
        candidates first (mask generation) upsample only the survivors with `upsample`.
        """
        ...

    def upsample(self, embedding: ImageEmbedding, low_res_logits: np.ndarray) -> np.ndarray:
        """(N, H, W) logits at the embedded image's size from (N, h, w) low-res logits."""
        ...


@runtime_checkable
class ImageText(Protocol):
    """A contrastive image-text model (CLIP family) with access to its patch tokens."""

    name: str

    def encode_text(
        self, texts: Sequence[str], templates: Sequence[str] | None = None
    ) -> np.ndarray:
        """(K, D) L2-normalised text embeddings, each averaged over the templates.

        Each template holds one `{}` that `fill_template` replaces with the text; without
        templates the texts are encoded as written (`RAW_TEMPLATE`).
        """
        ...

    def encode_image(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) L2-normalised image embeddings of (H, W, 3) uint8 images."""
        ...

    def patch_tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, h, w, D) patch tokens projected into the joint space (not normalised)."""
        ...

    def dense_tokens(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, h, w, D) patch tokens and (B, D) global token for dense prediction, joint space.

        The patch tokens come from SegEarth-OV's self-self last block (not normalised); the
        global token is the model's image embedding at the images' own size (not normalised).
        Images of one call share one size.
        """
        ...


@dataclass(frozen=True)
class ConceptResult:
    """What a concept segmenter (SAM 3) finds for one noun phrase, at the image's resolution.

    instance_logits: float32 (N, H, W) mask logits of N instances (N may be 0)
    instance_scores: float32 (N,)      each instance's detection score in [0, 1]
    semantic_logits: float32 (H, W)    the semantic-segmentation head's logits
    presence:        float             probability that the concept is present at all
    instance_boxes:  float32 (N, 4)    each instance's predicted x0, y0, x1, y1 box in image
                                       pixels; None when the segmenter predicts no boxes
    """

    instance_logits: np.ndarray
    instance_scores: np.ndarray
    semantic_logits: np.ndarray
    presence: float
    instance_boxes: np.ndarray | None = None


@runtime_checkable
class ConceptSegmenter(Protocol):
    """A segmenter prompted by noun phrases (SAM 3)."""

    name: str

    def segment_concepts(self, image: np.ndarray, phrases: Sequence[str]) -> list[ConceptResult]:
        """One result per phrase for an (H, W, 3) uint8 image; the image is encoded once."""
        ...


@runtime_checkable
class SemanticEngine(Protocol):
    """Open-vocabulary semantic segmentation of one image (a tile)."""

    name: str

    def probabilities(self, image: np.ndarray, vocabulary: Any) -> np.ndarray:
        """(K, H, W) float32 per-class probabilities of an (H, W, 3) uint8 image.

        `vocabulary` is a `methods.vocabulary.ClassVocabulary`; a class's probability is the
        max over its synonyms.
        """
        ...


#: Earlier names of the frames, still accepted wherever a frame is read.
LEGACY_FRAME_NAMES = {"pixels": "pixel", "0-1000": "norm1000", "0-1": "norm1"}


def frame_name(frame: str) -> str:
    """The frame's name in `COORDINATE_FRAMES` (earlier names such as "pixels" or "0-1000"
    are translated); an unknown name is returned unchanged for the caller to refuse."""
    name = str(frame).strip().lower()
    return LEGACY_FRAME_NAMES.get(name, name)


@dataclass(frozen=True)
class MLLMReply:
    """A multimodal LLM's answer and what is needed to read its coordinates.

    `shown_size` is the (height, width) of the image the model actually saw (after any
    resize the client did); `frame` is the coordinate frame the model was asked to answer
    in (one of `COORDINATE_FRAMES`; earlier names such as "pixels" are translated). The
    parser reads the reply in exactly that frame.
    """

    text: str
    shown_size: tuple[int, int]
    frame: str
    model: str
    cached: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", frame_name(self.frame))

    @property
    def convention(self) -> str:
        """The frame under its former attribute name (read-only)."""
        return self.frame


@runtime_checkable
class MLLM(Protocol):
    """A multimodal LLM that answers a text prompt about one image."""

    name: str

    def ask(self, image: np.ndarray, prompt: str, *, system: str | None = None) -> MLLMReply:
        """Show an (H, W, 3) uint8 image with `prompt`; raises MLLMError on final failure."""
        ...
