"""Tiny CLIP/SigLIP folders built once per session, loaded offline through the user's path."""

from __future__ import annotations

import pytest

from terramask.models import clear_loaded, load_image_text
from terramask.testing.tiny_models import save_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_folders(tmp_path_factory) -> dict:
    """family -> folder of a tiny random CLIP / SigLIP with tokenizer and processor."""
    root = tmp_path_factory.mktemp("tiny-image-text")
    return {family: save_tiny_clip(root / family, family=family) for family in ("clip", "siglip")}


@pytest.fixture
def load_tiny_image_text(tiny_clip_folders, monkeypatch):
    """family -> the tiny model through `load_image_text`, on CPU, with the hub offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield lambda family: load_image_text(str(tiny_clip_folders[family]), device="cpu")
    clear_loaded()
