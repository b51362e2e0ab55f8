"""GeoSeg's pieces with exact expectations: box refinement, clicks from a known similarity
map, route fusion, the CLIP-Surgery map, and both routes on a crop with doubles."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.methods.geoseg import (
    BoxRefinement,
    DualRoute,
    PointSelection,
    fuse_routes,
    refine_box,
    select_points,
    surgery_similarity,
    surgery_view,
    zero_area,
)
from terramask.protocols import ConceptResult
from tests.helpers.doubles import ShapeSegmenter


def test_published_refinement_expands_asymmetrically():
    refined = refine_box([100, 100, 200, 150], (1000, 1000))
    np.testing.assert_allclose(refined, [80, 90, 210, 155])  # -0.2w, -0.2h, +0.1w, +0.1h


def test_refinement_clamps_to_the_image():
    np.testing.assert_allclose(refine_box([0, 0, 50, 40], (60, 55)), [0, 0, 55, 44])


def test_small_boxes_grow_to_sixteen_pixels_around_their_centre():
    refined = refine_box([10, 10, 14, 12], (100, 100))
    # expanded first: x 9.2..14.4 (centre 11.8), y 9.6..12.2 (centre 10.9); then 16 wide
    np.testing.assert_allclose(refined, [3.8, 2.9, 19.8, 18.9])
    at_edge = refine_box([0, 0, 2, 2], (100, 100))
    np.testing.assert_allclose(at_edge, [0, 0, 16, 16])


def test_no_refinement_leaves_the_box_alone_and_round_trips(tmp_path):
    np.testing.assert_allclose(
        refine_box([10, 20, 30, 40], (100, 100), BoxRefinement.none()), [10, 20, 30, 40]
    )
    custom = BoxRefinement(0.1, 0.0, 0.3, 0.2, 0.05, -0.05, 8.0)
    custom.save(tmp_path / "refine.json")
    assert BoxRefinement.load(tmp_path / "refine.json") == custom


def test_clicks_come_from_the_peaks_and_troughs_of_the_similarity():
    similarity = np.full((40, 50), 0.5)
    similarity[10, 30] = 1.0
    similarity[11, 30] = 0.95  # too close to the first: skipped by the spacing rule
    similarity[30, 5] = 0.9
    similarity[0, 0] = 0.0
    similarity[39, 49] = 0.1
    points, labels = select_points(similarity, PointSelection(positives=3, negatives=2))
    np.testing.assert_allclose(points, [[30.5, 10.5], [5.5, 30.5], [0.5, 0.5], [49.5, 39.5]])
    np.testing.assert_array_equal(labels, [1, 1, 0, 0])


def test_without_a_confident_pixel_the_centre_is_clicked():
    points, labels = select_points(np.linspace(0, 0.7, 400).reshape(20, 20),
                                   PointSelection(positives=3, negatives=1))  # fmt: skip
    np.testing.assert_allclose(points[:3], [[10, 10], [8, 10], [12, 10]])
    np.testing.assert_array_equal(labels, [1, 1, 1, 0])


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


class StripeText:
    """ImageText double: patch tokens point along e0 in the left half, e1 in the right;
    the entity's text is e0 + shared part, the empty prompt is the shared part."""

    name = "stripe-text"
    patch_size = 4

    def dense_tokens(self, images):
        h, w = images[0].shape[:2]
        tokens = np.zeros((1, h // 4, w // 4, 3), np.float32)
        tokens[0, :, : w // 8, 0] = 1.0
        tokens[0, :, w // 8 :, 1] = 1.0
        return tokens, np.zeros((1, 3), np.float32)

    def encode_text(self, texts, templates=None):
        shared = np.array([0.0, 0.5, 0.5])
        return np.stack([shared + (np.array([1.0, 0, 0]) if "pond" in t else 0) for t in texts])


def test_surgery_similarity_removes_what_all_texts_share():
    crop = np.zeros((32, 64, 3), np.uint8)
    similarity = surgery_similarity(StripeText(), crop, "pond")
    assert similarity.shape == (32, 64)
    assert similarity[:, :24].min() == pytest.approx(1.0)
    assert similarity[:, 40:].max() == pytest.approx(0.0)


class FixedConcept:
    name = "fixed-concept"

    def __init__(self, mask, score=0.9):
        self.mask, self.score = mask, score

    def segment_concepts(self, image, phrases):
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
    # SAM's disc around the positive clicks, minus discs at the negatives, ∩ SAM 3's stripe
    assert result.mask[:, 20:].sum() == 0 and result.mask[:, :20].sum() > 0
    assert (result.point_labels == 1).sum() >= 1 and result.points[0][0] < 32


def test_a_low_scoring_concept_leaves_the_spatial_route():
    crop = np.zeros((32, 64, 3), np.uint8)
    route = DualRoute(ShapeSegmenter(radius=6), image_text=StripeText(),
                      concept=FixedConcept(np.ones((32, 64), bool), score=0.2))  # fmt: skip
    result = route.segment_crop(crop, "pond")
    assert result.semantic_pixels == 0 and result.mask.sum() == result.spatial_pixels > 0


# ---------------------------------------------------------------------- degenerate crops


class RecordingStripeText(StripeText):
    """StripeText that records the images CLIP Surgery shows it."""

    def __init__(self):
        self.shown: list[tuple[int, ...]] = []

    def dense_tokens(self, images):
        self.shown.append(images[0].shape)
        return super().dense_tokens(images)


def test_a_one_pixel_box_is_shown_to_clip_surgery_within_bounds():
    """A 190 × 1 crop (an MLLM box with `refine` none) was scaled to 42 560 × 224 for CLIP
    Surgery; it is now enlarged as if 190 × 47.5 (4:1) and mirrored up to 224 rows."""
    view, shown = surgery_view(np.zeros((1, 190, 3), np.uint8))
    assert view.shape == (224, 896, 3) and shown == (5, 896)
    text = RecordingStripeText()
    similarity = surgery_similarity(text, np.zeros((1, 190, 3), np.uint8), "pond")
    assert text.shown == [(224, 896, 3)]
    assert similarity.shape == (1, 190)
    assert similarity[:, :80].min() == pytest.approx(1.0)  # the left half is the pond
    assert similarity[:, 110:].max() == pytest.approx(0.0)


@pytest.mark.parametrize(("crop", "view", "shown"), [
    ((100, 150), (224, 336), (224, 336)),  # small: to CLIP's scale, as before
    ((300, 500), (300, 500), (300, 500)),  # as it is
    ((2048, 1500), (1024, 750), (1024, 750)),  # large: shrunk to 1024 on its long side
    ((190, 1), (896, 224), (896, 5)),  # thin, either way round
    ((3, 5000), (224, 1024), (1, 1024)),
    ((1, 1), (224, 224), (224, 224)),
])  # fmt: skip
def test_surgery_views_are_bounded(crop, view, shown):
    got, got_shown = surgery_view(np.zeros((*crop, 3), np.uint8))
    assert got.shape[:2] == view and got_shown == shown


def test_zero_area_boxes_are_named():
    assert zero_area([10, 20, 30, 40]) is None
    assert zero_area([10, 20, 10, 40]) == "no width"
    assert zero_area([10, 20, 30, 20]) == "no height"
    assert zero_area([10, 20, 10, 20]) == "no width and no height"
    assert zero_area([30, 20, 10, 40]) == "no width"  # flipped: no area either
