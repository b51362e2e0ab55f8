"""Fixtures for the scene layer: small synthetic GeoTIFFs written per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from terramask.testing.scenes import write_synthetic_scene


@pytest.fixture
def make_scene(tmp_path: Path):
    """Write a synthetic scene into tmp_path; keyword arguments go to write_synthetic_scene."""
    counter = iter(range(1000))

    def make(name: str | None = None, **kwargs) -> Path:
        return write_synthetic_scene(tmp_path / (name or f"scene{next(counter)}.tif"), **kwargs)

    return make
