"""Per-tile throughput of `segment` (dense CLIP + SAM mask voting) against a SAM-pipeline peer.

Ours is what `OvssPredictor.predict` does to one tile, called stage by stage so each stage is
timed: SAM image encoder (`segmenter.embed`), dense CLIP probabilities and labels, automatic-mask
decoding of a G x G point grid (`generate_masks`, which then finds the embedding in the cache;
coarse to fine, skipping points the dense labels settle, unless `--no-prune`), mask voting, and
writing the label tile as a COG. The points handed to the mask decoder are counted; with
`--unpruned` ours also runs with pruning off, for the ratio at the full grid. The peer is what
LangSAM/samgeo-style tools do: transformers' `pipeline("mask-generation")` on the same grid,
then one CLIP forward per returned mask on its bounding-box crop (32 crops a batch) against the
same class text embeddings (the same 80-template ensemble), and the label map painted from the
masks.

Both sides use the same random-weight models built here from real architecture configs (speed
does not depend on weight values): SAM ViT-B / ViT-L with CLIP ViT-B/16, or the tiny test
models. Both use the same predicted-IoU and stability thresholds; with random weights how many
masks survive is arbitrary, so the thresholds are chosen to keep a realistic number and the
masks kept by each side are reported. Each side runs in a fresh subprocess that reports its
stage times and its peak resident set size. One-off costs (loading, encoding the vocabulary's
text) are reported apart and left out of the per-tile totals of both sides.

The pipeline's post-processing imports `torchvision.ops.boxes.batched_nms` and is guarded by a
torchvision availability check; torchvision cannot be installed beside this torch, so the peer
process gets a stand-in module holding a pure-torch `batched_nms` (below) and calls the guarded
method's undecorated body. Nothing else of torchvision is used by the pipeline's SAM path.

    .venv/bin/python benchmarks/segment_throughput.py [--sizes tiny,vit-b,vit-l] [--grid 29]
        [--unpruned] [--no-prune]

Random weights say little about how many points pruning skips (that depends on which masks a
trained SAM accepts and on how well dense CLIP labels agree with them), so `--label-maps`
measures that apart, without models: mask-generation doubles driven by the ground truth of
every real sample tile (see `label_map_pruning`).

    .venv/bin/python benchmarks/segment_throughput.py --label-maps [--grid 29]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from measure import REPO_ROOT  # noqa: F401  (importing measure puts the repo root on sys.path)

from tests.helpers.paths import rs_samples_folder

#: the real samples, in the shared/ folder beside the checkout
SAMPLES = rs_samples_folder()
TILE = SAMPLES / "loveda" / "img_dir" / "0.png"
CLASSES = ["building", "road,street", "water", "tree", "agriculture,field", "barren"]
SIZES = ("tiny", "vit-b", "vit-l")
#: SAM image encoders at their published sizes (SamConfig's default vision config is ViT-B).
SAM_VISION = {
    "vit-b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  global_attn_indexes=[2, 5, 8, 11], mlp_dim=3072, output_channels=256),
    "vit-l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  global_attn_indexes=[5, 11, 17, 23], mlp_dim=4096, output_channels=256),
}
#: (pred_iou_thresh, stability_score_thresh) per size, the same for both sides. Random weights
#: put predicted IoU and stability (offset 1.0) in size-specific ranges; these let a few hundred
#: of the 29 x 29 x 3 candidates through our filters (on 256-px logits), as real SAM does on a
#: 1024-px tile. Random masks are large overlapping blobs, so NMS leaves only a few; and the
#: pipeline scores stability on upsampled logits, which smooths random logits' peaks, so it
#: keeps fewer still (see the README).
THRESHOLDS = {"tiny": (0.1, 0.01), "vit-b": (0.2, 0.05), "vit-l": (0.9, 0.2)}
OURS_STAGES = ("encode", "dense_clip", "decode", "vote", "write")
PEER_STAGES = ("masks", "classify")


# ---------------------------------------------------------------------- models


def save_sam(path: Path, size: str) -> Path:
    """A random SamModel of the given encoder size with SAM's own 1024-px processor."""
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    from terramask.testing.tiny_models import _spread_weights

    torch.manual_seed(0)
    config = SamConfig(vision_config=SAM_VISION[size])
    # SAM's own init gives logits within ±0.01 at this size, so no mask would pass any filter;
    # unit-gain weights (as the tiny test models use) give masks with some structure
    _spread_weights(SamModel(config)).eval().save_pretrained(path)
    SamProcessor(SamImageProcessorPil()).save_pretrained(path)
    return path


