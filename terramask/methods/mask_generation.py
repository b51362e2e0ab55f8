"""Automatic mask generation: SAM prompted by a point grid, filtered and de-duplicated.

Every grid point gives three candidate masks; candidates are kept when the predicted IoU and
the stability score (how little the mask changes when the logit threshold moves by ±offset)
are high enough, and duplicates are removed. All points are decoded in batches against one
embedding. Two modes (`GenerationSettings.amg`):

- **reference**: what segment-anything's `SamAutomaticMaskGenerator` does (with one crop
  layer, no point grids of its own): predicted IoU > `pred_iou_thresh`; stability on the
  logits upsampled to the image size, kept when >= `stability_thresh`; masks are the
  upsampled logits > 0; duplicates removed by greedy NMS on the masks' bounding boxes (SAM's
  inclusive x0, y0, x1, y1 boxes, torchvision's box IoU, scores = predicted IoU) at
  `nms_iou`; with `min_region_area` > 0 SAM's `postprocess_small_regions` (holes, then
  islands, 8-connected, then box NMS again preferring unchanged masks). Output order is
  SAM's: predicted IoU, best first. The SAM+CLIP paper's setting is this mode with a 29 grid,
  `min_region_area` 0 and no pruning (`options.REFERENCE_GENERATION`).
- **fast** (TerraMask's variant): stability is scored on the decoder's low-res logits and only
  the surviving candidates are upsampled (most candidates die in the filters, and upsampling
  all of them dominated the time on CPU); duplicates are removed by mask-IoU NMS; islands and
  holes smaller than `min_region_area` are cleaned up (4-connected, holes touching the box
  edge kept).

Which mask is painted over which is decided by the voting (`methods.voting`), which paints by
area, largest first, whatever order the masks come in: the order of this list only breaks
ties between masks of equal area.

Given the dense labels that will vote on the masks, the grid is decoded coarse to fine
(`prune`, either mode): the decoder costs ~0.1 s a point on CPU, far more than anything else
per tile, and most points of a fine grid land inside an object a coarser point already found.
A point is skipped when an accepted mask covers it and that mask's majority dense class is
the point's own dense class: the mask votes that class there anyway, so the label map barely
changes. Points whose dense class differs from every covering mask (a car on a road) are
decoded, so nested objects of another class are still found. SAM's generator decodes every
point; pruning is not part of the reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from terramask.options import REFERENCE_GENERATION, GenerationSettings
from terramask.protocols import ImageEmbedding, Segmenter


def generation_description(settings: Any) -> dict[str, Any]:
    """The settings that change which masks come out, by name, with the mode spelled out."""
    names = ("grid", "pred_iou_thresh", "stability_thresh", "stability_offset", "nms_iou",
             "min_region_area", "prune", "coarse_strides")  # fmt: skip
    described: dict[str, Any] = {"amg": settings.amg}
    for name in names:
        value = getattr(settings, name, None)
        described[name] = list(value) if isinstance(value, tuple) else value
    return described


def reference_differences(settings: Any) -> list[str]:
    """How `settings` (or their `generation_description`) differ from `REFERENCE_GENERATION`,
    one phrase each (empty: the same)."""
    described = settings if isinstance(settings, dict) else generation_description(settings)
    reference = generation_description(REFERENCE_GENERATION)
    return [
        f"{name} {described[name]!r} (reference {value!r})"
        for name, value in reference.items()
        if name in _REFERENCE_FIELDS and described[name] != value
    ]


#: The settings that decide whether a run is SAM's generator (others only batch the work).
_REFERENCE_FIELDS = ("amg", "grid", "pred_iou_thresh", "stability_thresh", "stability_offset",
                     "nms_iou", "min_region_area", "prune")  # fmt: skip


@dataclass(frozen=True)
class MaskProposal:
    """A kept mask, stored as a crop: `mask` covers rows r0:r0+h, cols c0:c0+w of the image."""

    mask: np.ndarray  # (h, w) bool
    offset: tuple[int, int]  # (r0, c0)
    predicted_iou: float
    stability: float

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(r0, c0, r1, c1), end-exclusive."""
        r0, c0 = self.offset
        return r0, c0, r0 + self.mask.shape[0], c0 + self.mask.shape[1]

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask in the whole image frame."""
        out = np.zeros(shape, dtype=bool)
        r0, c0, r1, c1 = self.bbox
        out[r0:r1, c0:c1] = self.mask
        return out


def point_grid(n: int, height: int, width: int) -> np.ndarray:
    """(n*n, 2) x, y pixel coordinates of the centres of an n x n grid of cells."""
    xs = (np.arange(n) + 0.5) / n * width
    ys = (np.arange(n) + 0.5) / n * height
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def stability_scores(logits: np.ndarray, offset: float) -> np.ndarray:
    """IoU of the masks at thresholds +offset and -offset, per mask (last two axes)."""
    high = (logits > offset).sum(axis=(-2, -1), dtype=np.int64)
    low = (logits > -offset).sum(axis=(-2, -1), dtype=np.int64)
    return np.where(low > 0, high / np.maximum(low, 1), 0.0)


def generate_masks(
    segmenter: Segmenter,
    image: np.ndarray,
    settings: GenerationSettings = GenerationSettings(),
    *,
    valid: np.ndarray | None = None,
    dense: np.ndarray | None = None,
) -> list[MaskProposal]:
    """Masks of everything SAM finds in `image`, best first, at most mildly overlapping.

    `settings.amg` picks SAM's own generator ("reference") or TerraMask's faster variant
    ("fast", the default of settings without the field); see the module doc. With `dense`
    (the (H, W) labels the masks will vote on) and `settings.prune`, the grid is decoded in
    passes of decreasing stride and points settled by earlier masks are skipped; without it
    every grid point is decoded.
    """
    mode = settings.amg
    height, width = image.shape[:2]
    embedding = segmenter.embed(image)
    points = point_grid(settings.grid, height, width)
    pruning = settings.prune and dense is not None
    passes = grid_passes(settings.grid, settings.coarse_strides if pruning else ())
    if valid is not None:  # no prompt where there is no data
        inside = valid[points[:, 1].astype(int), points[:, 0].astype(int)]
        points, passes = points[inside], passes[inside]
    keep = one_point_per_pixel(points, passes, width)
    points, passes = points[keep], passes[keep]
    settled = np.zeros(len(points), dtype=bool)
    candidates: list[MaskProposal] = []
    decode = _decode_reference if mode == "reference" else _decode
    for level in range(passes.max(initial=-1) + 1):
        found = decode(segmenter, embedding, points[(passes == level) & ~settled], settings, valid)
        candidates += found
        if pruning:
            settled |= settled_points(points, found, dense)
    if mode == "reference":
        kept = box_nms(candidates, settings.nms_iou)
        if settings.min_region_area > 0:
            kept = sam_small_region_postprocess(
                kept, settings.min_region_area, settings.nms_iou, (height, width)
            )
        return kept
    kept = mask_nms(candidates, settings.nms_iou)
    cleaned = [_clean(p, settings.min_region_area) for p in kept]
    return [p for p in cleaned if p is not None]


def one_point_per_pixel(points: np.ndarray, passes: np.ndarray, width: int) -> np.ndarray:
    """Indexes (in order) of the grid points to decode: of points in one pixel, the earliest pass.

    On an image at least `grid` pixels on each side every grid point has a pixel of its own
    and all are kept; on a strip a few pixels thin the n × n grid piles n points into each
    pixel, which SAM would decode n times to the same masks.
    """
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    pixels = points[:, 1].astype(np.int64) * width + points[:, 0].astype(np.int64)
    order = np.lexsort((passes, pixels))  # by pixel, then by pass
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixels[order][1:] != pixels[order][:-1]
    return np.sort(order[first])


def grid_passes(n: int, strides: tuple[int, ...]) -> np.ndarray:
    """(n*n,) the pass that decodes each point of `point_grid(n)`: 0 for the points on the
    first stride's subgrid, 1 for those new on the second, ..., len(strides) for the rest."""
    rows, cols = np.divmod(np.arange(n * n), n)
    passes = np.full(n * n, len(strides))
    for level, stride in reversed(list(enumerate(strides))):
        passes[(rows % stride == 0) & (cols % stride == 0)] = level
    return passes


