"""GeoSeg's training-free reasoning segmentation: MLLM box → refined crop → two routes → fusion.

Route A (spatial): a CLIP-Surgery similarity map of the entity on the crop gives positive and
negative clicks for SAM. Route B (semantic): SAM 3 prompted with the entity noun on the crop,
instances OR-merged — or, without SAM 3, a dense-CLIP mask of the entity. The routes are
intersected when both found something, otherwise whichever did is kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from terramask.methods.interactive import PointBoxPrompt, segment_prompts
from terramask.methods.templates import SIMPLE_TEMPLATES
from terramask.protocols import ConceptSegmenter, ImageText, Segmenter


@dataclass(frozen=True)
class BoxRefinement:
    """Per-side expansion (fractions of the box's width/height), a shift, a minimum size.

    GeoSeg's published correction for MLLM boxes on overhead imagery, which come out shifted
    and too tight: x1 -= 0.2w, y1 -= 0.2h, x2 += 0.1w, y2 += 0.1h; boxes under 16 px grow to
    16 x 16. `calibrate` fits the same parameters to labelled data.
    """

    left: float = 0.2
    top: float = 0.2
    right: float = 0.1
    bottom: float = 0.1
    shift_x: float = 0.0
    shift_y: float = 0.0
    min_size: float = 16.0

    @classmethod
    def none(cls) -> BoxRefinement:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> BoxRefinement:
        return cls(**json.loads(Path(path).read_text()))


GEOSEG_REFINEMENT = BoxRefinement()

#: Crops are enlarged to at least this short side before CLIP sees them (its training scale;
#: a crop smaller than one ViT patch could not be embedded at all).
CLIP_MIN_SIDE = 224
#: CLIP Surgery's view of a crop is at most this many pixels on its long side (larger crops
#: are shrunk to it: the self-self attention over all patches grows with its square) ...
SURGERY_MAX_SIDE = 1024
#: ... and a crop thinner than this ratio of long to short side is enlarged as if its short
#: side were its long side / SURGERY_MAX_ASPECT, then padded up to CLIP_MIN_SIDE: a 190 × 1
#: box is seen as 896 × 5 px in a 896 × 224 view, not scaled to 42 560 × 224.
SURGERY_MAX_ASPECT = 4


def refine_box(
    box: Sequence[float], image_size: tuple[int, int], refinement: BoxRefinement = GEOSEG_REFINEMENT
) -> np.ndarray:
    """Expand, shift and clamp an x1, y1, x2, y2 pixel box; grow it to the minimum size."""
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


def surgery_similarity(image_text: ImageText, crop: np.ndarray, entity: str) -> np.ndarray:
    """CLIP-Surgery similarity of each crop pixel to `entity`, min-max normalised to [0, 1].

    Patch tokens (self-self attention) against the entity's text feature minus the feature of
    an empty prompt: subtracting it removes what every text shares (the redundant features
    CLIP Surgery identifies), leaving what is specific to the entity.
    """
    view, shown = surgery_view(crop)
    patches, _ = image_text.dense_tokens([view])
    patches = patches[0] / np.linalg.norm(patches[0], axis=-1, keepdims=True).clip(1e-12)
    template = SIMPLE_TEMPLATES[0]  # "a photo of a {}."; the empty prompt is the bare template
    text, empty = image_text.encode_text([template.format(entity), template.format("")], None)
    similarity = patches @ (text - empty)
    grid = torch.from_numpy(similarity.astype(np.float32))[None, None]
    if view.shape[:2] != shown:  # padded: back to the view, cut to what shows the crop
        grid = F.interpolate(grid, size=view.shape[:2], mode="bilinear", align_corners=False)
        grid = grid[:, :, : shown[0], : shown[1]]
    upsampled = F.interpolate(grid, size=crop.shape[:2], mode="bilinear", align_corners=False)
    values = upsampled[0, 0].numpy()
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def surgery_view(crop: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """What CLIP Surgery is shown of a crop, and the (rows, cols) of it that show the crop.

    A crop with a short side under CLIP_MIN_SIDE is enlarged to it (CLIP's own scale), one
    longer than SURGERY_MAX_SIDE is shrunk to it; a crop thinner than SURGERY_MAX_ASPECT is
    scaled as if its short side were long / SURGERY_MAX_ASPECT (so the view is never larger
    than SURGERY_MAX_SIDE, or CLIP_MIN_SIDE · SURGERY_MAX_ASPECT, on its long side) and then
    mirrored at the bottom/right up to CLIP_MIN_SIDE; the similarity of that padding is cut
    off before it is used.
    """
    height, width = crop.shape[:2]
    short, long = min(height, width), max(height, width)
    reference = max(short, long / SURGERY_MAX_ASPECT)
    scale = CLIP_MIN_SIDE / reference if reference < CLIP_MIN_SIDE else 1.0
    scale = min(scale, SURGERY_MAX_SIDE / long)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    view = crop
    if size != (height, width):
        pixels = torch.from_numpy(np.array(crop, copy=True)).permute(2, 0, 1)[None].float()
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False,
                               antialias=scale < 1)  # fmt: skip
        view = pixels[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    extra = (max(0, CLIP_MIN_SIDE - size[0]), max(0, CLIP_MIN_SIDE - size[1]))
    if any(extra):
        view = np.pad(view, ((0, extra[0]), (0, extra[1]), (0, 0)), mode="symmetric")
    return view, size


@dataclass(frozen=True)
class PointSelection:
    """How clicks are read off a similarity map (GeoSeg route A)."""

    positive_threshold: float = 0.8
    positives: int = 3
    negatives: int = 3
    min_spacing: float = 8.0  # pixels between chosen clicks, so they don't pile up


def select_points(
    similarity: np.ndarray, selection: PointSelection = PointSelection()
) -> tuple[np.ndarray, np.ndarray]:
    """Positive clicks at the highest values above the threshold, negatives at the lowest.

    Without any value above the threshold, a small cluster around the centre is positive.
    Returns (N, 2) x, y pixel-centre coordinates and (N,) labels 1/0.
    """
    h, w = similarity.shape
    order = np.argsort(similarity, axis=None)
    above = [i for i in order[::-1] if similarity.flat[i] >= selection.positive_threshold]
    positives = _spread(above, w, selection.positives, selection.min_spacing)
    if not positives:
        cx, cy = w / 2, h / 2
        d = max(1.0, min(w, h) / 10)
        positives = [(cx, cy), (cx - d, cy), (cx + d, cy)][: max(1, selection.positives)]
    negatives = _spread(list(order), w, selection.negatives, selection.min_spacing)
    points = np.array([*positives, *negatives], dtype=np.float64)
    labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.int64)
    return points, labels


def _spread(
    indexes: list[int], width: int, count: int, spacing: float
) -> list[tuple[float, float]]:
    chosen: list[tuple[float, float]] = []
    for index in indexes:
        if len(chosen) >= count:
            break
        y, x = divmod(int(index), width)
        point = (x + 0.5, y + 0.5)
        if all((point[0] - a) ** 2 + (point[1] - b) ** 2 >= spacing**2 for a, b in chosen):
            chosen.append(point)
    return chosen


def fuse_routes(spatial: np.ndarray | None, semantic: np.ndarray | None) -> np.ndarray | None:
    """Intersection when both routes found something; otherwise the one that did."""
    a = spatial if spatial is not None and spatial.any() else None
    b = semantic if semantic is not None and semantic.any() else None
    if a is not None and b is not None:
        return a & b
    return a if a is not None else b


@dataclass
class CropResult:
    """What the routes made of one crop."""

    mask: np.ndarray  # (h, w) bool, the fused mask
    points: np.ndarray  # route A's clicks in crop pixels
    point_labels: np.ndarray
    spatial_pixels: int
    semantic_pixels: int
    score: float = float("nan")


@dataclass
class DualRoute:
    """Route A (CLIP-Surgery clicks → SAM) and route B (SAM 3, else dense CLIP) on a crop."""

    segmenter: Segmenter
    image_text: ImageText | None = None
    concept: ConceptSegmenter | None = None
    selection: PointSelection = field(default_factory=PointSelection)
    concept_threshold: float = 0.5

    def segment_crop(self, crop: np.ndarray, entity: str) -> CropResult:
        spatial = semantic = None
        points = np.zeros((0, 2))
        labels = np.zeros(0, dtype=np.int64)
        score = float("nan")
        if self.image_text is not None:
            similarity = surgery_similarity(self.image_text, crop, entity)
            points, labels = select_points(similarity, self.selection)
        else:  # no CLIP: a click at the centre of the refined box
            points = np.array([[crop.shape[1] / 2, crop.shape[0] / 2]])
            labels = np.ones(1, dtype=np.int64)
        [found] = segment_prompts(
            self.segmenter, crop, [PointBoxPrompt(points=points, labels=labels)]
        )
        spatial, score = found.mask, found.score
        semantic = self._semantic(crop, entity)
        fused = fuse_routes(spatial, semantic)
        return CropResult(
            mask=np.zeros(crop.shape[:2], bool) if fused is None else fused,
            points=points,
            point_labels=labels,
            spatial_pixels=int(spatial.sum()),
            semantic_pixels=0 if semantic is None else int(semantic.sum()),
            score=score,
        )

    def _semantic(self, crop: np.ndarray, entity: str) -> np.ndarray | None:
        if self.concept is not None:
            [result] = self.concept.segment_concepts(crop, [entity])
            keep = result.instance_scores > self.concept_threshold
            if not keep.any():
                return np.zeros(crop.shape[:2], bool)
            return (result.instance_logits[keep] > 0).any(axis=0)
        if self.image_text is not None:
            from terramask.methods.dense_clip import DenseClip
            from terramask.methods.vocabulary import ClassVocabulary

            vocabulary = ClassVocabulary(((entity,), ("background",)))
            probabilities = DenseClip(self.image_text).probabilities(crop, vocabulary)
            return probabilities.argmax(axis=0) == 0
        return None
