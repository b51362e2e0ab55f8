"""An input error is reported before the heavy libraries load (they take seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from terramask.cli import main
sys.argv = ["terramask", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    code = stop.code
heavy = sorted(m for m in ("torch", "rasterio", "transformers", "pyogrio", "shapely")
               if m in sys.modules)
print("HEAVY", ",".join(heavy), "CODE", code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "missing.tif", "-c", "a", "-c", "b"],
        ["prompt", "missing.tif", "--point", "1,1"],
        ["ask", "missing.tif", "the roof", "--mllm-url", "http://127.0.0.1:9/v1",
         "--mllm-model", "m"],
        ["segment", "missing.tif", "-c", "a", "--tile", "10"],
        ["segment", "missing.tif", "-c", "a", "--engine", "clip", "--grid", "8"],
    ],
)
def test_bad_input_is_reported_before_heavy_imports(tmp_path, args):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "CODE 2" in done.stdout, done.stdout + done.stderr
    assert "HEAVY  CODE" in done.stdout, done.stdout  # none of them was imported
