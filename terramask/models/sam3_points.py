"""SAM 3's interactive (click and box) model behind the `Segmenter` protocol: GeoSeg's route A.

GeoSeg's reference sends its CLIP-Surgery clicks to Ultralytics' `SAM("sam3.pt")`, which builds
SAM 3's interactive predictor (`build_interactive_sam3`: the shared SAM 3 backbone with the
tracker's SAM-2-style neck, prompt encoder and mask decoder). transformers has the same model
as `Sam3TrackerModel`, loaded from the facebook/sam3 folder (its conversion mapping takes the
detector's backbone, the `tracker_neck` and the `tracker_model.*` weights). This adapter runs it
through `SamSegmenter`'s embedding cache, prompt batching and up-sampling; only the model
class, the pre-processing (SAM 3's square resize to 1008, mean/std 0.5) and the mask
up-sampling (bilinear to the image, as SAM 2's post-processing) differ.

`point_model_for_route_a` is what `ask` calls: it returns the model, or None and why not (the
installed transformers lacks `Sam3TrackerModel`; the folder holds only SAM 3's detector), so
that route A can fall back to SAM and say so.
"""

from __future__ import annotations

import functools
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from terramask.errors import ModelLoadError
from terramask.models.registry import DEFAULT_MODELS, ResolvedModel, resolve_model
from terramask.models.sam import SamSegmenter, _Features, grid_side, pad_thin
from terramask.models.sam3 import _image_preprocessor
from terramask.models.weights import load_pretrained
from terramask.protocols import Segmenter

#: config.json model types whose folder holds SAM 3's interactive (tracker) weights.
TRACKER_MODEL_TYPES = ("sam3_video", "sam3_tracker", "sam3_tracker_video")


#: The transformers class of SAM 3's interactive model.
TRACKER_CLASS = "Sam3TrackerModel"


def sam3_tracker_class() -> Any:
    """transformers' `Sam3TrackerModel`, or a ModelLoadError saying the build lacks it."""
    import transformers

    try:
        return getattr(transformers, TRACKER_CLASS)
    except AttributeError:
        raise ModelLoadError(
            f"The installed transformers ({transformers.__version__}) has no Sam3TrackerModel, "
            "SAM 3's interactive model that GeoSeg's route A sends its clicks to; upgrade "
            "transformers (pip install -U transformers) to use it."
        ) from None


def _check_tracker_folder(resolved: ResolvedModel) -> None:
    """Raise when the folder holds only SAM 3's detector (model_type sam3), not the tracker."""
    if resolved.path.is_dir():
        config = resolved.path / "config.json"
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError):
            return  # let from_pretrained report it
        if model_type not in TRACKER_MODEL_TYPES:
            raise ModelLoadError(
                f"The SAM 3 folder {resolved.path} holds a '{model_type}' model: SAM 3's text "
                "detector only, without the interactive (tracker) weights that take clicks. Use "
                "the full facebook/sam3 checkpoint (model_type sam3_video)."
            )


class Sam3PointSegmenter(SamSegmenter):
    """SAM 3's interactive model as a `Segmenter` (clicks and boxes); `name` is the id asked for.

    Embeddings are cached per image as `SamSegmenter` does; `predict` takes the same (B, N, 2)
    clicks in image pixels. GeoSeg sends one click per prompt with `multimask=False`.
    """

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        cache_size: int = 4,
        max_prompts_per_call: int = 64,
    ):
        if resolved.family != "sam3":
            raise ValueError(f"Sam3PointSegmenter cannot run a '{resolved.family}' model")
        model_class = sam3_tracker_class()
        _check_tracker_folder(resolved)
        self.name = resolved.requested
        self.family = "sam3_tracker"
        self.resolved = resolved
        self.model, self.device, self.dtype = load_pretrained(model_class, resolved, device, dtype)
        self.preprocess = _image_preprocessor(Path(resolved.path))
        self.processor = None
        #: Thinner images are padded (bottom/right) to one token of the encoder's grid.
        self.max_aspect = grid_side(self.model.config)
        self.cache_size = max(0, int(cache_size))
        self.max_prompts_per_call = max(1, int(max_prompts_per_call))
        self._cache: OrderedDict[str, _Features] = OrderedDict()

    def _encode(self, image) -> _Features:
        padded = pad_thin(image, self.max_aspect)
        pixels = self.preprocess(padded).to(self.device, self.dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixels)
        return _Features(
            embeddings,
            (int(padded.shape[0]), int(padded.shape[1])),
            (int(pixels.shape[-2]), int(pixels.shape[-1])),
            (int(image.shape[0]), int(image.shape[1])),
        )

    def _upsample(self, low_res: torch.Tensor, features: _Features) -> torch.Tensor:
        """Logits bilinearly at the encoded size, cut to the caller's image (padding dropped)."""
        full = F.interpolate(low_res.float(), size=features.original_size, mode="bilinear",
                             align_corners=False)  # fmt: skip
        height, width = features.image_size
        return full[..., :height, :width]


def load_sam3_point_segmenter(
    id_or_path: str | os.PathLike | Any | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> Segmenter:
    """SAM 3's interactive model (default facebook/sam3), loaded once per process.

    A loaded `Segmenter` is returned as it is. Raises ModelLoadError when transformers lacks
    `Sam3TrackerModel` or the folder holds only SAM 3's detector, ModelNotFoundError when the
    model is not found.
    """
    from terramask.models.loader import load_once

    if id_or_path is not None and not isinstance(id_or_path, str | os.PathLike):
        return id_or_path
    sam3_tracker_class()
    resolved = resolve_model(os.fspath(id_or_path or DEFAULT_MODELS["concept"]), kind="concept")
    _check_tracker_folder(resolved)
    build = functools.partial(_build, resolved)
    return load_once("sam3_points", resolved, device, dtype, build)


def _build(resolved: ResolvedModel, device: torch.device, dtype: torch.dtype) -> Segmenter:
    return Sam3PointSegmenter(resolved, device=device, dtype=dtype)


def point_model_for_route_a(
    sam3: str | os.PathLike | Any | None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> tuple[Segmenter | None, str | None]:
    """(SAM 3's interactive model, None), or (None, why not) for `DualRoute`'s route A.

    `sam3` is what `--sam3` named (None: no SAM 3 was asked for). A build or folder that cannot
    give the interactive model is not an error here, only a reason route A uses SAM; a SAM 3
    that is missing altogether still raises (the same model is needed by route B).
    """
    if sam3 is None:
        return None, "no SAM 3 model was given (`sam3`)"
    try:
        return load_sam3_point_segmenter(sam3, device=device, dtype=dtype), None
    except ModelLoadError as exc:
        return None, str(exc)


__all__ = [
    "Sam3PointSegmenter", "load_sam3_point_segmenter", "point_model_for_route_a",
    "sam3_tracker_class",
]
