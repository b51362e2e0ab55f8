"""SAM 3's interactive model (route A of GeoSeg): loading from a facebook/sam3-style folder,
parity with transformers' Sam3TrackerModel, and the reasons route A falls back to SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramask.errors import ModelLoadError
from terramask.methods.geoseg import DualRoute
from terramask.models import load_concept_segmenter, sam3_points
from terramask.models.sam3_points import (
    Sam3PointSegmenter,
    load_sam3_point_segmenter,
    point_model_for_route_a,
)
from terramask.protocols import Segmenter
from terramask.testing.tiny_models import save_tiny_sam3, save_tiny_sam3_video
from tests.helpers.doubles import ShapeSegmenter


@pytest.fixture(scope="module")
def tiny_sam3_video(tmp_path_factory):
    return save_tiny_sam3_video(tmp_path_factory.mktemp("tiny-sam3-video") / "sam3")


@pytest.fixture(scope="module")
def tiny_sam3_image(tmp_path_factory):
    return save_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3-image") / "sam3")


def image_of(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_loads_the_interactive_model_from_a_sam3_video_folder(tiny_sam3_video):
    from transformers import Sam3TrackerModel

    model = load_sam3_point_segmenter(str(tiny_sam3_video), device="cpu")
    assert isinstance(model, Sam3PointSegmenter) and isinstance(model, Segmenter)
    assert isinstance(model.model, Sam3TrackerModel) and model.name == str(tiny_sam3_video)
    assert load_sam3_point_segmenter(str(tiny_sam3_video), device="cpu") is model
    # the same folder still serves route B's text prompts, as facebook/sam3 does
    concept = load_concept_segmenter(str(tiny_sam3_video), device="cpu")
    assert len(concept.segment_concepts(image_of(40, 40), ["road"], score_threshold=0.0)) == 1


def test_the_trackers_weights_are_the_checkpoints(tiny_sam3_video):
    """The tiny folder is laid out as the real one (tracker_model.*, tracker_neck.*), so every
    weight loads: none is left at its random initialisation."""
    from safetensors import safe_open

    model = load_sam3_point_segmenter(str(tiny_sam3_video), device="cpu").model
    with safe_open(str(tiny_sam3_video / "model.safetensors"), "pt") as stored:
        np.testing.assert_array_equal(
            model.mask_decoder.iou_token.weight.detach().numpy(),
            stored.get_tensor("tracker_model.mask_decoder.iou_token.weight").numpy())
        np.testing.assert_array_equal(
            model.vision_encoder.neck.fpn_layers[0].proj1.weight.detach().numpy(),
            stored.get_tensor("tracker_neck.fpn_layers.0.proj1.weight").numpy())


def test_one_click_per_prompt_matches_transformers(tiny_sam3_video):
    segmenter = load_sam3_point_segmenter(str(tiny_sam3_video), device="cpu")
    image = image_of(45, 70)
    clicks = np.array([[[10.0, 20.0]], [[50.0, 30.0]], [[69.0, 44.0]]])
    got = segmenter.predict(segmenter.embed(image), points=clicks,
                            point_labels=np.ones((3, 1), np.int64), multimask=False)  # fmt: skip
    model = segmenter.model
    pixels = segmenter.preprocess(image)
    size = pixels.shape[-1]
    scaled = torch.tensor(clicks * [size / 70, size / 45], dtype=torch.float32)[None]
    with torch.no_grad():
        out = model(pixel_values=pixels, input_points=scaled,
                    input_labels=torch.ones(1, 3, 1, dtype=torch.int64),
                    multimask_output=False)  # fmt: skip
        expected = F.interpolate(out.pred_masks[0], (45, 70), mode="bilinear",
                                 align_corners=False)  # fmt: skip
    assert got.masks.shape == (3, 1, 45, 70)
    np.testing.assert_allclose(got.logits, expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.iou_scores, out.iou_scores[0].numpy(), atol=1e-5)


def test_route_a_sends_its_clicks_to_sam3_when_the_folder_has_the_tracker(tiny_sam3_video):
    points, why = point_model_for_route_a(str(tiny_sam3_video), device="cpu")
    assert isinstance(points, Sam3PointSegmenter) and why is None
    route = DualRoute(ShapeSegmenter(), point_segmenter=points)
    result = route.segment_crop(image_of(30, 50), "road")
    assert result.route_a_model == "sam3" and result.route_a_note is None
    assert result.mask.shape == (30, 50)


def test_a_detector_only_folder_gives_a_reason_not_an_error(tiny_sam3_image):
    points, why = point_model_for_route_a(str(tiny_sam3_image), device="cpu")
    assert points is None and "interactive" in why and "sam3_video" in why
    with pytest.raises(ModelLoadError, match="tracker"):
        load_sam3_point_segmenter(str(tiny_sam3_image), device="cpu")


def test_a_transformers_without_the_tracker_gives_a_reason(tiny_sam3_video, monkeypatch):
    monkeypatch.setattr(sam3_points, "TRACKER_CLASS", "NoSuchSam3TrackerModel")
    points, why = point_model_for_route_a(str(tiny_sam3_video), device="cpu")
    assert points is None and "Sam3TrackerModel" in why and "upgrade transformers" in why
    assert point_model_for_route_a(None) == (None, "no SAM 3 model was given (`sam3`)")