def settled_points(
    points: np.ndarray, proposals: list[MaskProposal], dense: np.ndarray
) -> np.ndarray:
    """(P,) bool: the points some proposal covers whose majority dense class is the point's.

    Proposals are the filtered candidates before NMS and clean-up, so this is a close guess
    of the vote, not the vote itself.
    """
    cols, rows = points[:, 0].astype(int), points[:, 1].astype(int)
    at_point = dense[rows, cols]
    settled = np.zeros(len(points), dtype=bool)
    for proposal in proposals:
        r0, c0, r1, c1 = proposal.bbox
        near = np.flatnonzero(~settled & (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1))
        near = near[proposal.mask[rows[near] - r0, cols[near] - c0]]
        if len(near) == 0:
            continue
        label = majority_class(dense[r0:r1, c0:c1][proposal.mask])
        settled[near[at_point[near] == label]] = True
    return settled


def majority_class(labels: np.ndarray) -> int:
    """The most frequent label (ties to the lower one); NO_CLASS counts like any label."""
    if labels.size == 0:
        raise ValueError("majority_class of no labels")
    low = int(labels.min())
    return int(np.argmax(np.bincount((labels - low).ravel())) + low)


def _decode(
    segmenter: Segmenter,
    embedding: ImageEmbedding,
    points: np.ndarray,
    settings: GenerationSettings,
    valid: np.ndarray | None,
) -> list[MaskProposal]:
    """The candidates of `points` (P, 2) that pass the predicted-IoU and stability filters."""
    candidates: list[MaskProposal] = []
    for low, ious in _decoded_batches(segmenter, embedding, points, settings):
        # Filter on the decoder's low-res logits; upsample only what survives.
        keep = ious > settings.pred_iou_thresh
        stability = stability_scores(low[keep], settings.stability_offset)
        stable = stability > settings.stability_thresh
        if not stable.any():
            continue
        logits = segmenter.upsample(embedding, low[keep][stable])
        candidates += _proposals(logits, ious[keep][stable], stability[stable], valid)
    return candidates


