"""UniGeoSeg (Ni et al. 2025): interactive, referring and reasoning segmentation in one model.

Swin-B, Phi-1.5 and Mask2Former from transformers, with UniGeoSeg's own projector, task-adaptive
text enhancement, latent knowledge memory and mask-query path (`modules.py`); the released
checkpoint (nishuo1999/UniGeoSeg) loads through an explicit key table (`keys.py`). See
docs/unigeoseg.md for every place the released code differs from the paper, and which one
TerraMask follows.

    from terramask.models.unigeoseg import load_unigeoseg
    model = load_unigeoseg("unigeoseg")            # alias, hub id or folder
    answer = model.segment(image, "which field lies next to the river?")
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from terramask.models.unigeoseg.config import UniGeoSegConfig
from terramask.models.unigeoseg.predictor import UniGeoSeg, UniGeoSegResult, UniGeoSegSettings

#: The released checkpoint (Hugging Face), also known as the alias "unigeoseg".
DEFAULT_UNIGEOSEG = "nishuo1999/UniGeoSeg"


def load_unigeoseg(
    id_or_path: str | os.PathLike | Any | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
) -> UniGeoSeg:
    """A UniGeoSeg model, loaded once per process, folder, device and dtype.

    Args:
        id_or_path: The alias "unigeoseg", a hub id, a checkpoint folder (the released
            layout: config.json with model_type llava_phi, weights, tokenizer), a loaded
            `UniGeoSeg` (returned as it is), or None for nishuo1999/UniGeoSeg.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        dtype: "auto" (bf16/fp16 on GPUs, fp32 on CPU), "fp32" (the released evaluation's
            precision), "fp16" or "bf16".

    Raises:
        ModelNotFoundError: Not found locally, in the cache or on the hub.
        ModelLoadError: Not a UniGeoSeg checkpoint, or its weights do not match the released
            layout (every missing, unexpected or mis-shaped weight is named).
    """
    from terramask.models.loader import load_once
    from terramask.models.registry import resolve_model

    if id_or_path is not None and not isinstance(id_or_path, str | os.PathLike):
        return id_or_path
    resolved = resolve_model(os.fspath(id_or_path or DEFAULT_UNIGEOSEG), kind="unigeoseg")
    return load_once("unigeoseg", resolved, device, dtype, partial(_build, resolved))


def load_unigeoseg_fresh(
    id_or_path: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "fp32"
) -> UniGeoSeg:
    """A new copy of a UniGeoSeg model, not shared with other callers (fine-tuning changes
    its weights in place)."""
    from terramask.errors import TerraMaskError
    from terramask.models.device import choose_device, choose_dtype
    from terramask.models.loader import _load_error
    from terramask.models.registry import resolve_model

    resolved = resolve_model(os.fspath(id_or_path or DEFAULT_UNIGEOSEG), kind="unigeoseg")
    dev = choose_device(device)
    try:
        return _build(resolved, dev, choose_dtype(dev, dtype))
    except TerraMaskError:
        raise
    except Exception as exc:
        raise _load_error(resolved, exc) from None


def _build(resolved, device, dtype) -> UniGeoSeg:
    from terramask.models.unigeoseg.checkpoint import (
        build_model,
        load_tokenizer,
        load_weights,
        read_config,
    )

    folder = resolved.path
    config = read_config(folder)
    tokenizer = load_tokenizer(folder)
    model = build_model(config, initialise=False)
    report = load_weights(model, folder, config)
    model.to(device=device, dtype=dtype).eval()
    name = resolved.spec.name if resolved.spec is not None else resolved.requested
    loaded = UniGeoSeg(model, tokenizer, name=name)
    loaded.load_report = report
    return loaded


__all__ = [
    "DEFAULT_UNIGEOSEG",
    "UniGeoSeg",
    "UniGeoSegConfig",
    "UniGeoSegResult",
    "UniGeoSegSettings",
    "load_unigeoseg",
    "load_unigeoseg_fresh",
]
