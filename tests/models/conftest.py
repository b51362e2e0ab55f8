"""Tiny models built once per session, and a Hugging Face environment that never goes online."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam
from tests.helpers.offline_hub import offline_hf_cache


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_sam(tiny_dir):
    """family -> folder of a tiny random SAM-family model with its processor."""
    return {f: save_tiny_sam(tiny_dir / f, family=f) for f in ("sam", "sam_hq", "sam2")}


@pytest.fixture(scope="session")
def tiny_clip(tiny_dir):
    """family -> folder of a tiny random CLIP/SigLIP model with tokenizer and processor."""
    return {f: save_tiny_clip(tiny_dir / f, family=f) for f in ("clip", "siglip")}


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path, monkeypatch) -> Path:
    """An empty HF cache and offline mode for every test; loaded models are forgotten after."""
    yield from offline_hf_cache(tmp_path, monkeypatch)


def _lay_out_cache(cache: Path, repo_id: str, folder: Path, revision: str = "0" * 40) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def lay_out_cache():
    """Copy a model folder into the cache the way `hf download` leaves it (refs/main, snapshot)."""
    return _lay_out_cache
