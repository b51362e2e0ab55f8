"""The reference AMG mode against segment-anything's `SamAutomaticMaskGenerator`, recomputed
independently here: box NMS on SAM's inclusive mask boxes, stability on the upscaled logits
(kept at >= the threshold), SAM's small-region post-processing, SAM's output order; and the
fast mode kept as it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramask.errors import InputError
from terramask.methods.mask_generation import (
    MaskProposal,
    box_nms,
    generate_masks,
    generation_description,
    mask_nms,
    reference_differences,
    sam_box,
)
from terramask.options import REFERENCE_GENERATION, GenerationSettings
from terramask.protocols import ImageEmbedding, MaskPrediction


def reference(**changes) -> GenerationSettings:
    return dataclasses.replace(REFERENCE_GENERATION, **changes)


class ListedSegmenter:
    """Every point decodes to the same listed candidates: (H, W) low-res logits with their
    predicted IoUs (three a point); `upsample` maps low-res logits to the image's size."""

    name = "listed-double"

    def __init__(self, logits, ious, upsample=None):
        self.logits = np.asarray(logits, dtype=np.float32)  # (3, h, w)
        self.ious = np.asarray(ious, dtype=np.float32)  # (3,)
        self._upsample = upsample or (lambda low: low)
        self.points: list[np.ndarray] = []

    def embed(self, image):
        return ImageEmbedding(image_size=image.shape[:2], data=None)

    def upsample(self, embedding, low_res_logits):
        return self._upsample(np.asarray(low_res_logits, dtype=np.float32))

    def predict(self, embedding, *, points=None, point_labels=None, boxes=None,
                multimask=True, full_resolution=True):  # fmt: skip
        self.points.append(points[:, 0])
        batch = len(points)
        low = np.broadcast_to(self.logits, (batch, *self.logits.shape)).copy()
        full = self.upsample(embedding, low.reshape(-1, *low.shape[-2:])) if full_resolution \
            else None  # fmt: skip
        return MaskPrediction(
            masks=None if full is None else full.reshape(batch, 3, *full.shape[-2:]) > 0,
            logits=None if full is None else full.reshape(batch, 3, *full.shape[-2:]),
            iou_scores=np.tile(self.ious, (batch, 1)),
            low_res_logits=low,
        )


def logits_of(*masks, shape=(20, 20)):
    out = np.full((len(masks), *shape), -10.0, dtype=np.float32)
    for index, mask in enumerate(masks):
        out[index][mask] = 10.0
    return out


def block(r0, r1, c0, c1, shape=(20, 20)):
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    return mask


IMAGE = np.zeros((20, 20, 3), np.uint8)


# ------------------------------------------------------------ SAM's box NMS, recomputed


def sam_boxes_reference(masks: np.ndarray) -> np.ndarray:
    """segment-anything's `batched_mask_to_box`, by a different route: x0, y0, x1, y1 with the
    last row/column inside the mask (inclusive); [0, 0, 0, 0] for an empty mask."""
    boxes = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        boxes.append([0, 0, 0, 0] if len(rows) == 0 else
                     [cols.min(), rows.min(), cols.max(), rows.max()])  # fmt: skip
    return np.array(boxes, dtype=np.float64)


