"""Peak memory and time of `terramask prompt` as scenes grow, against a whole-scene peer.

The peer does what whole-image tools (samgeo's SamGeo.predict and the like) do: read the
entire scene into memory, hand it to the SAM processor, upsample the masks to full size and
write them. Both run the same tiny random SAM, so what is measured is the pipeline around the
model: reading, routing, writing. Each measurement is a fresh subprocess; peak memory is its
maximum resident set size.

    .venv/bin/python benchmarks/prompt_memory.py [--sizes 2000,10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from measure import isolated, write_scene

PEER = r"""
import sys, numpy as np, rasterio, torch
from transformers import SamModel, SamProcessor
scene, model_dir, out = sys.argv[1:4]
x, y = float(sys.argv[4]), float(sys.argv[5])
model = SamModel.from_pretrained(model_dir).eval()
processor = SamProcessor.from_pretrained(model_dir)
with rasterio.open(scene) as src:
    image = np.moveaxis(src.read(), 0, -1)
    profile = src.profile
inputs = processor(images=image, input_points=[[[[x, y]]]], return_tensors="pt")
with torch.inference_mode():
    pred = model(**inputs, multimask_output=False)
masks = processor.image_processor.post_process_masks(
    pred.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
mask = masks[0, 0].numpy().astype("uint8")
profile.update(count=1, dtype="uint8", compress="deflate", tiled=True)
with rasterio.open(out, "w", **profile) as dst:
    dst.write(mask, 1)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--keep", type=Path, help="Keep scenes and outputs in this folder.")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    # both sides get the block cache the CLI defaults to, so neither is charged for GDAL's
    # default of 5% of RAM
    os.environ.setdefault("GDAL_CACHEMAX", "64")

    from terramask.testing.tiny_models import save_tiny_sam

    root = args.keep or Path(tempfile.mkdtemp(prefix="terramask-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    model = save_tiny_sam(root / "tiny-sam")
    rows = []
    for size in sizes:
        scene = write_scene(root / f"scene{size}.tif", size)
        x, y = size / 2 + 10.5, size / 2 + 20.5
        ours_cmd = [
            sys.executable,
            "-m",
            "terramask.cli",
            "prompt",
            str(scene),
            "--point",
            f"{x},{y}",
            "--box",
            f"{size * 0.1},{size * 0.1},{size * 0.3},{size * 0.2}",
            "--segmenter",
            str(model),
            "-o",
            str(root / f"out{size}"),
            "--overwrite",
            "--json",
        ]
        peer_cmd = [
            sys.executable,
            "-c",
            PEER,
            str(scene),
            str(model),
            str(root / f"peer{size}.tif"),
            str(x),
            str(y),
        ]
        ours = isolated(ours_cmd)
        peer = isolated(peer_cmd)
        rows.append({"size": size, "megapixels": size * size / 1e6, "ours": ours, "peer": peer})

    print(
        f"{'scene':>12} {'ours MiB':>9} {'ours s':>7} {'peer MiB':>9} {'peer s':>7} "
        f"{'mem ours/peer':>13}"
    )
    for r in rows:
        ratio = r["ours"]["peak_rss_mib"] / r["peer"]["peak_rss_mib"]
        print(
            f"{r['size']:>6}x{r['size']:<5} {r['ours']['peak_rss_mib']:>9} "
            f"{r['ours']['wall_s']:>7} {r['peer']['peak_rss_mib']:>9} {r['peer']['wall_s']:>7} "
            f"{ratio:>13.2f}"
        )
    if len(rows) > 1:
        growth = rows[-1]["ours"]["peak_rss_mib"] / rows[0]["ours"]["peak_rss_mib"]
        print(f"ours: peak RSS at {rows[-1]['size']}² is {growth:.2f}x that at {rows[0]['size']}²")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
