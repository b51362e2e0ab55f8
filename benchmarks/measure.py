"""Shared by the benchmarks: synthetic scenes written strip by strip, and isolated runs.

Each measured command runs in its own wrapper process, so the peak resident set size reported
is that command's own (RUSAGE_CHILDREN of a fresh parent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

#: the repository root (the parent of benchmarks/): put on sys.path so that a benchmark run as
#: `python benchmarks/X.py` can use the tests' helpers (`tests.helpers`), e.g. where the shared
#: data lives (`tests.helpers.paths`)
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def write_scene(path: Path, size: int, *, count: int = 3, dtype: str = "uint8") -> Path:
    """A tiled GeoTIFF of size x size with stripes of "fields", never whole in memory."""
    top = 255 if dtype == "uint8" else 4000
    profile = dict(
        driver="GTiff", width=size, height=size, count=count, dtype=dtype, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32633",
        transform=from_origin(500000, 4650000, 0.5, 0.5),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 1024):
            h = min(1024, size - row)
            block = rng.integers(top // 4, top // 2, size=(count, h, size)).astype(dtype)
            block[:, :, (np.arange(size) // 300) % 2 == 0] += np.asarray(top // 3, dtype=dtype)
            dst.write(block, window=Window(0, row, size, h))
    return path


def isolated(cmd: list[str]) -> dict:
    """Wall time and peak RSS (MiB) of `cmd`, measured in a wrapper process of its own."""
    wrapper = [
        sys.executable,
        "-c",
        "import json,resource,subprocess,sys,time;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "w=time.perf_counter()-t;"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'rc':p.returncode,'wall_s':round(w,2),'peak_rss_mib':round(r/1024,1),"
        "'err':p.stderr[-2000:]}))",
        *cmd,
    ]
    out = subprocess.run(wrapper, capture_output=True, text=True, check=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    if data.pop("rc") != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{data['err']}")
    data.pop("err")
    return data
