"""Mini benchmark layouts built in a temporary folder from the real rs-samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.eval_layouts import build_layout


@pytest.fixture
def mini_layout(rs_samples, tmp_path):
    """name -> data-set root holding that sample set in mmsegmentation's layout."""

    def make(name: str) -> Path:
        return build_layout(rs_samples, name, tmp_path / name)

    return make
