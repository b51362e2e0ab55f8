"""Device and dtype choice on a CPU-only machine."""

from __future__ import annotations

import pytest
import torch

from terramask.errors import InputError
from terramask.models import choose_device, choose_dtype


def test_explicit_cpu_and_auto():
    assert choose_device("cpu") == torch.device("cpu")
    auto = choose_device()
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert auto == torch.device("cpu")


def test_unavailable_or_unknown_devices_are_input_errors():
    if torch.cuda.device_count() < 2:
        with pytest.raises(InputError, match="cuda:1"):
            choose_device("cuda:1")
    with pytest.raises(InputError, match="not a device"):
        choose_device("gpu-please")


def test_dtypes():
    cpu = torch.device("cpu")
    assert choose_dtype(cpu) == torch.float32
    assert choose_dtype(cpu, "fp16") == torch.float16
    assert choose_dtype(cpu, "bf16") == torch.bfloat16
    assert choose_dtype(cpu, "FP32") == torch.float32
    assert choose_dtype(cpu, torch.float16) == torch.float16
    with pytest.raises(InputError, match="fp64"):
        choose_dtype(cpu, "fp64")
