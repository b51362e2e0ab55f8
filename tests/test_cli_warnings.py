"""Warnings reach the user as one clean line: no source file, no line number, no class name."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from terramask.testing.tiny_models import save_tiny_sam


def test_a_warning_is_one_line_without_source_paths(tmp_path):
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(tmp_path / "plain.png")
    sam = save_tiny_sam(tmp_path / "sam")
    done = subprocess.run(
        [sys.executable, "-m", "terramask.cli", "prompt", str(tmp_path / "plain.png"),
         "--point", "40,30", "--segmenter", str(sam), "--device", "cpu", "-o",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert any("no georeferencing" in line for line in warnings), done.stderr
    assert "UserWarning" not in done.stderr and ".py:" not in done.stderr
    assert "warnings.warn" not in done.stderr
