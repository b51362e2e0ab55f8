"""GeoSeg's pieces with exact expectations, against the reference code (Tankowa/GeoSeg,
`CLIP_Surgery/process_annotations_clip_surverg.py` and `clip_surgery/clip.py`): box refinement,
the boxes segmented, clicks from a known similarity map, the routes' models and thresholds,
route fusion, and whether a run is the published configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from terramask.methods.geoseg import (
    CONCEPT_MASK_LOGIT,
    CONCEPT_THRESHOLD,
    GEOSEG_REFINEMENT,
    LETTERBOX_FILL,
    NO_POINT_MODEL,
    BoxRefinement,
    DualRoute,
    PointSelection,
    fallback_points,
    fuse_routes,
    geoseg_configuration,
    refine_box,
    resize_view,
    segment_points_union,
    select_boxes,
    surgery_points,
    surgery_similarity,
    zero_area,
)
from terramask.methods.templates import CLIP_SURGERY_TEMPLATES, IMAGENET_TEMPLATES
from terramask.protocols import ConceptResult
from tests.helpers.doubles import ShapeSegmenter

# ---------------------------------------------------------------------- refinement


def reference_refinement(box, width, height):
    """The reference's arithmetic, written out from specs/geoseg.md §2-3 (parser clamp,
    int-truncated margins, the 16-px guard) for whole-pixel boxes."""
    x1, y1, x2, y2 = box
    x1 = max(0, min(x1, width - 1))
    y1 = max(0, min(y1, height - 1))
    x2 = max(x1 + 1, min(x2, width))
    y2 = max(y1 + 1, min(y2, height))
    w, h = x2 - x1, y2 - y1
    x1, y1 = max(0, x1 - int(w * 0.2)), max(0, y1 - int(h * 0.2))
    x2, y2 = min(width, x2 + int(w * 0.1)), min(height, y2 + int(h * 0.1))
    if x2 - x1 < 16 or y2 - y1 < 16:
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        x1, y1, x2, y2 = max(0, cx - 8), max(0, cy - 8), min(width, cx + 8), min(height, cy + 8)
    return [x1, y1, x2, y2]


def test_published_refinement_expands_asymmetrically():
    refined = refine_box([100, 100, 200, 150], (1000, 1000))
    np.testing.assert_allclose(refined, [80, 90, 210, 155])  # -0.2w, -0.2h, +0.1w, +0.1h


def test_refinement_clamps_to_the_image():
    np.testing.assert_allclose(refine_box([0, 0, 50, 40], (60, 55)), [0, 0, 55, 44])


def test_published_margins_are_truncated_to_whole_pixels():
    # w 37, h 39: int(7.4) = 7, int(7.8) = 7, int(3.7) = 3, int(3.9) = 3
    np.testing.assert_array_equal(refine_box([10, 20, 47, 59], (100, 100)), [3, 13, 50, 62])


def test_the_raw_box_is_clamped_before_its_margins_are_measured():
    # x1 -50 -> 0 first: w = 50, so x2 grows by 5 (not by 10 of a 100-px box)
    np.testing.assert_array_equal(refine_box([-50, 10, 50, 60], (1000, 1000)), [0, 0, 55, 65])
    # flipped: x2 becomes x1 + 1, y2 y1 + 1; then the 16-px guard around (30, 40)
    np.testing.assert_array_equal(refine_box([30, 40, 10, 20], (100, 100)), [22, 32, 38, 48])


def test_small_boxes_become_a_centred_sixteen_pixel_square_then_clamped():
    # w 4, h 2: no margin survives int(); centre (12, 11)
    np.testing.assert_array_equal(refine_box([10, 10, 14, 12], (100, 100)), [4, 3, 20, 19])
    # at the corner the square is clamped, not shifted: centre (1, 1) -> 0..9
    np.testing.assert_array_equal(refine_box([0, 0, 2, 2], (100, 100)), [0, 0, 9, 9])
    # a thin box: both sides become 16, not only the short one
    np.testing.assert_array_equal(refine_box([1, 80, 191, 81], (192, 192)), [88, 72, 104, 88])


def test_fractional_boxes_are_rounded_to_whole_pixels_first():
    # (10, 21, 48, 59): w 38, h 38 -> margins 7, 7, 3, 3
    np.testing.assert_array_equal(refine_box([10.4, 20.6, 47.6, 59.4], (100, 100)),
                                  [3, 14, 51, 62])  # fmt: skip


def test_published_refinement_matches_the_reference_arithmetic_on_random_boxes():
    rng = np.random.default_rng(7)
    for _ in range(500):
        width, height = (int(v) for v in rng.integers(20, 400, 2))
        box = [int(v) for v in rng.integers(-30, 430, 4)]
        np.testing.assert_array_equal(refine_box(box, (height, width)),
                                      reference_refinement(box, width, height))  # fmt: skip


def test_the_published_refinement_is_the_reference_arithmetic():
    assert GEOSEG_REFINEMENT.arithmetic == "reference"
    assert (GEOSEG_REFINEMENT.left, GEOSEG_REFINEMENT.top) == (0.2, 0.2)
    assert (GEOSEG_REFINEMENT.right, GEOSEG_REFINEMENT.bottom, GEOSEG_REFINEMENT.min_size) == (
        0.1, 0.1, 16.0)
    with pytest.raises(ValueError, match="arithmetic"):
        BoxRefinement(arithmetic="rounded")


def test_calibrated_refinements_keep_continuous_arithmetic():
    """What `calibrate` fits (BoxRefinement(*params)): fractional pixels, only the short side
    grown to min_size (the optimiser needs a smooth objective)."""
    continuous = BoxRefinement()
    assert continuous.arithmetic == "continuous"
    refined = refine_box([10, 10, 14, 12], (100, 100), continuous)
    # expanded first: x 9.2..14.4 (centre 11.8), y 9.6..12.2 (centre 10.9); then 16 wide
    np.testing.assert_allclose(refined, [3.8, 2.9, 19.8, 18.9])
    np.testing.assert_allclose(refine_box([0, 0, 2, 2], (100, 100), continuous), [0, 0, 16, 16])


def test_no_refinement_leaves_the_box_alone_and_round_trips(tmp_path):
    np.testing.assert_allclose(
        refine_box([10, 20, 30, 40], (100, 100), BoxRefinement.none()), [10, 20, 30, 40]
    )
    custom = BoxRefinement(0.1, 0.0, 0.3, 0.2, 0.05, -0.05, 8.0)
    custom.save(tmp_path / "refine.json")
    assert BoxRefinement.load(tmp_path / "refine.json") == custom
    GEOSEG_REFINEMENT.save(tmp_path / "geoseg.json")
    assert BoxRefinement.load(tmp_path / "geoseg.json") == GEOSEG_REFINEMENT


def test_calibration_files_written_before_arithmetic_existed_still_load(tmp_path):
    old = {"left": 0.1, "top": 0.0, "right": 0.3, "bottom": 0.2, "shift_x": 0.05,
           "shift_y": -0.05, "min_size": 8.0}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = BoxRefinement.load(tmp_path / "old.json")
    assert loaded == BoxRefinement(0.1, 0.0, 0.3, 0.2, 0.05, -0.05, 8.0, "continuous")


def test_one_box_is_segmented_as_the_reference_does_all_on_request():
    boxes = [np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])]
    assert len(select_boxes(boxes)) == 1 and select_boxes(boxes)[0] is boxes[0]
    assert select_boxes(boxes, "all") == boxes
    assert select_boxes([], "one") == []
    with pytest.raises(ValueError, match="one"):
        select_boxes(boxes, "first")


# ---------------------------------------------------------------------- route A's clicks


def test_the_template_ensemble_is_clip_surgerys_85():
    assert len(CLIP_SURGERY_TEMPLATES) == 85 == len(set(CLIP_SURGERY_TEMPLATES))
    assert CLIP_SURGERY_TEMPLATES[:80] == IMAGENET_TEMPLATES
    assert CLIP_SURGERY_TEMPLATES[0] == "a bad photo of a {}."
    assert CLIP_SURGERY_TEMPLATES[80] == "there is a {} in the scene."
    assert CLIP_SURGERY_TEMPLATES[-1] == "this is one {} in the scene."


def block_map(cells: np.ndarray) -> np.ndarray:
    """A 32 x 32 map whose bilinear halving (align_corners False: the mean of each 2 x 2
    block) is `cells` exactly."""
    return np.kron(cells, np.ones((2, 2))).astype(np.float32)


def test_clicks_are_the_top_cells_of_the_halved_map_at_their_centres():
    cells = np.zeros((16, 16))
    cells[3, 5], cells[10, 12], cells[0, 0], cells[15, 15] = 1.0, 0.9, 0.85, 0.5
    points, labels = surgery_points(block_map(cells), (100, 200))  # H 100, W 200
    # n = 3 cells >= 0.8, ascending: (0,0) 0.85, (10,12) 0.9, (3,5) 1.0; cell 12.5 x 6.25 px
    np.testing.assert_array_equal(points, [[6, 3], [156, 65], [68, 21]])
    np.testing.assert_array_equal(labels, [1, 1, 1])


def test_clicks_are_min_max_normalised_and_capped_at_half_the_cells():
    cells = np.full((16, 16), 5.0)
    cells[0, 0] = 1.0  # after min-max: 255 cells at 1.0, one at 0
    points, labels = surgery_points(block_map(cells), (64, 64))
    assert len(points) == 128 and labels.tolist() == [1] * 128
    # ties go by index: the last 128 cells, rows 8..15, at (col + 0.5) * 4 px
    np.testing.assert_array_equal(points[0], [2, 34])
    np.testing.assert_array_equal(points[-1], [62, 62])
    shifted = surgery_points(block_map(cells * 3 - 7), (64, 64))[0]
    np.testing.assert_array_equal(shifted, points)  # only the order of values counts


def test_clicks_stay_inside_the_crop_and_are_whole_pixels():
    cells = np.zeros((16, 16))
    cells[15, 15] = 1.0
    points, _ = surgery_points(block_map(cells), (10, 10))
    np.testing.assert_array_equal(points, [[9, 9]])  # 15.5 * 0.625 = 9.69, capped at W - 1
    assert points.dtype.kind == "i"


def test_a_flat_map_gives_no_clicks_as_in_the_reference():
    points, labels = surgery_points(np.full((32, 32), 0.3, np.float32), (50, 50))
    assert points.shape == (0, 2) and labels.shape == (0,)


class FlatText:
    """ImageText double whose every patch scores the same: CLIP Surgery's map is flat."""

    name = "flat-text"

    def dense_tokens(self, images):
        h, w = images[0].shape[:2]
        return np.ones((1, h // 16, w // 16, 2), np.float32), np.zeros((1, 2), np.float32)

    def encode_text(self, texts, templates=None):
        return np.tile([1.0, 0.0], (len(texts), 1)) if templates else np.tile(
            [0.0, 1.0], (len(texts), 1))


def test_no_clicks_means_no_route_a_mask_and_route_b_decides():
    segmenter = ShapeSegmenter()
    concept_mask = np.zeros((20, 20), bool)
    concept_mask[5:10, 5:10] = True
    route = DualRoute(segmenter, image_text=FlatText(), concept=FixedConcept(concept_mask))
    result = route.segment_crop(np.zeros((20, 20, 3), np.uint8), "pond")
    assert result.route_a_points == "none" and len(result.points) == 0
    assert segmenter.predict_calls == [] and result.spatial_pixels == 0 and result.score == 0.0
    np.testing.assert_array_equal(result.mask, concept_mask)


def test_negatives_only_on_request():
    cells = np.zeros((16, 16))
    cells[3, 5], cells[7, 7] = 1.0, -1.0
    points, labels = surgery_points(block_map(cells), (16, 16), PointSelection(negatives=True))
    np.testing.assert_array_equal(points, [[5, 3], [7, 7]])
    np.testing.assert_array_equal(labels, [1, 0])


def test_fallback_clicks_are_the_references_grid_around_the_centre():
    np.testing.assert_array_equal(
        fallback_points((100, 60)),  # centre (30, 50)
        [[28, 48], [30, 48], [32, 48], [28, 50], [30, 50], [32, 50], [28, 52], [30, 52],
         [32, 52]],
    )  # fmt: skip
    np.testing.assert_array_equal(fallback_points((3, 5)), [
        [0, 0], [2, 0], [4, 0], [0, 1], [2, 1], [4, 1], [0, 2], [2, 2], [4, 2]])


class StripeText:
    """ImageText double: patch tokens point along e0 in the left half, e1 in the right;
    the entity's text is e0 + shared part, the empty prompt is the shared part."""

    name = "stripe-text"
    patch_size = 4

    def __init__(self):
        self.shown: list[tuple[int, ...]] = []
        self.texts: list[list[str]] = []

    def dense_tokens(self, images):
        self.shown.append(images[0].shape)
        h, w = images[0].shape[:2]
        tokens = np.zeros((1, h // 4, w // 4, 3), np.float32)
        tokens[0, :, : w // 8, 0] = 1.0
        tokens[0, :, w // 8 :, 1] = 1.0
        return tokens, np.zeros((1, 3), np.float32)

    def encode_text(self, texts, templates=None):
        prompts = [t.replace("{}", text) for text in texts for t in (templates or ["{}"])]
        self.texts.append(prompts)
        shared = np.array([0.0, 0.5, 0.5])
        rows = [shared + (np.array([1.0, 0, 0]) if "pond" in p else 0) for p in prompts]
        rows = np.stack(rows).reshape(len(texts), -1, 3).mean(axis=1)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_clip_surgery_map_subtracts_the_empty_text_ensemble_on_a_512_view():
    text = StripeText()
    crop = np.zeros((32, 64, 3), np.uint8)
    similarity = surgery_similarity(text, crop, "pond")
    assert text.shown == [(512, 512, 3)]  # resized, aspect not kept
    assert similarity.method == "dense-tokens" and similarity.scores.shape == (128, 128)
    # the entity's 85 prompts, then the empty string in each of the 85 templates
    assert text.texts[0] == [t.replace("{}", "pond") for t in CLIP_SURGERY_TEMPLATES]
    assert text.texts[1] == [t.replace("{}", "") for t in CLIP_SURGERY_TEMPLATES]
    shared = np.array([0, 0.5, 0.5]) / np.linalg.norm([0, 0.5, 0.5])
    entity = np.array([1, 0.5, 0.5]) / np.linalg.norm([1, 0.5, 0.5])
    np.testing.assert_allclose(similarity.scores[:, :64], (entity - shared)[0], atol=1e-6)
    np.testing.assert_allclose(similarity.scores[:, 64:], (entity - shared)[1], atol=1e-6)


def test_any_crop_is_shown_to_clip_surgery_at_512():
    """A 190 x 1 crop (an MLLM box with `refine` none) is resized to 512 x 512 like any
    other, so its cost is bounded; its clicks land inside it."""
    text = StripeText()
    crop = np.zeros((1, 190, 3), np.uint8)
    assert resize_view(crop).shape == (512, 512, 3)
    similarity = surgery_similarity(text, crop, "pond")
    points, _ = surgery_points(similarity.scores, crop.shape[:2])
    assert text.shown == [(512, 512, 3)]
    assert len(points) and (points[:, 0] < 95).all() and (points[:, 1] == 0).all()


# ---------------------------------------------------------------------- the routes


def test_each_click_is_its_own_prompt_and_the_masks_are_or_merged():
    segmenter = ShapeSegmenter(radius=5)
    crop = np.zeros((40, 80, 3), np.uint8)
    mask, score = segment_points_union(segmenter, crop, np.array([[10, 10], [60, 30]]))
    [call] = segmenter.predict_calls
    assert call["points"].shape == (2, 1, 2) and call["multimask"] is False
    assert call["labels"].tolist() == [[1], [1]]
    yy, xx = np.mgrid[0:40, 0:80] + 0.5
    discs = ((xx - 10) ** 2 + (yy - 10) ** 2 <= 25) | ((xx - 60) ** 2 + (yy - 30) ** 2 <= 25)
    np.testing.assert_array_equal(mask, discs)
    assert score == pytest.approx(0.8)


class FixedConcept:
    name = "fixed-concept"

    def __init__(self, mask, score=0.9):
        self.mask, self.score = mask, score
        self.thresholds: list[float | None] = []

    def segment_concepts(self, image, phrases, *, score_threshold=None):
        self.thresholds.append(score_threshold)
        logits = np.where(self.mask, 5.0, -5.0).astype(np.float32)[None]
        scores = np.array([self.score], np.float32)
        semantic = np.zeros(self.mask.shape, np.float32)
        return [ConceptResult(logits, scores, semantic, 1.0) for _ in phrases]


def test_both_routes_on_a_crop_are_intersected():
    crop = np.zeros((32, 64, 3), np.uint8)
    concept_mask = np.zeros((32, 64), bool)
    concept_mask[:, :20] = True
    route = DualRoute(ShapeSegmenter(radius=20), image_text=StripeText(),
                      concept=FixedConcept(concept_mask))  # fmt: skip
    result = route.segment_crop(crop, "pond")
    assert result.spatial_pixels > 0 and result.semantic_pixels == 32 * 20
    # SAM's discs around the positive clicks ∩ SAM 3's stripe
    assert result.mask[:, 20:].sum() == 0 and result.mask[:, :20].sum() > 0
    assert (result.point_labels == 1).all() and (result.points[:, 0] < 32).all()


def test_route_a_uses_sam3_points_when_given_and_says_so_otherwise():
    crop = np.zeros((32, 64, 3), np.uint8)
    sam, sam3 = ShapeSegmenter(radius=4), ShapeSegmenter(radius=4)
    concept = FixedConcept(np.ones((32, 64), bool))
    result = DualRoute(sam, image_text=StripeText(), concept=concept,
                       point_segmenter=sam3).segment_crop(crop, "pond")  # fmt: skip
    assert result.route_a_model == "sam3" and result.route_a_note is None
    assert sam.predict_calls == [] and len(sam3.predict_calls) == 1
    assert result.route_a_points == "dense-tokens"
    alone = DualRoute(sam, image_text=StripeText(), concept=concept).segment_crop(crop, "pond")
    assert alone.route_a_model == "sam" and alone.route_a_note == NO_POINT_MODEL
    why = "the installed transformers has no Sam3TrackerModel"
    noted = DualRoute(sam, point_segmenter_note=why).segment_crop(crop, "pond")
    assert noted.route_a_model == "sam" and noted.route_a_note == why
    record = noted.record()
    assert record["route_a"]["model"] == "sam" and record["route_a"]["note"] == why
    json.dumps(record)


def test_without_clip_route_a_clicks_the_fallback_grid():
    crop = np.zeros((30, 40, 3), np.uint8)
    segmenter = ShapeSegmenter(radius=3)
    result = DualRoute(segmenter).segment_crop(crop, "pond")
    np.testing.assert_array_equal(result.points, fallback_points((30, 40)))
    assert result.route_a_points == "fallback" and result.route_b_model == "none"
    assert segmenter.predict_calls[0]["points"].shape == (9, 1, 2)


def test_route_b_keeps_sam3_instances_above_the_published_0_25():
    crop = np.zeros((32, 64, 3), np.uint8)
    assert DualRoute(ShapeSegmenter()).concept_threshold == CONCEPT_THRESHOLD == 0.25
    concept = FixedConcept(np.ones((32, 64), bool), score=0.3)  # dropped at 0.5
    result = DualRoute(ShapeSegmenter(radius=6), concept=concept).segment_crop(crop, "pond")
    assert result.semantic_pixels == 32 * 64 and result.route_b_model == "sam3"
    assert concept.thresholds == [0.25]  # the one threshold, passed to the segmenter


class InstanceConcept:
    """SAM 3 as the reference's route B sees it: several scored instances, each with a box."""

    name = "instance-concept"

    def __init__(self, masks, scores, boxes):
        self.masks, self.scores, self.boxes = masks, scores, boxes

    def segment_concepts(self, image, phrases, *, score_threshold=None):
        logits = np.where(np.asarray(self.masks), 5.0, -5.0).astype(np.float32)
        boxes = None if self.boxes is None else np.asarray(self.boxes, np.float32)
        return [ConceptResult(logits, np.asarray(self.scores, np.float32),
                              np.zeros(logits.shape[1:], np.float32), 1.0, boxes)
                for _ in phrases]  # fmt: skip


def test_route_b_runs_the_reference_box_nms_before_the_union():
    crop = np.zeros((20, 20, 3), np.uint8)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, :10, :10] = True  # kept (best)
    masks[1, 10:, :10] = True  # its box overlaps the best one's at IoU 0.8 > 0.7: dropped
    masks[2, 10:, 10:] = True  # a box of its own: kept
    boxes = [[0, 0, 10, 10], [0, 0, 10, 8], [10, 10, 20, 20]]
    concept = InstanceConcept(masks, [0.9, 0.8, 0.6], boxes)
    result = DualRoute(ShapeSegmenter(), concept=concept).segment_crop(crop, "pond")
    assert result.semantic_pixels == 200 and result.route_b_note is None
    # Without boxes there is nothing to run NMS on: every instance is kept, and the note says so.
    concept.boxes = None
    result = DualRoute(ShapeSegmenter(), concept=concept).segment_crop(crop, "pond")
    assert result.semantic_pixels == 300 and "NMS (0.7) was not applied" in result.route_b_note
    route = DualRoute(ShapeSegmenter(), concept=concept, concept_nms_iou=0.5)
    differences = geoseg_configuration(route, GEOSEG_REFINEMENT)[1]
    assert "route B's box NMS used IoU 0.5, not 0.7" in differences


class SeeingSegmenter(ShapeSegmenter):
    """A ShapeSegmenter that keeps the images it was shown."""

    def __init__(self, radius: float = 6.0) -> None:
        super().__init__(radius)
        self.images: list[np.ndarray] = []

    def embed(self, image):
        self.images.append(image.copy())
        return super().embed(image)


def test_route_a_shows_sam3_the_crop_letterboxed_as_ultralytics_does():
    crop = np.full((20, 50, 3), 7, np.uint8)
    sam3 = SeeingSegmenter(radius=40)  # a disc larger than the crop: spills into the padding
    result = DualRoute(ShapeSegmenter(), point_segmenter=sam3).segment_crop(crop, "pond")
    [seen] = sam3.images
    assert seen.shape == (50, 50, 3)  # padded at the bottom to a square
    np.testing.assert_array_equal(seen[:20], crop)
    assert (seen[20:] == LETTERBOX_FILL).all() and LETTERBOX_FILL == 114
    assert result.mask.shape == (20, 50) and result.spatial_pixels == 20 * 50  # cut back
    # Clicks stay in the crop's pixels (the padding is at the bottom/right).
    assert (sam3.predict_calls[0]["points"][:, 0, 1] < 20).all()
    # SAM (no SAM 3) has its own resize-and-pad and sees the crop itself; so does a route
    # told not to letterbox, which the configuration then names.
    sam = SeeingSegmenter()
    DualRoute(sam).segment_crop(crop, "pond")
    assert sam.images[0].shape == crop.shape
    plain = SeeingSegmenter()
    route = DualRoute(ShapeSegmenter(), point_segmenter=plain, sam3_letterbox=False)
    route.segment_crop(crop, "pond")
    assert plain.images[0].shape == crop.shape
    assert "without Ultralytics' letterbox" in "\n".join(
        geoseg_configuration(route, GEOSEG_REFINEMENT)[1])


def test_route_b_cuts_mask_logits_at_0_5_as_ultralytics_does():
    crop = np.zeros((10, 10, 3), np.uint8)
    logits = np.full((1, 10, 10), 0.3, np.float32)  # sigmoid 0.57: kept by a > 0 cut
    logits[0, :5] = 0.8
    concept = InstanceConcept(np.zeros((1, 10, 10), bool), [0.9], [[0, 0, 10, 10]])
    concept.segment_concepts = lambda image, phrases, score_threshold=None: [
        ConceptResult(logits, np.array([0.9], np.float32), np.zeros((10, 10), np.float32), 1.0)]
    result = DualRoute(ShapeSegmenter(), concept=concept).segment_crop(crop, "pond")
    assert result.semantic_pixels == 50 and CONCEPT_MASK_LOGIT == 0.5


def test_a_low_scoring_concept_leaves_the_spatial_route():
    crop = np.zeros((32, 64, 3), np.uint8)
    route = DualRoute(ShapeSegmenter(radius=6), image_text=StripeText(),
                      concept=FixedConcept(np.ones((32, 64), bool), score=0.2))  # fmt: skip
    result = route.segment_crop(crop, "pond")
    assert result.semantic_pixels == 0 and result.mask.sum() == result.spatial_pixels > 0


class OwnThresholdConcept(FixedConcept):
    """A concept segmenter with a fixed threshold of its own (no per-call threshold)."""

    score_threshold = 0.5

    def segment_concepts(self, image, phrases):
        return super().segment_concepts(image, phrases)


def test_a_concept_segmenter_with_a_stricter_own_threshold_is_noted():
    crop = np.zeros((16, 16, 3), np.uint8)
    route = DualRoute(ShapeSegmenter(), concept=OwnThresholdConcept(np.ones((16, 16), bool)))
    result = route.segment_crop(crop, "pond")
    assert "0.5" in result.route_b_note and result.semantic_pixels == 256


def test_without_sam3_route_b_is_dense_clip_and_not_the_published_route(monkeypatch):
    from terramask.methods import dense_clip

    def probabilities(self, crop, vocabulary):
        p = np.zeros((2, *crop.shape[:2]), np.float32)
        p[0, :, :8] = 1.0
        p[1, :, 8:] = 1.0
        return p

    monkeypatch.setattr(dense_clip.DenseClip, "probabilities", probabilities)
    crop = np.zeros((16, 16, 3), np.uint8)
    result = DualRoute(ShapeSegmenter(radius=50), image_text=StripeText()).segment_crop(
        crop, "pond")
    assert result.route_b_model == "dense-clip" and "not the published route" in (
        result.route_b_note)
    assert result.semantic_pixels == 16 * 8


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1, 1, 0], [0, 1, 1], [0, 1, 0]),  # both: intersection
        ([1, 1, 0], [0, 0, 0], [1, 1, 0]),  # only spatial
        ([0, 0, 0], [0, 1, 1], [0, 1, 1]),  # only semantic
        ([0, 0, 0], None, None),
    ],
)
def test_fusion_rules(a, b, expected):
    fused = fuse_routes(np.array(a, bool), None if b is None else np.array(b, bool))
    if expected is None:
        assert fused is None
    else:
        np.testing.assert_array_equal(fused, np.array(expected, bool))


def test_zero_area_boxes_are_named():
    assert zero_area([10, 20, 30, 40]) is None
    assert zero_area([10, 20, 10, 40]) == "no width"
    assert zero_area([10, 20, 30, 20]) == "no height"
    assert zero_area([10, 20, 10, 20]) == "no width and no height"
    assert zero_area([30, 20, 10, 40]) == "no width"  # flipped: no area either


# ---------------------------------------------------------------------- published configuration


class PublishedClip:
    name = "openai/clip-vit-base-patch16"
    supports_surgery = True


def published_route() -> DualRoute:
    sam = ShapeSegmenter()
    return DualRoute(sam, image_text=PublishedClip(), concept=FixedConcept(np.ones((2, 2), bool)),
                     point_segmenter=ShapeSegmenter())  # fmt: skip


def test_the_published_configuration_is_recognised():
    assert geoseg_configuration(published_route(), GEOSEG_REFINEMENT, "one") == (True, [])
    assert geoseg_configuration(published_route(), GEOSEG_REFINEMENT,
                                mllm="Qwen/Qwen3-VL-32B-Instruct")[0]  # fmt: skip


def test_every_departure_from_the_published_configuration_is_named():
    route = published_route()
    route.point_segmenter, route.point_segmenter_note = None, "transformers lacks it"
    route.concept = None
    route.image_text = type("Other", (), {"name": "my/clip-vit-large", "supports_surgery": True})()
    published, differences = geoseg_configuration(route, BoxRefinement.none(), "all",
                                                  mllm="gpt-5")  # fmt: skip
    assert not published
    text = "\n".join(differences)
    for words in ("route A sent its clicks to SAM", "transformers lacks it", "dense-CLIP",
                  "my/clip-vit-large", "refinement was none", "boxes all", "gpt-5"):
        assert words in text, words
    assert len(differences) == 6
    route = published_route()
    route.concept_threshold = 0.5
    assert geoseg_configuration(route, GEOSEG_REFINEMENT)[1] == [
        "route B kept SAM 3 instances above 0.5, not 0.25"]
    route = published_route()
    route.image_text = StripeText()
    assert "not CLIP Surgery" in geoseg_configuration(route, GEOSEG_REFINEMENT)[1][0]
    calibrated = BoxRefinement(0.1, 0.0, 0.3, 0.2, 0.05, -0.05, 8.0)
    assert "left 0.1" in geoseg_configuration(published_route(), calibrated)[1][0]
