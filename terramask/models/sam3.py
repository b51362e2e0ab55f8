"""SAM 3 behind the `ConceptSegmenter` protocol: encode a tile once, decode many noun phrases.

The adapter runs transformers' own `Sam3Model` and only adds what the protocol needs: an LRU
cache of vision features (a tile is encoded once however many phrases it gets), phrases
decoded in batches against one set of features, and masks up-sampled to the tile size.

Scores follow SAM 3's post-processing (`Sam3ImageProcessor.post_process_instance_segmentation`
and the reference `Sam3Processor`): an instance's score is
`sigmoid(pred_logits) * sigmoid(presence_logits)`, so **presence is already multiplied into
`instance_scores`**; `presence` is also reported on its own. Instances whose score is not above
`score_threshold` (SAM 3's confidence threshold, 0.5 in the reference processor and in
SegEarth-OV3) are dropped here, which also bounds the memory of full-size masks. A call can
set its own threshold (`segment_concepts(..., score_threshold=0.25)`, GeoSeg's route B), so
one loaded model serves both settings.
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terramask.errors import InputError
from terramask.models.registry import ResolvedModel
from terramask.models.sam import (
    _check_image,
    grid_side,
    image_key,
    pad_thin,
    thin_padded_size,
)
from terramask.models.weights import load_pretrained
from terramask.protocols import ConceptResult

#: SAM 3's tokenizer pads every phrase to this many tokens (Sam3Processor does the same).
TEXT_LENGTH = 32

_PIL_RESAMPLE = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


class _Sam3Frames:
    """SAM 3 image pre-processing when Sam3ImageProcessor cannot load (it needs torchvision).

    Reads the same preprocessor_config.json keys the real processor uses: a square resize
    (no padding, aspect ratio not kept), rescale and normalisation. PIL's resize is used,
    which torch's anti-aliased uint8 resize (what torchvision calls) was written to match.
    """

    def __init__(self, folder: Path):
        config = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        size = config.get("size") or {"height": 1008, "width": 1008}
        self.size = (int(size["height"]), int(size["width"]))
        self.do_resize = bool(config.get("do_resize", True))
        self.resample = int(config.get("resample", 2))
        self.rescale = float(config.get("rescale_factor", 1 / 255)) if config.get(
            "do_rescale", True) else 1.0
        normalize = bool(config.get("do_normalize", True))
        self.mean = np.asarray(config.get("image_mean", [0.5] * 3) if normalize else [0.0] * 3,
                               np.float32)
        self.std = np.asarray(config.get("image_std", [0.5] * 3) if normalize else [1.0] * 3,
                              np.float32)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        from PIL import Image

        pixels = image
        if self.do_resize:
            height, width = self.size
            method = getattr(Image.Resampling, _PIL_RESAMPLE.get(self.resample, "BILINEAR"))
            pixels = np.asarray(Image.fromarray(image).resize((width, height), method))
        pixels = (pixels.astype(np.float32) * self.rescale - self.mean) / self.std
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]


def _image_preprocessor(folder: Path) -> Callable[[np.ndarray], torch.Tensor]:
    """(H, W, 3) uint8 -> (1, 3, h, w) pixel values, with the real processor when it loads."""
    if importlib.util.find_spec("torchvision") is None:
        return _Sam3Frames(folder)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    # Channels last, always: a 1- or 3-px tall image would otherwise be read as channels-first.
    return lambda image: processor(
        images=image, return_tensors="pt", input_data_format="channels_last"
    )["pixel_values"]


class Sam3ConceptSegmenter:
    """A SAM 3 model as a `ConceptSegmenter`; `name` is the id the user asked for.

    `score_threshold` keeps instances whose (presence-weighted) score is above it; 0 keeps all
    queries (200 on the real model). `cache_size` images keep their vision features.
    """

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        score_threshold: float = 0.5,
        cache_size: int = 4,
        max_phrases_per_call: int = 8,
    ):
        if resolved.family != "sam3":
            raise ValueError(f"Sam3ConceptSegmenter cannot run a '{resolved.family}' model")
        from transformers import AutoTokenizer, Sam3Model

        self.name = resolved.requested
        self.resolved = resolved
        # A facebook/sam3 folder holds the video model (sam3_video); Sam3Model takes its
        # detector config and weights and ignores the tracker's.
        self.model, self.device, self.dtype = load_pretrained(Sam3Model, resolved, device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        self.preprocess = _image_preprocessor(Path(resolved.path))
        text_config = self.model.config.text_config
        self.text_length = min(TEXT_LENGTH, int(text_config.max_position_embeddings))
        self.score_threshold = float(score_threshold)
        self.cache_size = max(0, int(cache_size))
        #: Thinner images are padded (bottom/right) to one token of the encoder's grid before
        #: SAM 3's square resize, rather than stretched; results are cut back to the image.
        self.max_aspect = grid_side(self.model.config)
        # Each phrase in a call gets its own copy of the decoder's pixel features (288x288x256
        # on the real model), so phrases go through in groups of at most this many.
        self.max_phrases_per_call = max(1, int(max_phrases_per_call))
        self._cache: OrderedDict[str, Any] = OrderedDict()

    # ------------------------------------------------------------------ public

    def segment_concepts(
        self, image: np.ndarray, phrases: Sequence[str], *, score_threshold: float | None = None
    ) -> list[ConceptResult]:
        """One result per phrase for an (H, W, 3) uint8 image; the image is encoded once.

        `score_threshold` replaces the segmenter's own for this call (None keeps it).
        """
        _check_image(image)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        phrases = _check_phrases(phrases)
        if not phrases:
            return []
        features = self.vision_features(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        padded = thin_padded_size(*size, self.max_aspect)
        results: list[ConceptResult] = []
        for start in range(0, len(phrases), self.max_phrases_per_call):
            group = phrases[start:start + self.max_phrases_per_call]
            results.extend(self._decode(features, group, padded, size, threshold))
        return results

    def vision_features(self, image: np.ndarray) -> Any:
        """The vision encoder's FPN features of an image (batch 1), from the cache when seen."""
        key = image_key(image)
        features = self._cache.get(key)
        if features is not None:
            self._cache.move_to_end(key)
            return features
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        pixels = self.preprocess(pad_thin(image, self.max_aspect)).to(self.device, self.dtype)
        with torch.inference_mode():
            output = self.model.get_vision_features(pixel_values=pixels)
        # Only the FPN levels are used by the decoder; the ViT tokens would double the memory.
        features = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(output.fpn_hidden_states),
            fpn_position_encoding=tuple(output.fpn_position_encoding),
        )
        if self.cache_size:
            self._cache[key] = features
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return features

    # ------------------------------------------------------------------ decoding

    def _decode(
        self, features: Any, phrases: list[str], size: tuple[int, int], crop: tuple[int, int],
        threshold: float | None = None,
    ):
        """Decode phrases; masks are resized to `size` (the encoded image) and cut to `crop`;
        instances scoring above `threshold` (the segmenter's own when None) are kept."""
        threshold = self.score_threshold if threshold is None else threshold
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        text = self.tokenizer(phrases, padding="max_length", max_length=self.text_length,
                              truncation=True, return_tensors="pt")
        count = len(phrases)
        # Sam3Model does not broadcast one image over several prompts: give every phrase a
        # view of the same features (expand copies nothing).
        batched = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(t.expand(count, -1, -1, -1)
                                    for t in features.fpn_hidden_states),
            fpn_position_encoding=tuple(t.expand(count, -1, -1, -1)
                                        for t in features.fpn_position_encoding),
        )
        with torch.inference_mode():
            output = self.model(
                vision_embeds=batched,
                input_ids=text["input_ids"].to(self.device),
                attention_mask=text["attention_mask"].to(self.device),
            )
            presence = output.presence_logits.float().sigmoid().reshape(count)  # (P,)
            # SAM 3's instance score: detection probability times presence probability.
            scores = output.pred_logits.float().sigmoid() * presence[:, None]  # (P, Q)
            semantic = _resize(output.semantic_seg.float(), size)[:, 0, : crop[0], : crop[1]]
            # Boxes come normalised to the encoded (padded) image: scale, then cut to the image.
            scale = output.pred_boxes.new_tensor([size[1], size[0], size[1], size[0]])
            limit = output.pred_boxes.new_tensor([crop[1], crop[0], crop[1], crop[0]])
            boxes = torch.minimum(output.pred_boxes.float() * scale, limit).clamp(min=0)
            results = []
            for i in range(count):
                keep = torch.nonzero(scores[i] > threshold).flatten()
                keep = keep[torch.argsort(scores[i, keep], descending=True, stable=True)]
                masks = output.pred_masks[i, keep].float()
                logits = (
                    _resize(masks[None], size)[0, :, : crop[0], : crop[1]]
                    if len(keep)
                    else masks.new_zeros((0, *crop))
                )
                results.append(ConceptResult(
                    instance_logits=_numpy(logits),
                    instance_scores=_numpy(scores[i, keep]),
                    semantic_logits=_numpy(semantic[i]),
                    presence=float(presence[i]),
                    instance_boxes=_numpy(boxes[i, keep]),
                ))
        return results


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W), bilinear as SAM 3's post-processing resizes masks."""
    return F.interpolate(logits, size, mode="bilinear", align_corners=False)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.cpu().numpy().astype(np.float32, copy=False)


def _check_phrases(phrases: Sequence[str]) -> list[str]:
    if isinstance(phrases, str):
        raise InputError(
            f"segment_concepts() needs a list of phrases, got the single string {phrases!r}; "
            "wrap it in a list."
        )
    cleaned = [str(p).strip() for p in phrases]
    if any(not p for p in cleaned):
        raise InputError("A concept phrase is empty; give each one a noun phrase, e.g. 'roof'.")
    return cleaned
