"""Ray local vs in-process: the same `segment` command on the same scene, both backends.

Writes one synthetic scene and runs `terramask segment` on it in a fresh process in process,
then with `--ray local --ray-workers N` for each N asked for, with tiny random models (the
pipeline and the backend are measured, not the models; with real models the per-tile model
time grows and the backend's fixed costs matter less). Prints wall time, megapixels per
second, each Ray run's throughput relative to in process, and the driver's peak RSS (Ray's
workers are not children the driver waits for, so their memory is not in that number). Also
checks that every run's label raster is identical to the in-process one.

    .venv/bin/python benchmarks/segment_ray.py [--size 4096] [--workers 1,2] [--engine clip]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from measure import isolated, write_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--engine", default="clip", choices=["clip", "sam+clip"])
    parser.add_argument("--keep", type=Path, help="Keep the scene and outputs in this folder.")
    args = parser.parse_args()
    os.environ.setdefault("GDAL_CACHEMAX", "64")
    from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam

    root = args.keep or Path(tempfile.mkdtemp(prefix="terramask-ray-"))
    root.mkdir(parents=True, exist_ok=True)
    clip, sam = save_tiny_clip(root / "tiny-clip"), save_tiny_sam(root / "tiny-sam")
    scene = write_scene(root / "scene.tif", args.size, count=4, dtype="uint16")
    base = [
        sys.executable, "-m", "terramask.cli", "segment", str(scene), "-c", "field",
        "-c", "road,street", "-c", "water", "--bands", "3,2,1", "--engine", args.engine,
        "--clip", str(clip), "--segmenter", str(sam), "--grid", "8", "--overwrite", "--json",
    ]  # fmt: skip
    runs = [("in process", [])] + [
        (f"ray local x{n}", ["--ray", "local", "--ray-workers", n])
        for n in args.workers.split(",")
    ]
    rows = []
    for name, extra in runs:
        out = root / name.replace(" ", "-")
        measured = isolated([*base, *extra, "-o", str(out)])
        labels = (out / "scene_labels.tif").read_bytes()
        rows.append({"backend": name, **measured, "labels": hashlib.sha256(labels).hexdigest()})

    megapixels = args.size**2 / 1e6
    reference = rows[0]
    print(f"scene {args.size}², engine {args.engine}, {os.cpu_count()} CPUs")
    print(f"{'backend':>16} {'wall s':>8} {'MP/s':>6} {'vs in process':>14} "
          f"{'driver peak MiB':>16} {'labels identical':>17}")  # fmt: skip
    for r in rows:
        print(f"{r['backend']:>16} {r['wall_s']:>8} {megapixels / r['wall_s']:>6.2f} "
              f"{reference['wall_s'] / r['wall_s']:>14.2f} {r['peak_rss_mib']:>16} "
              f"{r['labels'] == reference['labels']!s:>17}")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
