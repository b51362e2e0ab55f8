"""Model adapters: find SAM, SAM 3 and CLIP models offline-first and load them behind protocols."""

from terramask.models.device import choose_device, choose_dtype
from terramask.models.loader import (
    clear_loaded,
    load_concept_segmenter,
    load_image_text,
    load_segmenter,
)
from terramask.models.registry import (
    DEFAULT_MODELS,
    KNOWN_MODELS,
    ModelSpec,
    ResolvedModel,
    list_models,
    pull_model,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODELS",
    "KNOWN_MODELS",
    "ModelSpec",
    "ResolvedModel",
    "choose_device",
    "choose_dtype",
    "clear_loaded",
    "list_models",
    "load_concept_segmenter",
    "load_image_text",
    "load_segmenter",
    "pull_model",
    "resolve_model",
]
