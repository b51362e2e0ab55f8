"""GeoSeg's training-free reasoning segmentation: MLLM box → refined crop → two routes → fusion.

Follows the reference code (Tankowa/GeoSeg, `CLIP_Surgery/process_annotations_clip_surverg.py`
and its `clip_surgery` package; `specs/geoseg.md` §3–6):

- *Refinement* (`refine_box` with `GEOSEG_REFINEMENT`): the parser's clamp, margins of
  int(0.2 w), int(0.2 h) on the top/left and int(0.1 w), int(0.1 h) on the bottom/right, and a
  16 x 16 box centred on the box when either side is under 16 px, clamped to the image.
- *One box*: the reference segments the first box of the reply (`select_boxes`, "one").
- *Route A*: CLIP Surgery (ViT-B/16, architecture surgery on the last 6 blocks, crop at
  512 x 512, the 85-template ensemble minus the empty-text ensemble) gives a 32 x 32 map, 16 x 16
  after a bilinear resize, min-max normalised; the top min(#cells >= 0.8, half the cells) cells
  are positive clicks, no negatives (`surgery_points`); each click is its own prompt to SAM 3's
  interactive model (SAM when it is not there), which sees the crop letterboxed as Ultralytics
  gives it (padded bottom/right with grey 114 to a square), and the masks are OR-merged.
- *Route B*: SAM 3 prompted with the entity noun (the crop stretched to a square, as
  Ultralytics' semantic predictor does), instances above 0.25 kept, box NMS at 0.7, mask logits
  above 0.5, OR-merged (without SAM 3
  a dense-CLIP mask stands in: not the published route, and `CropResult` says so).
- *Fusion*: the intersection when both routes found something, otherwise the one that did.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from terramask.methods.mask_generation import nms_keep
from terramask.methods.templates import CLIP_SURGERY_TEMPLATES
from terramask.options import BOXES_MODES, BoxesMode
from terramask.protocols import ConceptSegmenter, ImageText, Segmenter, fill_template

BoxArithmetic = Literal["reference", "continuous"]


@dataclass(frozen=True)
class BoxRefinement:
    """Per-side expansion (fractions of the box's width/height), a shift, a minimum size.

    GeoSeg's published correction for MLLM boxes on overhead imagery, which come out shifted
    and too tight: x1 -= 0.2w, y1 -= 0.2h, x2 += 0.1w, y2 += 0.1h; boxes under 16 px grow to
    16 x 16. `calibrate` fits the same parameters to labelled data.

    `arithmetic` "reference" is the reference code's integer arithmetic (`GEOSEG_REFINEMENT`):
    whole pixels, margins truncated with int(), and a box with either side under `min_size`
    replaced by a `min_size` square centred on it, then clamped. "continuous" (what
    `calibrate` fits, whose optimiser needs a smooth objective) keeps fractional pixels and
    grows only the short side to `min_size`.
    """

    left: float = 0.2
    top: float = 0.2
    right: float = 0.1
    bottom: float = 0.1
    shift_x: float = 0.0
    shift_y: float = 0.0
    min_size: float = 16.0
    arithmetic: BoxArithmetic = "continuous"

    def __post_init__(self) -> None:
        if self.arithmetic not in ("reference", "continuous"):
            raise ValueError(
                f"BoxRefinement.arithmetic must be 'reference' or 'continuous', got "
                f"{self.arithmetic!r}"
            )

    @classmethod
    def none(cls) -> BoxRefinement:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> BoxRefinement:
        """Read a file `save` wrote (files written before `arithmetic` existed are continuous)."""
        return cls(**json.loads(Path(path).read_text()))


#: The reference's refinement: its fractions, with its integer arithmetic and 16-px guard.
GEOSEG_REFINEMENT = BoxRefinement(arithmetic="reference")


def refine_box(
    box: Sequence[float], image_size: tuple[int, int], refinement: BoxRefinement = GEOSEG_REFINEMENT
) -> np.ndarray:
    """The x1, y1, x2, y2 pixel box the routes crop, from the MLLM's box (see BoxRefinement)."""
    if refinement.arithmetic == "reference":
        return _refine_reference(box, image_size, refinement)
    height, width = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    x1, x2 = x1 - refinement.left * w, x2 + refinement.right * w
    y1, y2 = y1 - refinement.top * h, y2 + refinement.bottom * h
    dx, dy = refinement.shift_x * w, refinement.shift_y * h
    x1, x2, y1, y2 = x1 + dx, x2 + dx, y1 + dy, y2 + dy
    x1, x2 = _grow(x1, x2, refinement.min_size, width)
    y1, y2 = _grow(y1, y2, refinement.min_size, height)
    return np.array([max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)])


