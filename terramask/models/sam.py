"""SAM, SAM-HQ and SAM 2 behind the `Segmenter` protocol: embed a tile once, decode many prompts.

The adapter loads the family's own transformers classes and processor and only does what the
protocol needs on top: an LRU cache of image embeddings (a tile is encoded once however many
prompts it gets), prompt batching in one decoder call, and mask up-sampling to the tile size.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terramask.errors import InputError
from terramask.models.registry import ResolvedModel
from terramask.models.weights import load_pretrained
from terramask.protocols import ImageEmbedding, MaskPrediction

SAM_FAMILIES = ("sam", "sam_hq", "sam2")


#: Token-grid side assumed when a config does not say (SAM's 1024 px input in 16 px patches).
DEFAULT_GRID = 64


@dataclass(frozen=True)
class _Features:
    """What one embedded image carries: encoder outputs plus the geometry to map prompts."""

    embeddings: Any  # sam: tensor; sam_hq: (tensor, list of tensors); sam2: list of tensors
    original_size: tuple[int, int]  # (H, W) of the tile as encoded (after `pad_thin`)
    input_size: tuple[int, int]  # (h, w) the tile was resized to before padding
    image_size: tuple[int, int] = (0, 0)  # (H, W) of the caller's image: masks are cut to it


def grid_side(config: Any) -> int:
    """Tokens per side of the image encoder's grid (64 for SAM, 72 for SAM 3), from a config.

    Looks for `image_size` / `patch_size` in the vision (or its backbone) config, then for the
    coarsest `backbone_feature_sizes` (SAM 2); DEFAULT_GRID when neither is there.
    """
    vision = getattr(config, "vision_config", None)
    for part in (vision, getattr(vision, "backbone_config", None)):
        size = getattr(part, "image_size", None)
        patch = getattr(part, "patch_size", None)
        if isinstance(size, (list, tuple)):
            size = min(size)
        if isinstance(patch, (list, tuple)):
            patch = min(patch)
        if isinstance(size, int) and isinstance(patch, int) and size >= patch > 0:
            return size // patch
    sizes = getattr(vision, "backbone_feature_sizes", None)
    if sizes:
        return max(1, int(min(min(s) for s in sizes)))
    return DEFAULT_GRID


def pad_thin(image: np.ndarray, max_aspect: float) -> np.ndarray:
    """The image with black rows (or columns) added at the bottom (or right) so that its long
    side is at most `max_aspect` times its short side; the image itself when it already is.

    SAM-family encoders resize the long side to their input size: a strip thinner than one
    token of their grid (1 px against 1024) would shrink to nothing (SAM's processor fails on a
    0-px side) or be stretched a thousand-fold (SAM 2, SAM 3). Padding at the bottom/right
    keeps pixel coordinates unchanged; results are cut back to the image.
    """
    height, width = image.shape[:2]
    padded = thin_padded_size(height, width, max_aspect)
    if padded == (height, width):
        return image
    return np.pad(image, ((0, padded[0] - height), (0, padded[1] - width), (0, 0)))


def thin_padded_size(height: int, width: int, max_aspect: float) -> tuple[int, int]:
    """(H, W) of `pad_thin`'s result for an image of that size."""
    need = math.ceil(max(height, width) / max_aspect)
    return max(height, need), max(width, need)


