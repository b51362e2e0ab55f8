"""Dense CLIP (SegEarth-OV style): per-pixel class probabilities from a CLIP-family model.

Patch tokens from the self-self last block (the `ImageText.dense_tokens` hook) are compared
with prompt-ensembled text embeddings; the image's global token, weighted by a negative
`cls_lambda`, is added to every patch's logits to cancel the bias all patches share with it
(DESIGN.md §1.1). Inference slides windows over the image resized to a fixed short side.

Edge rules: window starts go 0, stride, 2·stride, … and the last window is moved back to end
at the image edge, so every pixel is covered and no window reaches outside the image. A side
shorter than `crop` is not padded up to `crop` (padding would join the global self-self
attention as content): the window shrinks to that side, so all windows of an image still
share one size and batch together. Only to reach a whole number of patches is a window
padded, at its bottom/right by mirroring its own pixels; the logits of that padding are cut
off after upsampling, so patches stay aligned with the pixels they came from.

Thin images: the resize to `short_side` is computed as if the short side were at least the
long side / `max_aspect`, so what the windows slide over is at most short_side by
short_side · max_aspect (448 × 1792) whatever the image. Without it a 1-px strip would be
scaled 448-fold (a 1 × 1024 tile to 448 × 458 752, thousands of windows; a 1 × 190 box crop to
85 120 px wide). A strip thinner than a patch after the resize is mirrored up to one patch
as above, and its logits cut back to it.

Upsampling: by default each window's patch logits are upsampled bilinearly to the window's
pixels. With `upsampler` (SegEarth-OV's SimFeatUp, `terramask.models.featup.load_featup`) the
window's patch *features* are upsampled instead, guided by its pixels, and normalised and
compared with the text at full window resolution, as SegEarth-OV does; the published SegEarth-OV
numbers are with that upsampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terramask.errors import InputError
from terramask.methods.templates import IMAGENET_TEMPLATES
from terramask.methods.vocabulary import ClassVocabulary
from terramask.protocols import ImageText

#: The largest long-to-short side ratio the `short_side` resize honours (see the module doc).
MAX_ASPECT = 4


class DenseClip:
    """A `SemanticEngine` over an `ImageText` model; defaults are SegEarth-OV's published ones.

    short_side: the image is resized (bilinear) so its shorter side has this many pixels
    before windows are cut (None keeps its size); crop/stride: the sliding window;
    logit_scale: the softmax temperature over all names; cls_lambda: the global-token weight;
    batch_size: windows per `dense_tokens` call; max_aspect: thinner images are resized as if
    their short side were their long side / max_aspect (see the module doc); upsampler: a
    feature upsampler (`featup.FeatureUpsampler`, called with the windows' (B, D, h, w) patch
    features and their pixels) used instead of bilinear upsampling of the logits.
    """

    def __init__(
        self,
        image_text: ImageText,
        *,
        templates: Sequence[str] = IMAGENET_TEMPLATES,
        short_side: int | None = 448,
        crop: int = 224,
        stride: int = 112,
        logit_scale: float = 50.0,
        cls_lambda: float = -0.3,
        batch_size: int = 8,
        max_aspect: float = MAX_ASPECT,
        upsampler: Any | None = None,
    ):
        if crop < 1 or not 1 <= stride <= crop:
            raise ValueError(f"need crop >= 1 and 1 <= stride <= crop, got {crop}, {stride}")
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be positive or None, got {short_side}")
        if not max_aspect >= 1:
            raise ValueError(f"max_aspect must be at least 1, got {max_aspect}")
        self.image_text = image_text
        self.templates = tuple(templates)
        self.short_side = short_side
        self.crop = int(crop)
        self.stride = int(stride)
        self.logit_scale = float(logit_scale)
        self.cls_lambda = float(cls_lambda)
        self.batch_size = max(1, int(batch_size))
        self.max_aspect = float(max_aspect)
        self.upsampler = upsampler
        self.name = f"dense-clip:{image_text.name}"
        if upsampler is not None:
            self.name += f"+{upsampler.name}"
        self._text: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def configuration(self) -> dict[str, Any]:
        """What decides the dense prediction besides the models, for reports."""
        return {
            "upsampler": "bilinear" if self.upsampler is None else self.upsampler.name,
            "short_side": self.short_side,
            "crop": self.crop,
            "stride": self.stride,
            "cls_lambda": self.cls_lambda,
            "logit_scale": self.logit_scale,
            "templates": len(self.templates),
        }

    def text_embeddings(self, vocabulary: ClassVocabulary) -> torch.Tensor:
        """(N, D) normalised embeddings of every synonym, in `vocabulary.prompts` order.

        Cached per list of names: a scene's tiles share one vocabulary, and the 80-template
        ensemble costs more than a tile.
        """
        names = tuple(name for name, _ in vocabulary.prompts)
        if names not in self._text:
            embeddings = self.image_text.encode_text(names, self.templates)
            self._text[names] = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        return self._text[names]

    def name_logits(self, image: np.ndarray, vocabulary: ClassVocabulary) -> np.ndarray:
        """(N, H, W) float32 logits of every synonym (before `logit_scale`), at the image's size."""
        return self._name_logits(image, vocabulary).numpy()

    def probabilities(self, image: np.ndarray, vocabulary: ClassVocabulary) -> np.ndarray:
        """(K, H, W) float32: softmax over all synonyms, then the max over each class's ones."""
        logits = self._name_logits(image, vocabulary)
        per_name = torch.softmax(logits * self.logit_scale, dim=0)
        owner = torch.tensor([index for _, index in vocabulary.prompts])
        height, width = per_name.shape[1:]
        per_class = torch.zeros((len(vocabulary), height, width), dtype=per_name.dtype)
        per_class.scatter_reduce_(0, owner[:, None, None].expand_as(per_name), per_name,
                                  reduce="amax", include_self=False)
        return per_class.numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------ internals

    def _name_logits(self, image: np.ndarray, vocabulary: ClassVocabulary) -> torch.Tensor:
        image = _check_image(image)
        text = self.text_embeddings(vocabulary)
        resized = resize_short_side(image, self.short_side, self.max_aspect)
        logits = self._sliding_logits(resized, text)
        if resized.shape[:2] != image.shape[:2]:
            logits = _upsample(logits[None], image.shape[:2])[0]
        return logits

    def _sliding_logits(self, image: np.ndarray, text: torch.Tensor) -> torch.Tensor:
        """(N, h, w) logits of the image, windows averaged where they overlap."""
        height, width = image.shape[:2]
        window = (min(self.crop, height), min(self.crop, width))
        corners = [(top, left) for top in window_starts(height, window[0], self.stride)
                   for left in window_starts(width, window[1], self.stride)]
        patch = max(1, int(getattr(self.image_text, "patch_size", 1)))
        padded = tuple(math.ceil(side / patch) * patch for side in window)
        total = torch.zeros((text.shape[0], height, width), dtype=torch.float32)
        count = torch.zeros((1, height, width), dtype=torch.float32)
        for start in range(0, len(corners), self.batch_size):
            batch = corners[start:start + self.batch_size]
            crops = [_pad(image[top:top + window[0], left:left + window[1]], padded)
                     for top, left in batch]
            logits = self._window_logits(crops, text)
            logits = _upsample(logits, padded)[:, :, :window[0], :window[1]]
            for (top, left), piece in zip(batch, logits, strict=True):
                total[:, top:top + window[0], left:left + window[1]] += piece
                count[:, top:top + window[0], left:left + window[1]] += 1
        return total / count

    def _window_logits(self, crops: list[np.ndarray], text: torch.Tensor) -> torch.Tensor:
        """(B, N, h, w) patch·text + λ·(global·text) on the token grid of each window, or with
        an upsampler on its output grid (the window's pixels)."""
        patches, global_token = self.image_text.dense_tokens(crops)
        patches = torch.as_tensor(np.asarray(patches, dtype=np.float32))
        global_token = _unit(torch.as_tensor(np.asarray(global_token, dtype=np.float32)))
        bias = self.cls_lambda * (global_token @ text.T)[:, :, None, None]
        if self.upsampler is None:
            logits = torch.einsum("bhwd,nd->bnhw", _unit(patches), text)
            return logits + bias
        # SegEarth-OV: the un-normalised projected features are upsampled, then normalised
        features = self.upsampler(patches.permute(0, 3, 1, 2), crops)
        features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
        logits = torch.einsum("bdhw,nd->bnhw", features, text.to(features.device))
        return logits.float().cpu() + bias


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one side: every `stride`, the last one flush with the edge."""
    steps = math.ceil(max(size - window, 0) / stride) + 1
    return [min(i * stride, size - window) for i in range(steps)]


def resize_short_side(
    image: np.ndarray, short_side: int | None, max_aspect: float | None = MAX_ASPECT
) -> np.ndarray:
    """The uint8 image resized (bilinear, antialiased when shrinking) to that short side.

    An image thinner than `max_aspect` (long side / short side) is scaled as if its short side
    were long side / max_aspect: its long side becomes short_side · max_aspect and its short
    side less than short_side (at least 1 px), so the result never exceeds that size.
    """
    height, width = image.shape[:2]
    if short_side is None:
        return image
    short, long = min(height, width), max(height, width)
    reference = short if max_aspect is None else max(short, long / max_aspect)
    if reference == short_side:
        return image
    scale = short_side / reference
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if reference == short:  # the short side exactly, as before thin images were capped
        size = (short_side, size[1]) if height <= width else (size[0], short_side)
    if size == (height, width):
        return image
    pixels = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()
    pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False,
                           antialias=scale < 1)
    return pixels[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _pad(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    extra = (size[0] - crop.shape[0], size[1] - crop.shape[1])
    if not any(extra):
        return crop
    return np.pad(crop, ((0, extra[0]), (0, extra[1]), (0, 0)), mode="symmetric")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _check_image(image: np.ndarray) -> np.ndarray:
    if (not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3
            or image.dtype != np.uint8 or 0 in image.shape):
        raise InputError(
            "Dense CLIP needs an (H, W, 3) uint8 RGB image, got "
            f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}."
        )
    return image