def _decoded_batches(
    segmenter: Segmenter,
    embedding: ImageEmbedding,
    points: np.ndarray,
    settings: GenerationSettings,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each batch of single-click prompts decoded with three candidates each: the low-res
    logits (B*3, h, w) and predicted IoUs (B*3,), in that order."""
    for start in range(0, len(points), settings.points_per_batch):
        batch = points[start : start + settings.points_per_batch]
        pred = segmenter.predict(
            embedding,
            points=batch[:, None, :],
            point_labels=np.ones((len(batch), 1), dtype=np.int64),
            multimask=True,
            full_resolution=False,
        )
        yield (pred.low_res_logits.reshape(-1, *pred.low_res_logits.shape[-2:]),
               pred.iou_scores.reshape(-1))  # fmt: skip


def _decode_reference(
    segmenter: Segmenter,
    embedding: ImageEmbedding,
    points: np.ndarray,
    settings: GenerationSettings,
    valid: np.ndarray | None,
) -> list[MaskProposal]:
    """The candidates of `points` as `SamAutomaticMaskGenerator._process_batch` keeps them.

    Predicted IoU > thresh (when thresh > 0), then the stability score on the logits at the
    image's size, kept when >= thresh (when thresh > 0), masks = those logits > 0. Candidates
    that fail the IoU filter are never upsampled: SAM drops them before it looks at their
    logits, so the result is the same as upsampling all of them.
    """
    candidates: list[MaskProposal] = []
    for low, ious in _decoded_batches(segmenter, embedding, points, settings):
        keep = (
            ious > settings.pred_iou_thresh
            if settings.pred_iou_thresh > 0
            else np.ones(len(ious), dtype=bool)
        )
        if not keep.any():
            continue
        logits = np.asarray(segmenter.upsample(embedding, low[keep]))
        stability = stability_scores(logits, settings.stability_offset)
        stable = (
            stability >= settings.stability_thresh
            if settings.stability_thresh > 0
            else np.ones(len(stability), dtype=bool)
        )
        candidates += _proposals(logits[stable], ious[keep][stable], stability[stable], valid)
    return candidates


def _proposals(
    logits: np.ndarray, ious: np.ndarray, stability: np.ndarray, valid: np.ndarray | None
) -> list[MaskProposal]:
    """The kept candidates as proposals: mask = logits > 0 (within `valid`), cropped; an
    empty mask is none."""
    proposals = []
    for logit, iou, stable_score in zip(logits, ious, stability, strict=True):
        mask = logit > 0
        if valid is not None:
            mask &= valid
        proposal = _crop(mask, float(iou), float(stable_score))
        if proposal is not None:
            proposals.append(proposal)
    return proposals


def sam_box(proposal: MaskProposal) -> tuple[int, int, int, int]:
    """The mask's box as SAM's `batched_mask_to_box` gives it: x0, y0, x1, y1 with x1, y1 the
    last column and row inside the mask (inclusive), so a one-pixel mask has a box of area 0."""
    r0, c0, r1, c1 = proposal.bbox
    return c0, r0, c1 - 1, r1 - 1


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) float32 IoU of one x0, y0, x1, y1 box with each of `boxes` (N, 4), computed as
    torchvision's `box_iou` does (areas (x1 - x0) * (y1 - y0), in float32); 0 where the union
    is empty (torchvision's 0/0 is NaN, which no threshold test passes either)."""
    box = box.astype(np.float32)
    boxes = boxes.astype(np.float32)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = (width * height).astype(np.float32)
    union = (area + areas - inter).astype(np.float32)
    out = np.zeros(len(boxes), dtype=np.float32)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def nms_keep(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS as torchvision's `nms`: highest score first (ties in input
    order), dropping every later x0, y0, x1, y1 box whose IoU (`box_iou`) with a kept one
    exceeds `iou_threshold`; kept indices come best first."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    values = np.asarray(scores, dtype=np.float32).reshape(-1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    kept: list[int] = []
    for index in np.argsort(-values, kind="stable"):
        if suppressed[index]:
            continue
        kept.append(int(index))
        suppressed |= box_iou(boxes[index], boxes) > iou_threshold
    return np.asarray(kept, dtype=np.int64)


def box_nms(
    proposals: Sequence[MaskProposal],
    iou_threshold: float,
    scores: Sequence[float] | None = None,
) -> list[MaskProposal]:
    """`nms_keep` on SAM boxes (`sam_box`), as SAM's `batched_nms` with one category. Scores
    default to the predicted IoU; kept masks come best first."""
    if not proposals:
        return []
    values = [p.predicted_iou for p in proposals] if scores is None else scores
    boxes = np.array([sam_box(p) for p in proposals], dtype=np.float32)
    return [proposals[i] for i in nms_keep(boxes, np.asarray(values), iou_threshold)]


def sam_remove_small_regions(mask: np.ndarray, area: int, mode: str) -> tuple[np.ndarray, bool]:
    """SAM's `remove_small_regions`: fill 8-connected holes ("holes") smaller than `area`, or
    drop 8-connected islands ("islands") smaller than it (keeping the largest when all are);
    returns the mask and whether it changed."""
    holes = mode == "holes"
    working = ~mask if holes else mask
    regions, count = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask, False
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    small = [i + 1 for i, size in enumerate(sizes) if size < area]
    if not small:
        return mask, False
    if holes:
        return mask | np.isin(regions, small), True
    keep = [i for i in range(1, count + 1) if i not in set(small)]
    if not keep:
        keep = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, keep), True


