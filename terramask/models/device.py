"""Picks the torch device and dtype a model runs on, from "auto" or an explicit request."""

from __future__ import annotations

import torch

from terramask.errors import InputError

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(preference: str | torch.device = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; an explicit device is honoured or refused clearly."""
    text = str(preference).strip().lower() or "auto"
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(
            f"The device '{preference}' is not a device name. Use auto, cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            seen = f"{count} CUDA device(s) are visible" if count else "no CUDA device is visible"
            raise InputError(
                f"The device '{preference}' was requested but {seen} (torch {torch.__version__}"
                f", CUDA build: {torch.version.cuda or 'no'}). Use `ModelOptions.device` cpu or "
                "auto, or check CUDA_VISIBLE_DEVICES and that torch was installed with CUDA "
                "support."
            )
    elif device.type == "mps" and not _mps_available():
        raise InputError(
            f"The device '{preference}' was requested but Apple MPS is not available on this "
            "machine. Use `ModelOptions.device` cpu or auto."
        )
    elif device.type not in {"cpu", "cuda", "mps"}:
        raise InputError(
            f"The device '{preference}' is not supported. Use auto, cpu, cuda, cuda:N or mps."
        )
    return device


def choose_dtype(device: torch.device, preference: str | torch.dtype = "auto") -> torch.dtype:
    """bf16 (else fp16) on CUDA, fp32 elsewhere for "auto"; fp32/fp16/bf16 when asked."""
    if isinstance(preference, torch.dtype):
        return preference
    text = str(preference).strip().lower() or "auto"
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if text not in _DTYPES:
        raise InputError(
            f"The dtype '{preference}' is not supported. Use auto, fp32, fp16 or bf16."
        )
    return _DTYPES[text]