def image_key(image: np.ndarray) -> str:
    """A content hash of an image, including its shape, for the embedding cache."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class _Sam2Frames:
    """SAM 2 pre/post-processing when Sam2ImageProcessor cannot load (it needs torchvision).

    Reads the same preprocessor_config.json keys the real processor uses: square resize,
    rescale, ImageNet normalisation; masks are up-sampled straight to the tile size.
    """

    def __init__(self, folder: Path):
        config = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        size = config.get("size", {"height": 1024, "width": 1024})
        self.size = (int(size["height"]), int(size["width"]))
        self.rescale = float(config.get("rescale_factor", 1 / 255))
        self.mean = np.asarray(config.get("image_mean", [0.485, 0.456, 0.406]), np.float32)
        self.std = np.asarray(config.get("image_std", [0.229, 0.224, 0.225]), np.float32)

    def __call__(self, images: np.ndarray, return_tensors: str = "pt", **_: Any) -> dict:
        from PIL import Image

        height, width = self.size
        resized = np.asarray(Image.fromarray(images).resize((width, height), Image.BILINEAR))
        pixels = (resized.astype(np.float32) * self.rescale - self.mean) / self.std
        return {
            "pixel_values": torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None],
            "original_sizes": torch.tensor([images.shape[:2]]),
        }

    def post_process_masks(self, masks, original_sizes, binarize: bool = False, **_: Any):
        return [
            F.interpolate(m, tuple(int(v) for v in size), mode="bilinear", align_corners=False)
            for m, size in zip(masks, original_sizes, strict=True)
        ]


def _load_processor(folder: Path, family: str):
    if family == "sam2" and importlib.util.find_spec("torchvision") is None:
        return _Sam2Frames(folder)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


def _model_class(family: str):
    from transformers import Sam2Model, SamHQModel, SamModel

    return {"sam": SamModel, "sam_hq": SamHQModel, "sam2": Sam2Model}[family]


class SamSegmenter:
    """A SAM-family model as a `Segmenter`; `name` is the id the user asked for."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        cache_size: int = 4,
        max_prompts_per_call: int = 64,
    ):
        if resolved.family not in SAM_FAMILIES:
            raise ValueError(f"SamSegmenter cannot run a '{resolved.family}' model")
        self.name = resolved.requested
        self.family = resolved.family
        self.resolved = resolved
        self.model, self.device, self.dtype = load_pretrained(
            _model_class(self.family), resolved, device, dtype
        )
        self.processor = _load_processor(Path(resolved.path), self.family)
        #: Thinner images are padded (bottom/right) to one token of the encoder's grid.
        self.max_aspect = grid_side(self.model.config)
        self.cache_size = max(0, int(cache_size))
        # Bounds decoder and up-sampling memory when a caller sends a whole point grid.
        self.max_prompts_per_call = max(1, int(max_prompts_per_call))
        self._cache: OrderedDict[str, _Features] = OrderedDict()

    # ------------------------------------------------------------------ embedding

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an (H, W, 3) uint8 RGB image once; the same pixels come from the cache."""
        _check_image(image)
        key = image_key(image)
        features = self._cache.get(key)
        if features is not None:
            self._cache.move_to_end(key)
        else:
            features = self._encode(image)
            if self.cache_size:
                self._cache[key] = features
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return ImageEmbedding(image_size=features.image_size, data=features, key=key)

    def _encode(self, image: np.ndarray) -> _Features:
        padded = pad_thin(image, self.max_aspect)
        # Channels last, always: a 1- or 3-px tall image would otherwise be read as
        # channels-first by the processor's guess.
        inputs = self.processor(
            images=padded, return_tensors="pt", input_data_format="channels_last"
        )
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        original = tuple(int(v) for v in inputs["original_sizes"][0])
        if "reshaped_input_sizes" in inputs:
            resized = tuple(int(v) for v in inputs["reshaped_input_sizes"][0])
        else:  # SAM 2 resizes to a square without padding
            resized = tuple(int(v) for v in pixels.shape[-2:])
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixels)
        return _Features(embeddings, original, resized, (image.shape[0], image.shape[1]))

    # ------------------------------------------------------------------ decoding

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
        """Decode B prompts against one embedding; see `Segmenter.predict` for the shapes."""
        features = embedding.data
        if not isinstance(features, _Features):
            raise InputError(
                "The embedding passed to predict() was not made by this segmenter's embed(). "
                "Call embed(image) on the same segmenter and pass its result."
            )
        points, point_labels, boxes = _check_prompts(points, point_labels, boxes)
        count = len(points) if points is not None else len(boxes)
        parts = []
        for start in range(0, count, self.max_prompts_per_call):
            stop = min(count, start + self.max_prompts_per_call)
            parts.append(self._decode(
                features,
                None if points is None else points[start:stop],
                None if point_labels is None else point_labels[start:stop],
                None if boxes is None else boxes[start:stop],
                multimask,
                full_resolution,
            ))
        if len(parts) == 1:
            return parts[0]
        fields = ("masks", "logits", "iou_scores", "low_res_logits")
        return MaskPrediction(**{
            name: None if getattr(parts[0], name) is None
            else np.concatenate([getattr(p, name) for p in parts])
            for name in fields
        })

    def upsample(self, embedding: ImageEmbedding, low_res_logits: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 logits at the image's size from (N, h, w) low-res logits."""
        features = embedding.data
        low = torch.from_numpy(np.ascontiguousarray(low_res_logits, dtype=np.float32))
        with torch.inference_mode():
            full = self._upsample(low[None].to(self.device), features)[0]
        return full.float().cpu().numpy()

    def _decode(
        self, features: _Features, points, labels, boxes, multimask: bool, full: bool = True
    ):
        height, width = features.original_size
        scale = np.array([features.input_size[1] / width, features.input_size[0] / height])
        kwargs: dict[str, Any] = {"multimask_output": bool(multimask)}
        if points is not None:
            kwargs["input_points"] = self._tensor((points * scale)[None])
            kwargs["input_labels"] = torch.from_numpy(labels[None]).to(self.device)
        if boxes is not None:
            kwargs["input_boxes"] = self._tensor((boxes * np.tile(scale, 2))[None])
        if self.family == "sam_hq":
            kwargs["image_embeddings"], kwargs["intermediate_embeddings"] = features.embeddings
        else:
            kwargs["image_embeddings"] = features.embeddings
        with torch.inference_mode():
            output = self.model(**kwargs)
            low_res = output.pred_masks[0].float()  # (B, M, h, w)
            iou = output.iou_scores[0].float()  # (B, M)
            logits = self._upsample(low_res, features) if full else None
        logits_np = None if logits is None else logits.cpu().numpy().astype(np.float32, copy=False)
        return MaskPrediction(
            masks=None if logits_np is None else logits_np > 0.0,
            logits=logits_np,
            iou_scores=iou.cpu().numpy().astype(np.float32, copy=False),
            low_res_logits=low_res.cpu().numpy().astype(np.float32, copy=False),
        )

    def _upsample(self, low_res: torch.Tensor, features: _Features) -> torch.Tensor:
        """Logits at the encoded size, cut to the caller's image (padding dropped)."""
        original = [list(features.original_size)]
        if self.family == "sam2":
            full = self.processor.post_process_masks([low_res], original, binarize=False)[0]
        else:
            full = self.processor.post_process_masks(
                [low_res], original, [list(features.input_size)], binarize=False
            )[0]
        height, width = features.image_size
        return full[..., :height, :width]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(
            self.device, self.dtype
        )


