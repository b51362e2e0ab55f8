"""Loads a segmenter, image-text or concept model once per process, picking the adapter by family.

Every failure inside `from_pretrained` (missing or corrupt weights, a config the installed
transformers cannot read, a missing tokenizer backend) becomes one `ModelLoadError` that
names the folder and says what to do, instead of a transformers traceback.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from terramask.errors import ModelLoadError, TerraMaskError
from terramask.models.device import choose_device, choose_dtype
from terramask.models.registry import DEFAULT_MODELS, ResolvedModel, resolve_model
from terramask.protocols import ConceptSegmenter, ImageText, Segmenter

_LOADED: dict[tuple[str, str, str, str], Any] = {}
_LOCK = threading.Lock()


def _segmenter(resolved: ResolvedModel, dev: torch.device, dt: torch.dtype) -> Segmenter:
    from terramask.models.sam import SamSegmenter

    return SamSegmenter(resolved, device=dev, dtype=dt)


def _image_text(resolved: ResolvedModel, dev: torch.device, dt: torch.dtype) -> ImageText:
    if resolved.family == "open_clip":
        from terramask.models.open_clip_adapter import OpenClipImageText

        return OpenClipImageText(resolved, device=dev, dtype=dt)
    if resolved.family == "siglip2":
        raise ModelLoadError(
            f"The model '{resolved.requested}' at {resolved.path} is a SigLIP 2 model, which "
            "this release recognises but cannot run yet. Use a SigLIP (v1) or CLIP model, "
            "e.g. google/siglip-base-patch16-224 or openai/clip-vit-base-patch16."
        )
    from terramask.models.clip import ClipImageText

    return ClipImageText(resolved, device=dev, dtype=dt)


def _concept(resolved: ResolvedModel, dev: torch.device, dt: torch.dtype) -> ConceptSegmenter:
    from terramask.models.sam3 import Sam3ConceptSegmenter

    return Sam3ConceptSegmenter(resolved, device=dev, dtype=dt)


#: The adapter each kind of model is built with, from its resolved folder.
_BUILDERS: dict[str, Callable[[ResolvedModel, torch.device, torch.dtype], Any]] = {
    "segmenter": _segmenter,
    "image_text": _image_text,
    "concept": _concept,
}


def load_model(
    kind: str,
    id_or_path: str | os.PathLike | Any | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> Any:
    """A model of `kind` ("segmenter", "image_text" or "concept") behind its protocol.

    A model already loaded is returned as it is; otherwise it loads once per process, path,
    device and dtype, and later calls get the same object.

    Args:
        kind: Which protocol the model must serve (`Segmenter`, `ImageText`,
            `ConceptSegmenter`).
        id_or_path: An alias (`terramask models list`), a hub id, a folder, a loaded model,
            or None for the kind's default (SAM ViT-L, CLIP ViT-B/16, facebook/sam3).
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N", "mps".
        dtype: "auto" (bf16/fp16 on GPUs, fp32 on CPU), "fp32", "fp16" or "bf16".

    Raises:
        ModelNotFoundError: The model is not found locally, in the cache or on the hub.
        ModelLoadError: The folder cannot be loaded (wrong family, corrupt files).
        InputError: The device does not exist here.
    """
    if id_or_path is not None and not isinstance(id_or_path, str | os.PathLike):
        return id_or_path
    resolved = resolve_model(os.fspath(id_or_path or DEFAULT_MODELS[kind]), kind=kind)
    return load_once(kind, resolved, device, dtype, functools.partial(_BUILDERS[kind], resolved))


def load_segmenter(id_or_path: Any = None, **where: Any) -> Segmenter:
    """A SAM-family `Segmenter` (default SAM ViT-L); see `load_model`."""
    return load_model("segmenter", id_or_path, **where)


def load_image_text(id_or_path: Any = None, **where: Any) -> ImageText:
    """A CLIP-family `ImageText` (default CLIP ViT-B/16); see `load_model`."""
    return load_model("image_text", id_or_path, **where)


def load_concept_segmenter(id_or_path: Any = None, **where: Any) -> ConceptSegmenter:
    """A SAM 3 `ConceptSegmenter` (default facebook/sam3); see `load_model`."""
    return load_model("concept", id_or_path, **where)


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' per-file progress bars (they would pollute --json output)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def clear_loaded() -> None:
    """Forget every loaded model (tests, or freeing memory between runs)."""
    with _LOCK:
        _LOADED.clear()


def load_once(kind: str, resolved: ResolvedModel, device, dtype, build: Callable) -> Any:
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    key = (kind, str(resolved.path), str(dev), str(dt))
    with _LOCK:
        if key not in _LOADED:
            try:
                with quiet_progress():
                    _LOADED[key] = build(dev, dt)
            except TerraMaskError:
                raise
            except Exception as exc:
                raise _load_error(resolved, exc) from None
        return _LOADED[key]


def _load_error(resolved: ResolvedModel, exc: BaseException) -> ModelLoadError:
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    text = str(exc).lower()
    if "sentencepiece" in text or "protobuf" in text:
        fix = "Install the tokenizer backend it needs with `pip install sentencepiece protobuf`."
    elif isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text:
        fix = (
            "Free GPU memory, pick a smaller model, or run on the CPU (`ModelOptions.device` "
            "cpu)."
        )
    else:
        name = resolved.spec.name if resolved.spec else resolved.requested
        again = (
            f"delete it and fetch it again with `terramask models pull {name}`"
            if resolved.origin != "local"
            else "re-save or re-download it"
        )
        fix = (
            "The folder is probably incomplete or corrupt (missing or truncated weights, or "
            f"a config from a newer transformers): {again}, or point to a complete folder."
        )
    return ModelLoadError(
        f"The model '{resolved.requested}' ({resolved.family}) in {resolved.path} could not be "
        f"loaded ({what}). {fix}"
    )


__all__ = [
    "clear_loaded", "load_concept_segmenter", "load_image_text", "load_model", "load_segmenter",
    "quiet_progress",
]