def torchvision_nms_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list:
    """torchvision's `nms` as its CPU kernel loops: order by score (stable), keep, suppress
    every later box whose IoU (areas (x1-x0)*(y1-y0)) exceeds the threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    suppressed, keep = set(), []
    for position, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[position + 1 :]:
            w = max(0.0, min(boxes[i][2], boxes[j][2]) - max(boxes[i][0], boxes[j][0]))
            h = max(0.0, min(boxes[i][3], boxes[j][3]) - max(boxes[i][1], boxes[j][1]))
            union = area(boxes[i]) + area(boxes[j]) - w * h
            if union > 0 and w * h / union > threshold:
                suppressed.add(j)
    return keep


def proposals_of(masks, scores):
    out = []
    for mask, score in zip(masks, scores, strict=True):
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        out.append(MaskProposal(mask[r0:r1, c0:c1], (int(r0), int(c0)), float(score), 1.0))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_box_nms_is_torchvisions_on_sams_boxes(seed):
    rng = np.random.default_rng(seed)
    corners, sizes = rng.integers(0, 30, size=(6, 2)), rng.integers(4, 12, size=(6, 2))
    masks = []
    for _ in range(40):  # near-duplicates of six objects, as a point grid finds them
        obj = rng.integers(0, 6)
        r0, c0 = corners[obj] + rng.integers(0, 2, size=2)
        h, w = sizes[obj] + rng.integers(-1, 2, size=2)
        masks.append(block(r0, r0 + h, c0, c0 + w, shape=(45, 45)))
        if rng.random() < 0.3:  # an L-shape: a sparse mask in a wide box
            masks[-1] = masks[-1] & ~block(r0 + 1, 45, c0 + 1, 45, shape=(45, 45))
    scores = np.round(rng.uniform(0.85, 1.0, size=len(masks)), 2)  # ties on purpose
    proposals = proposals_of(masks, scores)
    expected = torchvision_nms_reference(sam_boxes_reference(np.array(masks)), scores, 0.7)
    kept = box_nms(proposals, 0.7)
    assert 6 <= len(kept) < 30  # many suppressed, not all
    positions = {id(p): i for i, p in enumerate(proposals)}
    assert [positions[id(k)] for k in kept] == expected
    boxes = sam_boxes_reference(np.array(masks)).astype(int)
    assert [sam_box(p) for p in proposals] == [tuple(b) for b in boxes]


def test_boxes_are_inclusive_as_sams_so_near_duplicates_can_survive():
    """A 4x4 and a 4x3 block: mask IoU 0.75 (fast mode drops one at 0.7); SAM's boxes are
    inclusive, (3*3) vs (3*2) area, box IoU 0.67, so the reference keeps both."""
    a, b = block(2, 6, 2, 6), block(2, 6, 2, 5)
    seg = ListedSegmenter(logits_of(a, b, np.zeros((20, 20), bool)), [0.95, 0.9, 0.1])
    fast = generate_masks(seg, IMAGE, GenerationSettings(grid=1, min_region_area=0))
    ref = generate_masks(seg, IMAGE, reference(grid=1))
    assert len(fast) == 1
    assert [p.predicted_iou for p in ref] == pytest.approx([0.95, 0.9])


def test_box_nms_drops_masks_that_share_a_box_whatever_their_overlap():
    """An L and the block it leaves: disjoint masks (mask IoU 0, both kept by the fast mode)
    with one box (box IoU 1): SAM keeps only the better scored."""
    square = block(4, 14, 4, 14)
    ell = square & ~block(4, 13, 5, 14)
    rest = square & ~ell
    seg = ListedSegmenter(logits_of(rest, ell, np.zeros((20, 20), bool)), [0.9, 0.95, 0.1])
    fast = generate_masks(seg, IMAGE, GenerationSettings(grid=1, min_region_area=0))
    ref = generate_masks(seg, IMAGE, reference(grid=1))
    assert len(fast) == 2
    assert len(ref) == 1 and ref[0].predicted_iou == pytest.approx(0.95)
    np.testing.assert_array_equal(ref[0].full((20, 20)), ell)


# ------------------------------------------------------------ stability on upscaled logits


def bilinear_x4(low: np.ndarray) -> np.ndarray:
    """The double's upsampling: bilinear x4 (align_corners False), as SAM's postprocess."""
    up = F.interpolate(torch.from_numpy(low)[None], scale_factor=4, mode="bilinear",
                       align_corners=False)  # fmt: skip
    return up[0].numpy()


def sam_stability(logits: np.ndarray, offset: float = 1.0) -> np.ndarray:
    """segment-anything's `calculate_stability_score` on (N, H, W) logits, in torch."""
    masks = torch.from_numpy(logits)
    high = (masks > offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    low = (masks > -offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return (high / low).numpy()


def test_stability_is_scored_on_the_upscaled_logits():
    """Low-res logits of +-3 are perfectly stable at low resolution (fast mode keeps the
    mask), but their bilinear upscaling ramps through (-1, 1) along every edge: on the
    full-resolution logits, as SAM scores it, the mask is not stable enough."""
    low = np.full((3, 5, 5), -3.0, dtype=np.float32)
    low[0, 1:4, 1:4] = 3.0  # a 3x3 block: at x4, its edges ramp over ~2 px of 12
    low[1, 1:3, 1:3] = 3.0
    seg = ListedSegmenter(low, [0.95, 0.5, 0.1], upsample=bilinear_x4)
    expected = sam_stability(bilinear_x4(low[:1]))[0]
    assert expected < 0.95  # computed independently: what the reference must see
    assert sam_stability(low[:1])[0] == 1.0
    image = np.zeros((20, 20, 3), np.uint8)
    fast = generate_masks(seg, image, GenerationSettings(grid=1, min_region_area=0))
    assert len(fast) == 1 and fast[0].stability == 1.0
    assert generate_masks(seg, image, reference(grid=1)) == []
    kept = generate_masks(seg, image, reference(grid=1, stability_thresh=0.5))
    assert kept[0].stability == pytest.approx(expected)
    upscaled = bilinear_x4(low[:1])[0] > 0
    np.testing.assert_array_equal(kept[0].full((20, 20)), upscaled)


def test_stability_at_the_threshold_is_kept_as_sam_keeps_it():
    """19 pixels above +1 and 20 above -1: 0.95 exactly, which SAM keeps (>=); the fast mode
    keeps only scores above it."""
    logits = np.full((3, 20, 20), -10.0, dtype=np.float32)
    logits[0, 0, :19] = 10.0
    logits[0, 0, 19] = 0.0
    seg = ListedSegmenter(logits, [0.95, 0.1, 0.1])
    assert sam_stability(logits[:1])[0] == pytest.approx(0.95)
    assert len(generate_masks(seg, IMAGE, reference(grid=1))) == 1
    assert generate_masks(seg, IMAGE, GenerationSettings(grid=1, min_region_area=0)) == []


def test_zero_thresholds_filter_nothing_as_in_sam():
    masks = [block(0, 5, 0, 5), block(10, 20, 10, 20), block(0, 3, 15, 20)]
    seg = ListedSegmenter(logits_of(*masks), [0.2, 0.9, 0.5])
    found = generate_masks(seg, IMAGE, reference(grid=1, pred_iou_thresh=0.0))
    assert [p.predicted_iou for p in found] == pytest.approx([0.9, 0.5, 0.2])  # SAM's order


# ------------------------------------------------------------ the whole generator


def sam_amg_reference(segmenter, grid, shape, *, iou_thresh=0.88, stab_thresh=0.95, nms=0.7):
    """SamAutomaticMaskGenerator's pipeline, written out from its source's steps with the
    helpers above: every point, predicted IoU > thresh, stability on upscaled logits >=
    thresh, masks > 0, boxes, torchvision NMS. Returns the masks in output order."""
    height, width = shape
    side = np.linspace(1 / (2 * grid), 1 - 1 / (2 * grid), grid)
    points = np.stack(np.meshgrid(side * width, side * height), -1).reshape(-1, 2)
    masks, scores = [], []
    for point in points:
        embedding = segmenter.embed(np.zeros((*shape, 3), np.uint8))
        pred = segmenter.predict(embedding, points=point[None, None], point_labels=np.ones((1, 1)))
        logits, ious = pred.logits[0], pred.iou_scores[0]
        for logit, iou in zip(logits, ious, strict=True):
            if iou > iou_thresh and sam_stability(logit[None])[0] >= stab_thresh:
                masks.append(logit > 0)
                scores.append(float(iou))
    keep = torchvision_nms_reference(sam_boxes_reference(np.array(masks)), scores, nms)
    return [masks[i] for i in keep]


def test_the_reference_mode_is_sams_generator_on_a_scene():
    """Disc masks of three radii around each of a 5x5 grid's points (the shape double), SAM's
    scores: the reference mode returns SAM's masks, in SAM's order."""
    from tests.helpers.doubles import ShapeSegmenter

    image = np.zeros((60, 90, 3), np.uint8)
    seg = ShapeSegmenter(radius=6)
    for thresh in (0.88, 0.6):
        expected = sam_amg_reference(seg, 5, (60, 90), iou_thresh=thresh)
        found = generate_masks(seg, image, reference(grid=5, pred_iou_thresh=thresh))
        assert len(found) == len(expected) > 0
        for proposal, mask in zip(found, expected, strict=True):
            np.testing.assert_array_equal(proposal.full((60, 90)), mask)


# ------------------------------------------------------------ SAM's small-region clean-up


def test_small_regions_are_cleaned_as_sam_cleans_them():
    """SAM fills holes touching the image edge too, and its islands are 8-connected: a
    diagonal neighbour is part of the region (the fast clean-up, 4-connected and keeping
    edge holes, differs on both)."""
    mask = block(0, 10, 0, 10)
    mask[0, 4:6] = False  # a 2-px hole on the image's top edge
    mask[10, 10] = True  # touches the block at a corner only: 8-connected to it
    mask[15:17, 15:17] = True  # a 4-px island
    seg = ListedSegmenter(logits_of(mask, np.zeros((20, 20), bool), np.zeros((20, 20), bool)),
                          [0.95, 0.1, 0.1])  # fmt: skip
    ref = generate_masks(seg, IMAGE, reference(grid=1, min_region_area=5))
    expected = block(0, 10, 0, 10)
    expected[10, 10] = True
    np.testing.assert_array_equal(ref[0].full((20, 20)), expected)
    fast = generate_masks(seg, IMAGE, GenerationSettings(grid=1, min_region_area=5))
    cleaned = fast[0].full((20, 20))
    assert not cleaned[0, 4] and not cleaned[10, 10]  # what the reference does not do


def test_segment_defaults_to_the_fast_mode_and_bad_modes_are_refused():
    assert GenerationSettings().amg == "fast" and REFERENCE_GENERATION.amg == "reference"
    assert (REFERENCE_GENERATION.grid, REFERENCE_GENERATION.pred_iou_thresh) == (29, 0.88)
    assert (REFERENCE_GENERATION.stability_thresh, REFERENCE_GENERATION.nms_iou) == (0.95, 0.7)
    assert (REFERENCE_GENERATION.min_region_area, REFERENCE_GENERATION.prune) == (0, False)
    with pytest.raises(InputError, match=r"GenerationSettings\.amg"):
        GenerationSettings(amg="exact")
    assert reference_differences(reference()) == []
    changed = reference_differences(GenerationSettings())
    assert changed == [
        "amg 'fast' (reference 'reference')",
        "min_region_area 100 (reference 0)",
        "prune True (reference False)",
    ]
    assert generation_description(reference())["coarse_strides"] == [8, 4, 2]


def test_fast_mode_is_unchanged_mask_nms():
    a, b = block(2, 12, 2, 12), block(3, 12, 2, 12)
    kept = mask_nms(proposals_of([b, a], [0.8, 0.95]), 0.7)
    assert [k.predicted_iou for k in kept] == [0.95]
