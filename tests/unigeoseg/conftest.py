"""A tiny UniGeoSeg checkpoint in the released layout, built once per session; an offline hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from terramask.testing.tiny_unigeoseg import save_tiny_unigeoseg
from tests.helpers.offline_hub import offline_hf_cache


@pytest.fixture(scope="session")
def tiny_unigeoseg_folder(tmp_path_factory) -> Path:
    return save_tiny_unigeoseg(tmp_path_factory.mktemp("tiny-unigeoseg") / "model")


@pytest.fixture(scope="session")
def tiny_unigeoseg(tiny_unigeoseg_folder):
    """The tiny checkpoint loaded on the CPU through the user's path (a folder)."""
    from terramask.models.registry import resolve_model
    from terramask.models.unigeoseg import _build

    resolved = resolve_model(str(tiny_unigeoseg_folder), kind="unigeoseg")
    import torch

    return _build(resolved, torch.device("cpu"), torch.float32)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty HF cache in offline mode; models loaded in the test are forgotten after."""
    yield from offline_hf_cache(tmp_path, monkeypatch)
