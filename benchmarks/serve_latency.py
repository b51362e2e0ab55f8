"""Click latency and job throughput of `terramask serve`, at SAM ViT-B size (random weights).

A real server (uvicorn on 127.0.0.1, in this process) is called over HTTP as the page calls
it. Measured:

- uncached clicks: the first click on a tile (the image encoder runs, then the decoder);
- disk-cached clicks: the first click on a tile after the memory cache was emptied (the
  embedding is read from the on-disk cache);
- cached clicks: later clicks on tiles already embedded (only the decoder runs), p50/p95 —
  the goal is p95 under 150 ms on 2 CPU cores;
- jobs per minute: `prompt` jobs (the full output set: COGs, GPKG, GeoJSON, preview) on
  tiles already embedded, submitted together and run one at a time.

SAM ViT-B's encoder and decoder are built from `transformers.SamConfig()` (ViT-B: 12 layers,
768 wide, 1024 px input) with random weights; the masks are therefore ragged, which is a
harder case for polygonizing than a trained model's. `--object-masks` keeps the decoder's
whole computation but replaces each decoded mask by a real building's outline from the shared
samples, centred on the click: the outline step then costs what it costs for a trained model's
masks (the report says which masks were used). Torch threads are capped at `--threads`
(default 2).

    .venv/bin/python benchmarks/serve_latency.py [--threads 2] [--cached 60] [--uncached 4]
        [--jobs 6] [--object-masks] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import write_scene


def save_vit_b(path: Path) -> Path:
    """SAM at ViT-B size with random weights and its processor, saved like a hub download."""
    import torch
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    SamModel(SamConfig()).eval().save_pretrained(path)
    SamProcessor(SamImageProcessorPil()).save_pretrained(path)
    return path


def real_object_masks(samples: Path, min_pixels: int = 200) -> list:
    """Building outlines from the shared samples' labels (Potsdam, Vaihingen: 2; LoveDA: 2),
    each cropped to its bounding box: the shapes a trained SAM outlines."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    shapes = []
    for label in sorted(samples.glob("*/ann_dir/*.png")):
        values = np.asarray(Image.open(label))
        if values.ndim != 2:
            continue
        parts, _ = ndimage.label(values == 2)
        for index, box in enumerate(ndimage.find_objects(parts), start=1):
            crop = parts[box] == index
            if crop.sum() >= min_pixels:
                shapes.append(crop)
    return shapes


