"""Shared fixtures: where the real labelled samples live (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.paths import rs_samples_folder

RS_SAMPLES = rs_samples_folder()


@pytest.fixture(scope="session")
def rs_samples() -> Path:
    if not RS_SAMPLES.is_dir():
        pytest.skip(
            f"real samples not found at {RS_SAMPLES} (the shared/ folder beside the checkout)"
        )
    return RS_SAMPLES
