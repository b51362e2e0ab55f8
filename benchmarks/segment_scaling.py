"""Does `segment` stay flat in memory and linear in time as scenes grow?

Writes synthetic 4-band uint16 GeoTIFFs (2k², 8k², 16k² by default; bands 3,2,1 used as RGB,
the scene-wide stretch applied) and runs `terramask segment` on each in a fresh process with
tiny random models, so that what is measured is the pipeline — reading, tiling, writing COGs,
polygons and their merging across seams — not the models. Prints wall time, megapixels per
second, peak RSS, and each scene's peak and time relative to the smallest.

    .venv/bin/python benchmarks/segment_scaling.py [--sizes 2048,8192,16384] [--engine clip]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from measure import isolated, write_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,8192,16384")
    parser.add_argument("--engine", default="clip", choices=["clip", "sam+clip"])
    parser.add_argument("--keep", type=Path, help="Keep scenes and outputs in this folder.")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    os.environ.setdefault("GDAL_CACHEMAX", "64")

    from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam

    root = args.keep or Path(tempfile.mkdtemp(prefix="terramask-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    clip = save_tiny_clip(root / "tiny-clip")
    sam = save_tiny_sam(root / "tiny-sam")
    rows = []
    for size in sizes:
        scene = write_scene(root / f"scene{size}.tif", size, count=4, dtype="uint16")
        cmd = [
            sys.executable, "-m", "terramask.cli", "segment", str(scene),
            "-c", "field", "-c", "road,street", "-c", "water", "--bands", "3,2,1",
            "--engine", args.engine, "--clip", str(clip), "--segmenter", str(sam),
            "--grid", "8", "-o", str(root / f"out{size}"), "--overwrite", "--json",
        ]  # fmt: skip
        measured = isolated(cmd)
        report = json.loads((root / f"out{size}" / f"scene{size}.json").read_text())
        polygons = sum(c["polygons"] for c in report["classes"])
        rows.append({"size": size, "megapixels": size * size / 1e6, "polygons": polygons,
                     "tiles": report["tiles"]["total"], **measured})  # fmt: skip

    base = rows[0]
    print(f"{'scene':>13} {'MP':>7} {'tiles':>6} {'polygons':>9} {'wall s':>8} {'MP/s':>6} "
          f"{'peak MiB':>9} {'peak/base':>9} {'time/base per MP':>16}")  # fmt: skip
    for r in rows:
        per_mp = (r["wall_s"] / r["megapixels"]) / (base["wall_s"] / base["megapixels"])
        print(f"{r['size']:>6}x{r['size']:<6} {r['megapixels']:>7.1f} {r['tiles']:>6} "
              f"{r['polygons']:>9} {r['wall_s']:>8} {r['megapixels'] / r['wall_s']:>6.2f} "
              f"{r['peak_rss_mib']:>9} {r['peak_rss_mib'] / base['peak_rss_mib']:>9.2f} "
              f"{per_mp:>16.2f}")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
