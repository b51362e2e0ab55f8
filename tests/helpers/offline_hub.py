"""An empty Hugging Face cache in offline mode, for fixtures that load models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


def offline_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Yield an empty HF cache (offline); models loaded meanwhile are forgotten after."""
    from terramask.models import clear_loaded

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield cache
    clear_loaded()