def substitute_object_masks(segmenter, shapes: list) -> None:
    """Keep the decoder's whole computation, then replace each decoded mask by a real object's
    outline centred on the click (random weights decode ragged masks: thousands of holes,
    which no trained model gives, would otherwise dominate the outline step)."""
    import dataclasses

    import numpy as np

    original = segmenter.predict
    turn = iter(range(10**9))

    def predict(embedding, *, points=None, point_labels=None, boxes=None, **kwargs):
        pred = original(embedding, points=points, point_labels=point_labels, boxes=boxes,
                        **kwargs)  # fmt: skip
        if pred.logits is None or points is None:
            return pred
        logits = np.full_like(pred.logits, -10.0)
        height, width = logits.shape[-2:]
        for b in range(logits.shape[0]):
            shape = shapes[next(turn) % len(shapes)]
            x, y = (int(v) for v in points[b, 0])
            top, left = max(0, y - shape.shape[0] // 2), max(0, x - shape.shape[1] // 2)
            part = shape[: height - top, : width - left]
            region = logits[b, :, top : top + part.shape[0], left : left + part.shape[1]]
            region[:, part] = 10.0
        return dataclasses.replace(pred, logits=logits, masks=logits > 0)

    segmenter.predict = predict


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def describe(values: list[float]) -> dict:
    return {
        "n": len(values), "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1), "mean_ms": round(statistics.fmean(values), 1),
        "max_ms": round(max(values), 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cached", type=int, default=60, help="cached clicks to time")
    parser.add_argument("--uncached", type=int, default=4, help="tiles clicked first (encoder)")
    parser.add_argument("--jobs", type=int, default=6, help="prompt jobs for jobs per minute")
    parser.add_argument("--size", type=int, default=3000, help="scene side, pixels")
    parser.add_argument("--object-masks", action="store_true",
                        help="replace each decoded mask by a real building's outline from the "
                        "shared samples (the decoder still runs in full): outlines as a trained "
                        "SAM's, not random weights' ragged masks")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import httpx
    import numpy as np
    import torch
    import uvicorn

    from terramask.options import ModelOptions, ServerOptions
    from terramask.server import create_app

    torch.set_num_threads(args.threads)
    load_start = __import__("os").getloadavg()[0]  # the machine may be shared: say how busy
    work = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    root = work / "root"
    root.mkdir()
    write_scene(root / "scene.tif", args.size)
    model = save_vit_b(work / "sam-vit-b-random")
    options = ServerOptions(root=root, port=0, output=work / "out",
                            embedding_cache=work / "embeddings")  # fmt: skip
    app = create_app(options, models=ModelOptions(segmenter=str(model), device="cpu"))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    state = app.state.server
    segmenter = state.models.get("segmenter")  # loading is not a click
    if args.object_masks:
        from tests.helpers.paths import rs_samples_folder

        substitute_object_masks(segmenter, real_object_masks(rs_samples_folder()))

    rng = np.random.default_rng(0)
    # the cores of the prompt tiling (1024 px tiles, 256 px overlap): a click in a core is
    # routed to that tile; the first click on one is uncached, later ones are cached
    from terramask.options import PROMPT_TILING
    from terramask.scene import plan_tiles

    cores = [t.core for t in plan_tiles(args.size, args.size, PROMPT_TILING)]
    cores = cores[: max(1, args.uncached)]
    centres = [(c.col_off + c.width / 2, c.row_off + c.height / 2) for c in cores]

    def near(k: int) -> tuple[float, float]:
        core = cores[k]
        return (core.col_off + rng.uniform(0.1, 0.9) * core.width,
                core.row_off + rng.uniform(0.1, 0.9) * core.height)  # fmt: skip

    def click(x: float, y: float) -> tuple[float, dict]:
        started = time.perf_counter()
        response = client.post("/scenes/scene.tif/prompt", json={"points": [[x, y]]})
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        return elapsed, response.json()

    uncached, sources = [], []
    for x, y in centres:
        elapsed, body = click(x, y)
        uncached.append(elapsed)
        sources += body["embedding"]
    assert all(s == "computed" for s in sources), sources

    cached, server_side, decode, polygons = [], [], [], []
    for _ in range(args.cached):
        elapsed, body = click(*near(int(rng.integers(len(cores)))))
        assert body["embedding"] == ["memory"], body["embedding"]
        cached.append(elapsed)
        server_side.append(body["timings_ms"]["total"])
        decode.append(body["timings_ms"]["decode"])
        polygons.append(body["timings_ms"]["polygons"])

    state.embedding_cache().clear_memory()
    from_disk = []
    for x, y in centres:
        elapsed, body = click(x + 7, y + 7)
        assert body["embedding"] == ["disk"], body["embedding"]
        from_disk.append(elapsed)

    started = time.perf_counter()
    ids = []
    for k in range(args.jobs):
        x, y = centres[k % len(centres)]
        response = client.post("/processes/prompt/execution", json={"inputs": {
            "scene": "scene.tif", "points": [[x + 3 * k, y]]}})  # fmt: skip
        response.raise_for_status()
        ids.append(response.json()["jobID"])
    state.jobs.wait_idle(timeout=3600)
    elapsed_jobs = time.perf_counter() - started
    statuses = [client.get(f"/jobs/{i}").json()["status"] for i in ids]
    assert all(s == "successful" for s in statuses), statuses
    server.should_exit = True
    thread.join(timeout=30)

    import os
    import resource

    results = {
        "model": "SAM ViT-B size (transformers SamConfig(), random weights)",
        "masks": "real building outlines substituted after the decoder (--object-masks)"
        if args.object_masks else "as decoded (random weights: ragged)",
        "torch_threads": args.threads,
        "scene_px": args.size,
        "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "uncached_click": describe(uncached),
        "disk_cached_click": describe(from_disk),
        "cached_click": describe(cached),
        "cached_click_server_ms": describe(server_side),
        "cached_click_decoder_ms": describe(decode),
        "cached_click_polygons_ms": describe(polygons),
        # the peer: the first click on a tile, which is what every CLI `prompt` run pays
        "uncached_over_cached_p50": round(percentile(uncached, 50) / percentile(cached, 50), 1),
        "disk_over_cached_p50": round(percentile(from_disk, 50) / percentile(cached, 50), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "jobs": {"count": args.jobs, "seconds": round(elapsed_jobs, 1),
                 "per_minute": round(args.jobs / elapsed_jobs * 60, 1)},
        "goal_cached_p95_under_150ms": percentile(cached, 95) < 150,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