def clamp_box(box: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The reference parser's clamp of a box, in whole pixels (coordinates rounded first).

    x1 in [0, W-1], y1 in [0, H-1], x2 in [x1+1, W], y2 in [y1+1, H]: every box keeps at
    least one pixel, a flipped one included.
    """
    height, width = image_size
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1 = max(0, min(x1, width - 1))
    y1 = max(0, min(y1, height - 1))
    x2 = max(x1 + 1, min(x2, width))
    y2 = max(y1 + 1, min(y2, height))
    return x1, y1, x2, y2


def _refine_reference(
    box: Sequence[float], image_size: tuple[int, int], refinement: BoxRefinement
) -> np.ndarray:
    """The reference's expansion (int-truncated margins) and its small-box guard."""
    height, width = image_size
    x1, y1, x2, y2 = clamp_box(box, image_size)
    w, h = x2 - x1, y2 - y1
    dx, dy = int(w * refinement.shift_x), int(h * refinement.shift_y)
    x1 = max(0, x1 - int(w * refinement.left) + dx)
    y1 = max(0, y1 - int(h * refinement.top) + dy)
    x2 = min(width, x2 + int(w * refinement.right) + dx)
    y2 = min(height, y2 + int(h * refinement.bottom) + dy)
    x1, y1, x2, y2 = clamp_box((x1, y1, x2, y2), image_size)  # the routes clamp again
    size = int(refinement.min_size)
    if x2 - x1 < size or y2 - y1 < size:
        cx, cy, half = (x1 + x2) // 2, (y1 + y2) // 2, size // 2
        x1, y1 = max(0, cx - half), max(0, cy - half)
        x2, y2 = min(width, cx + half), min(height, cy + half)
    return np.array([x1, y1, x2, y2], dtype=np.float64)


def select_boxes(boxes: Sequence, mode: BoxesMode = "one") -> list:
    """The boxes a run segments: "one", the first as the reference does, or "all" of them."""
    if mode not in BOXES_MODES:
        raise ValueError(f"boxes mode must be one of {BOXES_MODES}, got {mode!r}")
    boxes = list(boxes)
    return boxes[:1] if mode == "one" else boxes


def zero_area(box: Sequence[float]) -> str | None:
    """Why an x1, y1, x2, y2 box has no area, in words, or None when it has some.

    "no width" (x2 <= x1), "no height" (y2 <= y1) or "no width and no height" (a point). An
    MLLM gives such a box when it means a point or a line, or when a small object's box is
    rounded on the downsampled image it was shown.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    flat = [what for what, empty in (("width", x2 <= x1), ("height", y2 <= y1)) if empty]
    return " and ".join(f"no {what}" for what in flat) or None


def _grow(lo: float, hi: float, size: float, limit: int) -> tuple[float, float]:
    """Widen [lo, hi] around its centre to `size`, kept inside [0, limit] where possible."""
    lo, hi = max(lo, 0.0), min(hi, float(limit))
    if hi - lo >= size:
        return lo, hi
    centre = (lo + hi) / 2
    size = min(size, float(limit))
    lo = min(max(centre - size / 2, 0.0), limit - size)
    return lo, lo + size


# ---------------------------------------------------------------------- route A: clicks

#: CLIP Surgery's input side in GeoSeg (the crop is resized to it, aspect not kept).
SURGERY_INPUT_SIZE = 512


@dataclass(frozen=True)
class PointSelection:
    """How clicks are read off CLIP Surgery's map (`similarity_map_to_points`, t=0.8,
    down_sample=2). The reference also computes as many negatives (the lowest cells) and
    then drops them: `negatives` True would keep them (not the published setting)."""

    threshold: float = 0.8
    down_sample: int = 2
    negatives: bool = False


@dataclass(frozen=True)
class SurgeryMap:
    """CLIP Surgery's similarity of each patch of the crop's 512 x 512 view to the entity.

    `scores` is (h, w) (32 x 32 for ViT-B/16): patch · (text − empty-text), no softmax.
    `method` is "clip-surgery" (the architecture surgery of `surgery_features`) or
    "dense-tokens" (an image-text model without it: its `dense_tokens` stand in).
    """

    scores: np.ndarray
    method: str


def surgery_similarity(
    image_text: ImageText,
    crop: np.ndarray,
    entity: str,
    *,
    size: int = SURGERY_INPUT_SIZE,
    templates: Sequence[str] = CLIP_SURGERY_TEMPLATES,
) -> SurgeryMap:
    """CLIP Surgery's map of `entity` on an (H, W, 3) crop, as GeoSeg's route A computes it.

    The crop is resized to size x size (bicubic); the patch tokens (unit length) are scored
    against the entity's template-ensemble feature minus the empty string's ("" in every
    template: CLIP Surgery's redundant feature), both unit-length ensembles, their difference
    not re-normalised. A model with `supports_surgery` runs CLIP Surgery itself in float32;
    any other `ImageText` is shown the same 512 x 512 view and its `dense_tokens` are used.
    """
    if getattr(image_text, "supports_surgery", False):
        tokens = image_text.surgery_features([crop], size=size)[0][1:]  # drop the class token
        side = round(len(tokens) ** 0.5)
        grid = (side, len(tokens) // side)
        text = image_text.encode_text([entity], templates, float32=True)[0]
        empty = _ensemble(image_text, [fill_template(t, "") for t in templates], float32=True)
        method = "clip-surgery"
    else:
        view = resize_view(crop, size)
        patches, _ = image_text.dense_tokens([view])
        grid = patches.shape[1:3]
        tokens = patches[0].reshape(-1, patches.shape[-1])
        tokens = tokens / np.linalg.norm(tokens, axis=-1, keepdims=True).clip(1e-12)
        text = image_text.encode_text([entity], templates)[0]
        empty = _ensemble(image_text, [fill_template(t, "") for t in templates])
        method = "dense-tokens"
    scores = np.asarray(tokens, np.float32) @ np.asarray(text - empty, np.float32)
    return SurgeryMap(scores.reshape(grid), method)


def resize_view(crop: np.ndarray, size: int = SURGERY_INPUT_SIZE) -> np.ndarray:
    """The crop resized to size x size with PIL's bicubic filter (CLIP Surgery's preprocessing)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(crop))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))