# ---------------------------------------------------------------------- validation


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise InputError(
            f"The segmenter needs an (H, W, 3) RGB image array, got {shape}. Convert single-band "
            "or multi-band imagery to 3 bands (e.g. choose bands or stack a grey band) first."
        )
    if image.dtype != np.uint8:
        raise InputError(
            f"The segmenter needs uint8 pixels, got {image.dtype}. Stretch the imagery to 0-255 "
            "first (the scene reader does this once per scene)."
        )
    if min(image.shape[:2]) < 1:
        raise InputError(f"The image is empty (shape {image.shape}).")


def _check_prompts(points, labels, boxes):
    if points is None and boxes is None:
        raise InputError("predict() needs points, boxes or both; neither was given.")
    count = None
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 3 or points.shape[2] != 2 or points.shape[1] < 1:
            raise InputError(
                f"points must have shape (B, N, 2) with x, y in pixels, got {points.shape}. "
                "Wrap a single point as points[None, None]."
            )
        if labels is None:
            labels = np.ones(points.shape[:2], dtype=np.int64)
        labels = np.asarray(labels)
        if labels.shape != points.shape[:2]:
            raise InputError(
                f"point_labels must have shape (B, N) = {points.shape[:2]}, got {labels.shape}."
            )
        if not np.isin(labels, (-1, 0, 1)).all():
            raise InputError("point_labels must be 1 (positive), 0 (negative) or -1 (padding).")
        labels = labels.astype(np.int64)
        count = points.shape[0]
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(
                f"boxes must have shape (B, 4) as x1, y1, x2, y2 in pixels, got {boxes.shape}."
            )
        if count is not None and boxes.shape[0] != count:
            raise InputError(
                f"points and boxes must describe the same B prompts: got {count} point sets and "
                f"{boxes.shape[0]} boxes."
            )
        count = boxes.shape[0]
    if count == 0:
        raise InputError("predict() was given zero prompts (B = 0).")
    for name, array in (("points", points), ("boxes", boxes)):
        if array is not None and not np.isfinite(array).all():
            raise InputError(f"{name} contain NaN or infinite coordinates.")
    return points, labels, boxes


# ---------------------------------------------------------------------- serve (issue #15) begin
# What `terramask serve`'s on-disk embedding cache needs: an embedding as plain arrays and
# back, on this segmenter's device and dtype (saved as float32, so bf16/fp16 round-trip
# exactly).

_LAYOUTS = ("tensor", "hq", "list")


def embedding_arrays(embedding: ImageEmbedding) -> dict[str, np.ndarray]:
    """A `SamSegmenter` embedding as named numpy arrays (see `embedding_from_arrays`)."""
    features = embedding.data
    if not isinstance(features, _Features):
        raise TypeError("not an embedding made by a SamSegmenter")
    value = features.embeddings
    if isinstance(value, torch.Tensor):
        layout, tensors = "tensor", [value]
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.Tensor):
        layout, tensors = "hq", [value[0], *value[1]]
    else:
        layout, tensors = "list", list(value)
    arrays = {f"t{i}": t.detach().float().cpu().numpy() for i, t in enumerate(tensors)}
    arrays["layout"] = np.array(_LAYOUTS.index(layout))
    arrays["sizes"] = np.array(
        [*features.original_size, *features.input_size, *features.image_size], dtype=np.int64
    )
    return arrays


def embedding_from_arrays(
    segmenter: SamSegmenter, arrays: dict[str, np.ndarray], key: str = ""
) -> ImageEmbedding:
    """The embedding `embedding_arrays` saved, on `segmenter`'s device and dtype."""
    layout = _LAYOUTS[int(arrays["layout"])]
    count = sum(1 for name in arrays if name.startswith("t") and name[1:].isdigit())
    tensors = [
        torch.from_numpy(np.asarray(arrays[f"t{i}"])).to(segmenter.device, segmenter.dtype)
        for i in range(count)
    ]
    value: Any = tensors[0] if layout == "tensor" else (
        (tensors[0], tensors[1:]) if layout == "hq" else tensors
    )
    sizes = [int(v) for v in np.asarray(arrays["sizes"])]
    features = _Features(value, (sizes[0], sizes[1]), (sizes[2], sizes[3]), (sizes[4], sizes[5]))
    return ImageEmbedding(image_size=features.image_size, data=features, key=key)


# ---------------------------------------------------------------------- serve (issue #15) end
