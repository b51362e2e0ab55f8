"""Shared fixtures: where the real labelled samples live (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

RS_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rs-samples"


@pytest.fixture(scope="session")
def rs_samples() -> Path:
    if not RS_SAMPLES.is_dir():
        pytest.skip(
            f"real samples not found at {RS_SAMPLES} (the shared/ folder beside the checkout)"
        )
    return RS_SAMPLES