def _ensemble(image_text: ImageText, prompts: list[str], float32: bool = False) -> np.ndarray:
    """The unit mean of the unit embeddings of `prompts` (an ensemble of filled templates)."""
    if float32:
        each = image_text.encode_text(prompts, float32=True)
    else:
        each = image_text.encode_text(prompts)
    each = np.asarray(each, np.float64)
    each = each / np.linalg.norm(each, axis=-1, keepdims=True).clip(1e-12)
    mean = each.mean(axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


def surgery_points(
    scores: np.ndarray, crop_size: tuple[int, int], selection: PointSelection = PointSelection()
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks from a CLIP Surgery map, as `similarity_map_to_points` (t=0.8, down_sample=2).

    The (h, w) map is resized bilinearly to (h // 2, w // 2) (16 x 16 for ViT-B/16), min-max
    normalised; n = min(#cells >= 0.8, half the cells) (at most 128 of 256); the n highest
    cells (in ascending order, ties by index) become clicks at their centres scaled to the
    crop, (col + 0.5) * W / w', (row + 0.5) * H / h', capped at W - 1 / H - 1 and truncated to
    whole pixels. A flat map (max = min: the reference divides 0 by 0) gives no clicks. With
    `selection.negatives` the n lowest cells follow as negatives (label 0).

    Returns (N, 2) int x, y crop pixels and (N,) labels.
    """
    height, width = crop_size
    side = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None, None]
    down = (side.shape[-2] // selection.down_sample, side.shape[-1] // selection.down_sample)
    grid = F.interpolate(side, size=down, mode="bilinear", align_corners=False)[0, 0]
    rows, cols = grid.shape
    flat = grid.reshape(-1)
    flat = (flat - flat.min()) / (flat.max() - flat.min())
    order = torch.sort(flat, stable=True).indices.tolist()
    count = min(int((flat >= selection.threshold).sum()), flat.numel() // 2)
    scale_x, scale_y = float(width) / cols, float(height) / rows

    def centre(index: int) -> tuple[int, int]:
        x = min((index % cols + 0.5) * scale_x, width - 1)
        y = min((index // cols + 0.5) * scale_y, height - 1)
        return int(x), int(y)

    chosen = order[len(order) - count:] if count else []
    points = [centre(i) for i in chosen]
    labels = [1] * len(points)
    if selection.negatives and count:
        points += [centre(i) for i in order[:count]]
        labels += [0] * count
    return np.array(points, dtype=np.int64).reshape(-1, 2), np.array(labels, dtype=np.int64)


def fallback_points(crop_size: tuple[int, int]) -> np.ndarray:
    """The reference's synthetic clicks: a 3 x 3 grid, 2 px apart, around the crop's centre.

    (W // 2 + dx, H // 2 + dy) for dy, dx in {-2, 0, 2}, row by row, clamped to the crop.
    In the reference they stand in when CLIP Surgery gave no positive click, which its own
    code never reaches; here they are route A's clicks when no CLIP model is given.
    """
    height, width = crop_size
    cx, cy = width // 2, height // 2
    return np.array(
        [[max(0, min(width - 1, cx + dx)), max(0, min(height - 1, cy + dy))]
         for dy in (-2, 0, 2) for dx in (-2, 0, 2)],
        dtype=np.int64,
    )  # fmt: skip


def segment_points_union(
    segmenter: Segmenter, crop: np.ndarray, points: np.ndarray, labels: np.ndarray | None = None,
    *, chunk: int = 16,
) -> tuple[np.ndarray, float]:
    """One prompt per click (single-mask output), the masks OR-merged; and the best score.

    What Ultralytics' `SAM.predict(points=[[x, y], ...], labels=[1, ...])` does with a flat
    point list (an (N, 2) array becomes N prompts of one point each, `multimask_output`
    False), and what the reference then does with the N masks (max over them, > 0).
    """
    height, width = crop.shape[:2]
    mask = np.zeros((height, width), bool)
    if len(points) == 0:
        return mask, float("nan")
    points = np.asarray(points, np.float64).reshape(-1, 1, 2)
    labels = np.ones((len(points), 1), np.int64) if labels is None else (
        np.asarray(labels, np.int64).reshape(-1, 1))
    embedding = segmenter.embed(crop)
    found = segmenter.predict(embedding, points=points, point_labels=labels, multimask=False,
                              full_resolution=False)  # fmt: skip
    low = found.low_res_logits[:, 0]
    for start in range(0, len(low), chunk):
        logits = segmenter.upsample(embedding, low[start:start + chunk])
        mask |= (np.asarray(logits)[:, :height, :width] > 0).any(axis=0)
    return mask, float(np.max(found.iou_scores[:, 0]))


# ---------------------------------------------------------------------- fusion and the routes


def fuse_routes(spatial: np.ndarray | None, semantic: np.ndarray | None) -> np.ndarray | None:
    """Intersection when both routes found something; otherwise the one that did."""
    a = spatial if spatial is not None and spatial.any() else None
    b = semantic if semantic is not None and semantic.any() else None
    if a is not None and b is not None:
        return a & b
    return a if a is not None else b


#: SAM 3's detection-score threshold in the reference's route B (`conf=0.25`).
CONCEPT_THRESHOLD = 0.25
#: The box-IoU threshold of the NMS Ultralytics' SAM 3 predictor runs on route B's instances
#: (its default `iou=0.7`).
CONCEPT_NMS_IOU = 0.7
#: Route B's mask threshold: Ultralytics' SAM 3 predictor resizes each instance's mask logits
#: to the crop and keeps pixels `> 0.5` (on the logits, not on their sigmoid).
CONCEPT_MASK_LOGIT = 0.5
#: The grey Ultralytics' LetterBox pads with. Its SAM 3 interactive predictor (route A) sees
#: each crop padded at the bottom/right to a square with it before the square resize.
LETTERBOX_FILL = 114


def letterbox(crop: np.ndarray, fill: int = LETTERBOX_FILL) -> np.ndarray:
    """The crop padded at the bottom/right to a square of `fill` grey: the geometry of
    Ultralytics' `LetterBox(auto=False, center=False)` before its resize. Pixel coordinates
    (the clicks) are unchanged; masks are cut back to the crop."""
    height, width = crop.shape[:2]
    side = max(height, width)
    return np.pad(crop, ((0, side - height), (0, side - width), (0, 0)), constant_values=fill)

NO_POINT_MODEL = "no SAM 3 point model was given"


@dataclass
class CropResult:
    """What the routes made of one crop, and which models made it.

    `route_a_model` is "sam3" (SAM 3's interactive model, as published) or "sam" (the
    segmenter, with `route_a_note` saying why); `route_a_points` is how the clicks were
    found: "clip-surgery", "dense-tokens" (an image-text model without CLIP Surgery),
    "fallback" (no CLIP model: the reference's 3 x 3 grid at the centre) or "none" (a flat
    map: no clicks, so no route-A mask, as in the reference). `route_b_model` is "sam3",
    "dense-clip" (not the published route) or "none".
    """

    mask: np.ndarray  # (h, w) bool, the fused mask
    points: np.ndarray  # route A's clicks in crop pixels
    point_labels: np.ndarray
    spatial_pixels: int
    semantic_pixels: int
    score: float = float("nan")  # route A's best predicted IoU (0 when it had no clicks)
    route_a_model: str = "sam"
    route_a_note: str | None = None
    route_a_points: str = "clip-surgery"
    route_b_model: str = "none"
    route_b_note: str | None = None

    def record(self) -> dict:
        """The crop's routes for an answer's JSON (no arrays but the clicks)."""
        return {
            "route_a": {
                "model": self.route_a_model,
                "note": self.route_a_note,
                "points": self.route_a_points,
                "clicks": np.asarray(self.points).astype(float).round(2).tolist(),
                "pixels": self.spatial_pixels,
            },
            "route_b": {
                "model": self.route_b_model,
                "note": self.route_b_note,
                "pixels": self.semantic_pixels,
            },
            "fused_pixels": int(self.mask.sum()),
        }


@dataclass
class DualRoute:
    """Route A (CLIP-Surgery clicks → SAM 3 points, else SAM) and route B (SAM 3 text, else
    dense CLIP) on a crop, fused.

    `point_segmenter` is SAM 3's interactive model as a `Segmenter` (`models.sam3_points`);
    without it route A uses `segmenter`, and `point_segmenter_note` (why there is none, e.g.
    the installed transformers lacks it) is what the result records.
    """

    segmenter: Segmenter
    image_text: ImageText | None = None
    concept: ConceptSegmenter | None = None
    point_segmenter: Segmenter | None = None
    point_segmenter_note: str | None = None
    selection: PointSelection = field(default_factory=PointSelection)
    concept_threshold: float = CONCEPT_THRESHOLD
    concept_nms_iou: float = CONCEPT_NMS_IOU
    concept_mask_logit: float = CONCEPT_MASK_LOGIT
    sam3_letterbox: bool = True

    def segment_crop(self, crop: np.ndarray, entity: str) -> CropResult:
        size = crop.shape[:2]
        if self.image_text is not None:
            similarity = surgery_similarity(self.image_text, crop, entity)
            points, labels = surgery_points(similarity.scores, size, self.selection)
            how = similarity.method if len(points) else "none"
        else:
            points = fallback_points(size)
            labels = np.ones(len(points), np.int64)
            how = "fallback"
        if self.point_segmenter is not None:
            model, note, segmenter = "sam3", None, self.point_segmenter
            view = letterbox(crop) if self.sam3_letterbox else crop
        else:
            model, segmenter, view = "sam", self.segmenter, crop
            note = self.point_segmenter_note or NO_POINT_MODEL
        spatial, score = segment_points_union(segmenter, view, points, labels)
        spatial = spatial[: size[0], : size[1]]
        if not np.isfinite(score):  # no clicks, so no route-A mask: no predicted IoU either
            score = 0.0
        semantic, route_b, route_b_note = self._semantic(crop, entity)
        fused = fuse_routes(spatial, semantic)
        return CropResult(
            mask=np.zeros(size, bool) if fused is None else fused,
            points=points,
            point_labels=labels,
            spatial_pixels=int(spatial.sum()),
            semantic_pixels=0 if semantic is None else int(semantic.sum()),
            score=score,
            route_a_model=model,
            route_a_note=note,
            route_a_points=how,
            route_b_model=route_b,
            route_b_note=route_b_note,
        )

    def _semantic(self, crop: np.ndarray, entity: str) -> tuple[np.ndarray | None, str, str | None]:
        if self.concept is not None:
            [result], note = concept_results(self.concept, crop, [entity], self.concept_threshold)
            keep = np.flatnonzero(result.instance_scores > self.concept_threshold)
            if result.instance_boxes is not None and len(keep):
                boxes, scores = result.instance_boxes[keep], result.instance_scores[keep]
                keep = keep[nms_keep(boxes, scores, self.concept_nms_iou)]
            elif len(keep) > 1:
                note = _join_notes(note, "the concept segmenter gave no boxes, so route B's "
                                         f"NMS ({self.concept_nms_iou:g}) was not applied")
            if not len(keep):
                return np.zeros(crop.shape[:2], bool), "sam3", note
            masks = result.instance_logits[keep] > self.concept_mask_logit
            return masks.any(axis=0), "sam3", note
        if self.image_text is not None:
            from terramask.methods.dense_clip import DenseClip
            from terramask.methods.vocabulary import ClassVocabulary

            vocabulary = ClassVocabulary(((entity,), ("background",)))
            probabilities = DenseClip(self.image_text).probabilities(crop, vocabulary)
            return probabilities.argmax(axis=0) == 0, "dense-clip", (
                "no SAM 3 was given: a dense-CLIP mask of the entity stands in for route B "
                "(not the published route)"
            )
        return None, "none", "no SAM 3 and no CLIP model: route B was not run"


def _join_notes(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def concept_results(
    concept: ConceptSegmenter, image: np.ndarray, phrases: list[str], threshold: float
) -> tuple[list, str | None]:
    """`segment_concepts` with `threshold` as the only score threshold where the segmenter
    takes one per call (TerraMask's SAM 3 does); otherwise with its own, and a note when that
    is stricter than `threshold`."""
    try:
        parameters = inspect.signature(concept.segment_concepts).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "score_threshold" in parameters:
        return concept.segment_concepts(image, phrases, score_threshold=threshold), None
    own = getattr(concept, "score_threshold", None)
    note = None
    if own is not None and float(own) > threshold:
        note = (f"the concept segmenter keeps only instances above its own threshold {own:g}, "
                f"stricter than the published {threshold:g}")  # fmt: skip
    return concept.segment_concepts(image, phrases), note


# ---------------------------------------------------------------------- the published setting

#: The CLIP the reference loads ("CS-ViT-B/16": OpenAI's ViT-B/16 weights).
PUBLISHED_CLIP = "openai/clip-vit-base-patch16"
PUBLISHED_MLLM = "Qwen3-VL-32B-Instruct"


def geoseg_configuration(
    route: DualRoute | None,
    refinement: BoxRefinement,
    boxes: BoxesMode = "one",
    *,
    mllm: str | None = None,
) -> tuple[bool, list[str]]:
    """Whether a GeoSeg run is the published configuration, and how it differs if not.

    Published: SAM 3 for both routes (its interactive model for route A's clicks, its text
    prompt for route B at 0.25), OpenAI CLIP ViT-B/16 with CLIP Surgery, the reference's
    refinement (`GEOSEG_REFINEMENT`), one box, and the reference's point selection. `mllm`,
    when given, is also checked against Qwen3-VL-32B-Instruct. Each difference is a sentence
    an evaluation can print under "not the published configuration".
    """
    differences: list[str] = []
    if route is None:
        differences.append("no dual route: the box alone was segmented")
    else:
        if route.point_segmenter is None:
            why = route.point_segmenter_note or NO_POINT_MODEL
            differences.append(f"route A sent its clicks to SAM, not SAM 3 ({why})")
        if route.concept is None:
            differences.append(
                "route B used a dense-CLIP mask, not SAM 3's text prompt (no SAM 3 was given)"
                if route.image_text is not None else "route B was not run (no SAM 3)"
            )
        elif route.concept_threshold != CONCEPT_THRESHOLD:
            differences.append(f"route B kept SAM 3 instances above {route.concept_threshold:g}, "
                               f"not {CONCEPT_THRESHOLD:g}")  # fmt: skip
        if route.concept is not None and route.concept_nms_iou != CONCEPT_NMS_IOU:
            differences.append(f"route B's box NMS used IoU {route.concept_nms_iou:g}, not "
                               f"{CONCEPT_NMS_IOU:g}")  # fmt: skip
        if route.concept is not None and route.concept_mask_logit != CONCEPT_MASK_LOGIT:
            differences.append(f"route B's masks were cut at logit {route.concept_mask_logit:g}, "
                               f"not {CONCEPT_MASK_LOGIT:g}")  # fmt: skip
        if route.point_segmenter is not None and not route.sam3_letterbox:
            differences.append("route A's crops went to SAM 3 without Ultralytics' letterbox")
        clip = _clip_difference(route.image_text)
        if clip:
            differences.append(clip)
        if route.selection != PointSelection():
            differences.append(f"route A's clicks used {route.selection}, not the reference's "
                               f"{PointSelection()}")  # fmt: skip
    if refinement != GEOSEG_REFINEMENT:
        differences.append(f"the box refinement was {_describe_refinement(refinement)}, not "
                           "GeoSeg's (refine geoseg)")  # fmt: skip
    if boxes != "one":
        differences.append("every box of the reply was segmented and unioned (boxes all); the "
                           "reference segments the first")  # fmt: skip
    if mllm is not None and PUBLISHED_MLLM.lower() not in str(mllm).lower():
        differences.append(f"the MLLM was {mllm}, not {PUBLISHED_MLLM}")
    return not differences, differences


def _clip_difference(image_text: ImageText | None) -> str | None:
    if image_text is None:
        return "route A had no CLIP model: its clicks were the reference's 3 x 3 fallback grid"
    if not getattr(image_text, "supports_surgery", False):
        return (f"route A's map came from {getattr(image_text, 'name', 'the image-text model')}'s"
                " dense tokens, not CLIP Surgery (which needs a CLIP ViT)")  # fmt: skip
    names = [str(getattr(image_text, "name", ""))]
    resolved = getattr(image_text, "resolved", None)
    spec = getattr(resolved, "spec", None)
    if spec is not None:
        names.append(str(spec.hub_id))
    if not any(n.rstrip("/").endswith("clip-vit-base-patch16") for n in names):
        return f"CLIP was {names[0]}, not OpenAI's ViT-B/16 ({PUBLISHED_CLIP})"
    return None


def _describe_refinement(refinement: BoxRefinement) -> str:
    if refinement == BoxRefinement.none():
        return "none"
    values = asdict(refinement)
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in values.items())  # fmt: skip