def save_clip_b16(path: Path) -> Path:
    """A random CLIP ViT-B/16 (224 px; text 512 wide, 12 layers, vocab 49408) with an offline
    tokenizer (the tiny models' BPE: token ids fit the full vocabulary)."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from terramask.testing.tiny_models import _train_clip_bpe

    torch.manual_seed(0)
    vocab, merges = _train_clip_bpe()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, image_size=224, patch_size=16)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).eval(
    ).save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 224},
                                            crop_size={"height": 224, "width": 224})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def build_models(root: Path, size: str) -> tuple[Path, Path]:
    """(SAM folder, CLIP folder) for a size, reusing folders already saved under `root`."""
    from terramask.models.loader import quiet_progress
    from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam

    sam, clip = root / f"sam-{size}", root / ("clip-tiny" if size == "tiny" else "clip-b16")
    with quiet_progress():
        if not (sam / "config.json").exists():
            save_tiny_sam(sam) if size == "tiny" else save_sam(sam, size)
        if not (clip / "config.json").exists():
            save_tiny_clip(clip) if size == "tiny" else save_clip_b16(clip)
    return sam, clip


# ---------------------------------------------------------------------- shared by both sides


def read_tile() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(TILE).convert("RGB"))


class Stopwatch:
    """Named wall-clock laps: `with watch("stage"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Stopwatch:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] = time.perf_counter() - self._start


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- ours




def run_ours(sam: str, clip: str, grid: int, pred_iou: float, stability: float,
             prune: bool = True) -> dict:
    """TerraMask's per-tile OVSS path, stage by stage, through the real adapters."""
    from terramask.methods.dense_clip import DenseClip
    from terramask.methods.labels import labels_from_probabilities
    from terramask.methods.mask_generation import generate_masks
    from terramask.methods.vocabulary import ClassVocabulary
    from terramask.methods.voting import vote_masks
    from terramask.models import load_image_text, load_segmenter
    from terramask.options import GenerationSettings
    from tests.helpers.counting import CountingSegmenter

    watch = Stopwatch()
    tile = read_tile()
    vocabulary = ClassVocabulary.parse(CLASSES)
    settings = GenerationSettings(grid=grid, pred_iou_thresh=pred_iou,
                                  stability_thresh=stability, prune=prune)
    with watch("load"):
        segmenter = CountingSegmenter(load_segmenter(sam))
        dense = DenseClip(load_image_text(clip))
    with watch("text"):  # once per scene: every tile shares the vocabulary
        dense.text_embeddings(vocabulary)
    with watch("encode"):
        segmenter.embed(tile)
    with watch("dense_clip"):  # first: mask generation prunes points by these labels
        labels = labels_from_probabilities(dense.probabilities(tile, vocabulary), vocabulary)
    with watch("decode"):
        proposals = generate_masks(segmenter, tile, settings, dense=labels)
    with watch("vote"):
        labels = vote_masks(labels, proposals)
    with watch("write"):
        write_labels(labels, vocabulary)
    return {"seconds": watch.seconds, "masks": len(proposals), "points": segmenter.points,
            "peak_rss_mib": peak_rss_mib()}


def write_labels(labels: np.ndarray, vocabulary) -> None:
    """The label tile as `segment` writes it: uint8 class+1 COG with a colour table."""
    from affine import Affine
    from rasterio.windows import Window

    from terramask.pipeline.segment_run import LABEL_RASTER_NODATA, class_colormap
    from terramask.scene import RasterWriter

    height, width = labels.shape
    with tempfile.TemporaryDirectory() as folder, RasterWriter(
        Path(folder) / "labels.tif", width=width, height=height, dtype="uint8",
        crs="EPSG:32650", transform=Affine(0.3, 0, 500000, 0, -0.3, 3300000),
        nodata=LABEL_RASTER_NODATA, colormap=class_colormap(vocabulary),
    ) as writer:
        writer.write((labels + 1).astype(np.uint8), Window(0, 0, width, height))


# ---------------------------------------------------------------------- the peer


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.boxes.batched_nms in pure torch: greedy box NMS within each idx group.

    Returns the kept indices by decreasing score; a box is dropped when its IoU with a kept,
    higher-scoring box of the same group is > iou_threshold (torchvision's rule).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    # shift each group far from the others so boxes of different groups never overlap
    boxes = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    iou = (inter / (area[:, None] + area[None, :] - inter)).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64)]


def stand_in_torchvision(image_processor) -> None:
    """Let the SAM processor's AMG post-processing run without torchvision (see the top)."""
    for name in ("torchvision", "torchvision.ops", "torchvision.ops.boxes"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = module
    sys.modules["torchvision.ops.boxes"].batched_nms = batched_nms
    guarded = type(image_processor).post_process_for_mask_generation
    image_processor.post_process_for_mask_generation = types.MethodType(
        guarded.__wrapped__, image_processor)


def run_peer(sam: str, clip: str, grid: int, pred_iou: float, stability: float) -> dict:
    """pipeline("mask-generation") + CLIP on each mask's box crop, transformers only."""
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor, SamModel, pipeline

    from terramask.models.loader import quiet_progress

    watch = Stopwatch()
    tile = read_tile()
    with watch("load"), quiet_progress():
        sam_processor = AutoImageProcessor.from_pretrained(sam)
        stand_in_torchvision(sam_processor)
        generator = pipeline("mask-generation", model=SamModel.from_pretrained(sam).eval(),
                             image_processor=sam_processor)
        model = CLIPModel.from_pretrained(clip).eval()
        processor = CLIPProcessor.from_pretrained(clip)
    names = [(name, k) for k, spec in enumerate(CLASSES) for name in spec.split(",")]
    with watch("text"):
        text = peer_text_embeddings(model, processor, [n for n, _ in names])
    with watch("masks"):
        out = generator(Image.fromarray(tile), points_per_crop=grid, crops_n_layers=0,
                        points_per_batch=64, pred_iou_thresh=pred_iou,
                        stability_score_thresh=stability, output_bboxes_mask=True)
    with watch("classify"):
        owner = np.array([k for _, k in names])
        classes = owner[classify_crops(model, processor, tile, out["bounding_boxes"], text)]
        paint_labels(tile.shape[:2], out["masks"], classes)
    return {"seconds": watch.seconds, "masks": len(out["masks"]), "peak_rss_mib": peak_rss_mib()}


def peer_text_embeddings(model, processor, names: list[str]) -> torch.Tensor:
    """(N, D) per-name embeddings: the 80 ImageNet templates, normalised, averaged."""
    from terramask.methods.templates import IMAGENET_TEMPLATES

    prompts = [t.replace("{}", name) for name in names for t in IMAGENET_TEMPLATES]
    parts = []
    for start in range(0, len(prompts), 256):
        tokens = processor.tokenizer(prompts[start:start + 256], padding=True, truncation=True,
                                     return_tensors="pt")
        with torch.inference_mode():
            parts.append(_features(model.get_text_features(**tokens)))
    embeddings = _unit(torch.cat(parts)).reshape(len(names), len(IMAGENET_TEMPLATES), -1)
    return _unit(embeddings.mean(dim=1))


def classify_crops(model, processor, tile: np.ndarray, boxes, text: torch.Tensor,
                   batch: int = 32) -> np.ndarray:
    """Index of the best-matching name for each box crop, CLIP-processed 32 at a time."""
    crops = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=int).reshape(-1, 4):
        crops.append(tile[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
    best = []
    for start in range(0, len(crops), batch):
        pixels = processor.image_processor(images=crops[start:start + batch],
                                           return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            image = _unit(_features(model.get_image_features(pixel_values=pixels)))
        best.append((image @ text.T).argmax(dim=1).numpy())
    return np.concatenate(best) if best else np.zeros(0, dtype=int)


def paint_labels(shape: tuple[int, int], masks: list, classes: np.ndarray) -> np.ndarray:
    """A label map from the masks, larger masks first so smaller ones stay on top."""
    labels = np.full(shape, -1, dtype=np.int16)
    for i in sorted(range(len(masks)), key=lambda i: -int(masks[i].sum())):
        labels[np.asarray(masks[i], dtype=bool)] = classes[i]
    return labels


def _features(output) -> torch.Tensor:
    return getattr(output, "pooler_output", output).float()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------- pruning on label maps

#: the Dubai masks' colour code (the data set's own table does not match its pixels)
DUBAI_COLOURS = {(0x3C, 0x10, 0x98): 1, (0x84, 0x29, 0xF6): 2, (0x6E, 0xC1, 0xE4): 3,
                 (0xFE, 0xDD, 0x3A): 4, (0xE2, 0xA9, 0x29): 5}


def sample_label_maps() -> list[tuple[str, np.ndarray]]:
    """Ground truth of every LoveDA / Potsdam / Vaihingen sample and the first Dubai image of
    each of its 7 tiles, as (name, (H, W) int labels)."""
    from PIL import Image

    maps = []
    for path in sorted(SAMPLES.glob("*/ann_dir/*.png")):
        maps.append((str(path.relative_to(SAMPLES)), np.asarray(Image.open(path)).astype(int)))
    for folder in sorted(SAMPLES.glob("dubai/tile*")):
        path = sorted((folder / "masks").glob("*.png"))[0]
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        labels = np.zeros(rgb.shape[:2], dtype=int)
        for colour, value in DUBAI_COLOURS.items():
            labels[np.abs(rgb - np.array(colour)).sum(axis=-1) < 30] = value
        maps.append((str(path.relative_to(SAMPLES)), labels))
    return maps


def label_map_pruning(grid: int) -> None:
    """Points decoded with and without pruning, and how far the voted label map moves, on
    doubles driven by each sample's ground truth (no models; the tests' doubles).

    Masks: `ComponentSegmenter` (a click gives its ground-truth component; pruning is exact
    there) and the tests' `GranularSegmenter` (three granularities: the component within
    1/8 of the short side of the click, the component, the component with every component
    touching it). Dense labels: the tests' `patchy` model of dense CLIP, the majority label of
    each patch the size of a CLIP ViT-B/16 patch at SegEarth-OV's 448-px short side, with 15%
    of the patches set to a random class.
    """
    from terramask.methods.mask_generation import generate_masks
    from terramask.methods.voting import vote_masks
    from terramask.options import GenerationSettings
    from tests.helpers.counting import CountingSegmenter
    from tests.helpers.dense_labels import patchy
    from tests.helpers.doubles import ComponentSegmenter, GranularSegmenter

    lines = ["| tile | size | dense right | double | points decoded | share "
             "| label map = unpruned | right, pruned / unpruned |",
             "|---|---|---|---|---|---|---|---|"]
    totals: dict[str, list[tuple[float, float]]] = {}
    for name, truth in sample_label_maps():
        short = min(truth.shape)
        dense = patchy(truth, patch=max(4, round(short * 16 / 448)))
        image = np.zeros((*truth.shape, 3), np.uint8)
        doubles = {"component": ComponentSegmenter(truth),
                   "granular": GranularSegmenter(truth, radius=short / 8)}
        for kind, double in doubles.items():
            voted = {}
            for prune in (False, True):
                counting = CountingSegmenter(double)
                settings = GenerationSettings(grid=grid, prune=prune, points_per_batch=4)
                proposals = generate_masks(counting, image, settings, dense=dense)
                voted[prune] = (vote_masks(dense, proposals), counting.points)
            (full, all_points), (pruned, points) = voted[False], voted[True]
            agree = float((pruned == full).mean())
            lines.append(
                f"| {name} | {truth.shape[1]}x{truth.shape[0]} | {(dense == truth).mean():.1%} "
                f"| {kind} | {points} of {all_points} | {points / all_points:.1%} | {agree:.2%} "
                f"| {(pruned == truth).mean():.2%} / {(full == truth).mean():.2%} |"
            )
            totals.setdefault(kind, []).append((points / all_points, agree))
            print(lines[-1], file=sys.stderr, flush=True)
    for kind, values in totals.items():
        share, agree = np.mean(values, axis=0)
        lines.append(f"| **mean of {len(values)}** | | | {kind} | | {share:.1%} | {agree:.2%} | |")
    print("\n".join(lines))


# ---------------------------------------------------------------------- driver


def measure(side: str, sam: Path, clip: Path, args: argparse.Namespace) -> dict:
    """Run one side in a fresh interpreter; its last stdout line is its JSON report."""
    cmd = [sys.executable, __file__, "--worker", side, "--sam", str(sam), "--clip", str(clip),
           "--grid", str(args.grid), "--pred-iou", str(args.pred_iou),
           "--stability", str(args.stability), "--prune" if args.prune else "--no-prune"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(size: str, settings: argparse.Namespace, ours: dict, peer: dict,
              megapixels: float, unpruned: dict | None = None) -> dict:
    """One row: per-stage seconds, totals, throughput, memory, ratios."""
    ours_total = sum(ours["seconds"][s] for s in OURS_STAGES)
    peer_total = sum(peer["seconds"][s] for s in PEER_STAGES)
    full = {}
    if unpruned is not None:
        full_total = sum(unpruned["seconds"][s] for s in OURS_STAGES)
        full = {"unpruned_total": full_total, "unpruned_decode": unpruned["seconds"]["decode"],
                "unpruned_points": unpruned["points"], "unpruned_masks": unpruned["masks"],
                "unpruned_ratio": peer_total / full_total}
    return {
        "size": size, "grid": settings.grid,
        "thresholds": f"{settings.pred_iou:g} / {settings.stability:g}",
        **{s: ours["seconds"][s] for s in OURS_STAGES},
        "ours_total": ours_total, "ours_mp_min": megapixels / ours_total * 60,
        "ours_rss": ours["peak_rss_mib"], "ours_masks": ours["masks"],
        "ours_points": ours["points"], "prune": settings.prune, **full,
        "ours_load": ours["seconds"]["load"], "ours_text": ours["seconds"]["text"],
        "peer_masks_s": peer["seconds"]["masks"], "peer_classify": peer["seconds"]["classify"],
        "peer_total": peer_total, "peer_mp_min": megapixels / peer_total * 60,
        "peer_rss": peer["peak_rss_mib"], "peer_masks": peer["masks"],
        "peer_load": peer["seconds"]["load"], "peer_text": peer["seconds"]["text"],
        "ratio": peer_total / ours_total, "encoder_share": ours["seconds"]["encode"] / ours_total,
    }


def markdown(rows: list[dict]) -> str:
    """Two Markdown tables: our stages, then ours against the peer."""
    lines = [
        "| size | grid | prune | points decoded | encode s | dense CLIP s | decode s | vote s "
        "| write s | total s | MP/min | peak RSS MiB | encoder share | IoU / stability thresh "
        "| masks kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['grid']} | {'on' if r['prune'] else 'off'} "
            f"| {r['ours_points']} of {r['grid'] ** 2} | {r['encode']:.2f} "
            f"| {r['dense_clip']:.2f} | {r['decode']:.2f} | {r['vote']:.3f} | {r['write']:.3f} "
            f"| {r['ours_total']:.2f} | {r['ours_mp_min']:.2f} | {r['ours_rss']:.0f} "
            f"| {r['encoder_share']:.0%} | {r['thresholds']} | {r['ours_masks']} |"
        )
        if "unpruned_total" in r:
            lines.append(
                f"| {r['size']} | {r['grid']} | off | {r['unpruned_points']} of {r['grid'] ** 2} "
                f"| | | {r['unpruned_decode']:.2f} | | | {r['unpruned_total']:.2f} | | | "
                f"| {r['thresholds']} | {r['unpruned_masks']} |"
            )
    lines += [
        "",
        "| size | grid | ours s/tile | peer masks s | peer CLIP-crops s | peer s/tile "
        "| peer MP/min | peer peak RSS MiB | peer masks kept | throughput ours/peer "
        "| ours/peer, pruning off | one-off load+text s (ours / peer) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        off = f"{r['unpruned_ratio']:.2f}x" if "unpruned_ratio" in r else "-"
        if not r["prune"]:
            off = f"{r['ratio']:.2f}x"
        lines.append(
            f"| {r['size']} | {r['grid']} | {r['ours_total']:.2f} | {r['peer_masks_s']:.2f} "
            f"| {r['peer_classify']:.2f} | {r['peer_total']:.2f} | {r['peer_mp_min']:.2f} "
            f"| {r['peer_rss']:.0f} | {r['peer_masks']} | {r['ratio']:.2f}x | {off} "
            f"| {r['ours_load']:.1f}+{r['ours_text']:.1f} / {r['peer_load']:.1f}"
            f"+{r['peer_text']:.1f} |"
        )
    return "\n".join(lines)


def worker(args: argparse.Namespace) -> None:
    if args.worker == "ours":
        report = run_ours(args.sam, args.clip, args.grid, args.pred_iou, args.stability,
                          args.prune)
    else:
        report = run_peer(args.sam, args.clip, args.grid, args.pred_iou, args.stability)
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,vit-b")
    parser.add_argument("--grid", type=int, default=29, help="Points per side (SAM grid).")
    parser.add_argument("--pred-iou", type=float, help="Override the per-size IoU threshold.")
    parser.add_argument("--stability", type=float, help="Override the per-size stability one.")
    parser.add_argument("--keep", type=Path, help="Save (and reuse) the random models here.")
    parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                        help="Ours decodes coarse to fine, skipping settled points (default).")
    parser.add_argument("--unpruned", action="store_true",
                        help="Also time ours with pruning off (the full grid).")
    parser.add_argument("--label-maps", action="store_true",
                        help="Measure pruning on doubles driven by the real sample tiles' "
                        "ground truth instead (no models).")
    parser.add_argument("--worker", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--sam", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.label_maps:
        return label_map_pruning(args.grid)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {', '.join(SIZES)}")
    os.environ.setdefault("GDAL_CACHEMAX", "64")
    root = args.keep or Path(tempfile.mkdtemp(prefix="terramask-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    megapixels = float(np.prod(read_tile().shape[:2])) / 1e6
    rows = []
    for size in sizes:
        sam, clip = build_models(root, size)
        pred_iou, stability = THRESHOLDS[size]
        side_args = argparse.Namespace(
            grid=args.grid, prune=args.prune,
            pred_iou=pred_iou if args.pred_iou is None else args.pred_iou,
            stability=stability if args.stability is None else args.stability,
        )
        ours = measure("ours", sam, clip, side_args)
        unpruned = None
        if args.unpruned and args.prune:
            unpruned = measure("ours", sam, clip, argparse.Namespace(**{**vars(side_args),
                                                                      "prune": False}))
        peer = measure("peer", sam, clip, side_args)
        rows.append(summarise(size, side_args, ours, peer, megapixels, unpruned))
        print(f"{size}: ours {rows[-1]['ours_total']:.2f} s ({ours['points']} points), "
              f"peer {rows[-1]['peer_total']:.2f} s", file=sys.stderr)
    print(f"tile {TILE} ({megapixels:.2f} MP); torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(markdown(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
