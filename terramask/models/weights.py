"""Load a transformers model's weights onto the chosen device and dtype, ready to infer."""

from __future__ import annotations

from typing import Any

import torch

from terramask.models.device import choose_device, choose_dtype
from terramask.models.registry import ResolvedModel


def load_pretrained(
    model_class: Any,
    resolved: ResolvedModel,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
) -> tuple[Any, torch.device, torch.dtype]:
    """`model_class.from_pretrained(folder)` in eval mode, with the device and dtype chosen."""
    device = choose_device(device)
    dtype = choose_dtype(device, dtype)
    model = model_class.from_pretrained(resolved.path, dtype=dtype)
    return model.to(device).eval(), device, dtype