def sam_small_region_postprocess(
    proposals: Sequence[MaskProposal],
    min_area: int,
    nms_iou: float,
    shape: tuple[int, int],
) -> list[MaskProposal]:
    """SAM's `postprocess_small_regions` on the whole image frame: holes then islands smaller
    than `min_area`, then box NMS again with score 1 for unchanged masks and 0 for changed."""
    cleaned: list[MaskProposal] = []
    scores: list[float] = []
    for proposal in proposals:
        mask, filled = sam_remove_small_regions(proposal.full(shape), min_area, "holes")
        mask, dropped = sam_remove_small_regions(mask, min_area, "islands")
        again = _crop(mask, proposal.predicted_iou, proposal.stability)
        if again is not None:
            cleaned.append(again)
            scores.append(0.0 if filled or dropped else 1.0)
    return box_nms(cleaned, nms_iou, scores)


def mask_iou(a: MaskProposal, b: MaskProposal) -> float:
    """IoU of two cropped masks, computed on the overlap of their boxes only."""
    ar0, ac0, ar1, ac1 = a.bbox
    br0, bc0, br1, bc1 = b.bbox
    r0, c0, r1, c1 = max(ar0, br0), max(ac0, bc0), min(ar1, br1), min(ac1, bc1)
    if r0 >= r1 or c0 >= c1:
        return 0.0
    inter = np.logical_and(
        a.mask[r0 - ar0 : r1 - ar0, c0 - ac0 : c1 - ac0],
        b.mask[r0 - br0 : r1 - br0, c0 - bc0 : c1 - bc0],
    ).sum()
    union = a.area + b.area - inter
    return float(inter / union) if union else 0.0


def mask_nms(proposals: list[MaskProposal], iou_threshold: float) -> list[MaskProposal]:
    """Greedy non-maximum suppression by mask IoU, best predicted IoU first."""
    order = sorted(proposals, key=lambda p: (-p.predicted_iou, -p.stability))
    kept: list[MaskProposal] = []
    for candidate in order:
        if all(mask_iou(candidate, k) <= iou_threshold for k in kept):
            kept.append(candidate)
    return kept


def _crop(mask: np.ndarray, iou: float, stability: float) -> MaskProposal | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return MaskProposal(mask[r0:r1, c0:c1].copy(), (int(r0), int(c0)), iou, stability)


def _clean(proposal: MaskProposal, min_area: int) -> MaskProposal | None:
    """Drop islands smaller than `min_area` pixels and fill holes smaller than it."""
    if min_area <= 0:
        return proposal
    mask = proposal.mask
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        small = np.flatnonzero(sizes < min_area) + 1
        if len(small) < count:  # never remove every region
            mask = mask & ~np.isin(labels, small)
    holes, count = ndimage.label(~mask)
    if count:
        sizes = np.bincount(holes.ravel())[1:]
        border = np.unique(
            np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
        )
        fill = [i + 1 for i, s in enumerate(sizes) if s < min_area and i + 1 not in border]
        if fill:
            mask = mask | np.isin(holes, fill)
    r0, c0 = proposal.offset
    cropped = _crop(mask, proposal.predicted_iou, proposal.stability)
    if cropped is None:
        return None
    dr, dc = cropped.offset
    return MaskProposal(cropped.mask, (r0 + dr, c0 + dc), cropped.predicted_iou, cropped.stability)
