"""SAM 3 concept adapter: loading, one encoding per image, batching, parity with transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramask.errors import InputError, ModelLoadError, ModelNotFoundError
from terramask.methods.concepts import ConceptEngine, fuse_concept
from terramask.methods.vocabulary import ClassVocabulary
from terramask.models import load_concept_segmenter
from terramask.models.sam3 import Sam3ConceptSegmenter
from terramask.protocols import ConceptSegmenter
from terramask.testing.tiny_models import save_tiny_sam3

QUERIES = 8  # the tiny model's object queries


@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory):
    return save_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3") / "sam3")


@pytest.fixture
def segmenter(tiny_sam3) -> Sam3ConceptSegmenter:
    return load_concept_segmenter(str(tiny_sam3), device="cpu")


def image_of(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def test_loads_as_a_concept_segmenter_once_per_process(segmenter, tiny_sam3):
    assert isinstance(segmenter, ConceptSegmenter)
    assert isinstance(segmenter, Sam3ConceptSegmenter)
    assert segmenter.name == str(tiny_sam3)
    assert load_concept_segmenter(str(tiny_sam3), device="cpu") is segmenter
    assert segmenter.model.dtype == torch.float32 and segmenter.device.type == "cpu"


@pytest.mark.parametrize(("height", "width", "phrases"), [
    (37, 53, ["building"]),
    (61, 29, ["building", "road", "water"]),
])
def test_result_shapes(segmenter, height, width, phrases):
    image = image_of(height, width)
    segmenter.score_threshold = 0.0  # keep every query: N is then known
    results = segmenter.segment_concepts(image, phrases)
    assert len(results) == len(phrases)
    for result in results:
        assert result.instance_logits.shape == (QUERIES, height, width)
        assert result.instance_logits.dtype == np.float32
        assert result.instance_scores.shape == (QUERIES,)
        assert result.instance_scores.dtype == np.float32
        assert np.all(np.diff(result.instance_scores) <= 0)  # best first
        assert np.all((result.instance_scores >= 0) & (result.instance_scores <= 1))
        assert result.semantic_logits.shape == (height, width)
        assert result.semantic_logits.dtype == np.float32
        assert 0.0 <= result.presence <= 1.0 and isinstance(result.presence, float)
        # SAM 3's scores include presence: no instance can outscore the concept's presence.
        assert np.all(result.instance_scores <= result.presence + 1e-6)
    assert segmenter.segment_concepts(image, []) == []


def test_score_threshold_filters_instances(segmenter):
    image = image_of(40, 40)
    segmenter.score_threshold = 0.0
    everything = segmenter.segment_concepts(image, ["road"])[0]
    threshold = float(np.median(everything.instance_scores))
    segmenter.score_threshold = threshold
    kept = segmenter.segment_concepts(image, ["road"])[0]
    expected = everything.instance_scores > threshold
    np.testing.assert_array_equal(kept.instance_scores, everything.instance_scores[expected])
    np.testing.assert_allclose(kept.instance_logits, everything.instance_logits[expected],
                               atol=1e-5)
    segmenter.score_threshold = 1.0
    none = segmenter.segment_concepts(image, ["road"])[0]
    assert none.instance_logits.shape == (0, 40, 40) and none.instance_scores.shape == (0,)
    np.testing.assert_array_equal(none.semantic_logits, everything.semantic_logits)


def test_a_call_can_set_its_own_score_threshold(segmenter):
    """GeoSeg's route B keeps instances above 0.25 on the same loaded SAM 3 that OVSS runs at
    0.5: the threshold is per call, and the segmenter's own is left alone."""
    image = image_of(40, 40)
    segmenter.score_threshold = 0.0
    everything = segmenter.segment_concepts(image, ["road"])[0]
    threshold = float(np.median(everything.instance_scores))
    segmenter.score_threshold = 0.9
    kept = segmenter.segment_concepts(image, ["road"], score_threshold=threshold)[0]
    expected = everything.instance_scores > threshold
    np.testing.assert_array_equal(kept.instance_scores, everything.instance_scores[expected])
    assert segmenter.score_threshold == 0.9
    default = segmenter.segment_concepts(image, ["road"])[0]
    np.testing.assert_array_equal(default.instance_scores,
                                  everything.instance_scores[everything.instance_scores > 0.9])


def test_the_image_is_encoded_once_for_many_phrases(tiny_sam3):
    segmenter = load_concept_segmenter(str(tiny_sam3), device="cpu")
    segmenter.max_phrases_per_call = 2  # five phrases -> three decoder calls
    vision = count_calls(segmenter.model.vision_encoder)
    decoder = count_calls(segmenter.model.detr_decoder)
    image = image_of(45, 70)
    phrases = ["building", "road", "water", "tree", "car"]
    segmenter.segment_concepts(image, phrases)
    assert vision[0] == 1 and decoder[0] == 3
    segmenter.segment_concepts(image.copy(), ["field"])  # same pixels: from the cache
    assert vision[0] == 1
    segmenter.segment_concepts(image[::-1].copy(), ["field"])
    assert vision[0] == 2


def test_batched_phrases_equal_one_at_a_time(segmenter):
    image = image_of(50, 31)
    segmenter.score_threshold = 0.0
    phrases = ["building", "the large field next to the river", "water"]
    together = segmenter.segment_concepts(image, phrases)
    for phrase, batched in zip(phrases, together, strict=True):
        alone = segmenter.segment_concepts(image, [phrase])[0]
        np.testing.assert_allclose(batched.instance_logits, alone.instance_logits, atol=1e-5)
        np.testing.assert_allclose(batched.instance_scores, alone.instance_scores, atol=1e-6)
        np.testing.assert_allclose(batched.semantic_logits, alone.semantic_logits, atol=1e-5)
        assert batched.presence == pytest.approx(alone.presence, abs=1e-6)
    # Different phrases do get different answers.
    assert not np.allclose(together[0].semantic_logits, together[2].semantic_logits)


def test_matches_transformers_called_directly(segmenter, tiny_sam3):
    from transformers import AutoTokenizer, Sam3Model, Sam3Processor
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    height, width, threshold = 43, 66, 0.3
    image = image_of(height, width, seed=7)
    config = json.loads((tiny_sam3 / "preprocessor_config.json").read_text())
    # Sam3ImageProcessor needs torchvision; a PIL processor with the same settings stands in
    # for it, and Sam3Processor (given that stand-in) tokenizes the phrase.
    images = ViTImageProcessorPil(size=config["size"], image_mean=config["image_mean"],
                                  image_std=config["image_std"], resample=config["resample"])
    processor = Sam3Processor(image_processor=images,
                              tokenizer=AutoTokenizer.from_pretrained(tiny_sam3))
    text = processor(text="building", return_tensors="pt")
    pixels = images(image, return_tensors="pt")["pixel_values"]
    model = Sam3Model.from_pretrained(tiny_sam3).eval()
    with torch.inference_mode():
        out = model(pixel_values=pixels, **text)
    # SAM 3's post-processing: scores = sigmoid(logits) * sigmoid(presence), masks resized.
    presence = out.presence_logits.sigmoid()[0, 0]
    scores = out.pred_logits.sigmoid()[0] * presence
    keep = torch.argsort(scores, descending=True)
    keep = keep[scores[keep] > threshold]
    masks = F.interpolate(out.pred_masks[:, keep], (height, width), mode="bilinear",
                          align_corners=False)[0]
    semantic = F.interpolate(out.semantic_seg, (height, width), mode="bilinear",
                             align_corners=False)[0, 0]
    assert 0 < len(keep) < QUERIES  # the threshold is exercised both ways

    segmenter.score_threshold = threshold
    got = segmenter.segment_concepts(image, ["building"])[0]
    assert got.presence == pytest.approx(float(presence), abs=1e-6)
    np.testing.assert_allclose(got.instance_scores, scores[keep].numpy(), atol=1e-6)
    np.testing.assert_allclose(got.instance_logits, masks.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.semantic_logits, semantic.numpy(), atol=1e-4)
    # Boxes: SAM 3's normalised x0, y0, x1, y1 in the image's pixels, clipped to it.
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = torch.minimum(out.pred_boxes[0, keep] * size, size).clamp(min=0)
    np.testing.assert_allclose(got.instance_boxes, boxes.numpy(), atol=1e-4)


def test_concept_engine_on_the_tiny_model(segmenter):
    image = image_of(33, 47)
    segmenter.score_threshold = 0.3
    vocabulary = ClassVocabulary.parse(["building,roof", "water"])
    probabilities = ConceptEngine(segmenter).probabilities(image, vocabulary)
    assert probabilities.shape == (2, 33, 47) and probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    building, roof, water = segmenter.segment_concepts(image, ["building", "roof", "water"])
    np.testing.assert_allclose(
        probabilities[0], np.maximum(fuse_concept(building), fuse_concept(roof)), atol=1e-6)
    np.testing.assert_allclose(probabilities[1], fuse_concept(water), atol=1e-6)


def test_bad_inputs_are_refused_clearly(segmenter):
    image = image_of(20, 20)
    with pytest.raises(InputError, match="list of phrases"):
        segmenter.segment_concepts(image, "building")
    with pytest.raises(InputError, match="empty"):
        segmenter.segment_concepts(image, ["building", "  "])
    with pytest.raises(InputError, match="uint8"):
        segmenter.segment_concepts(image.astype(np.float32), ["building"])
    with pytest.raises(InputError, match="RGB"):
        segmenter.segment_concepts(image[..., 0], ["building"])


def _one_paragraph(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_missing_folder_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError) as caught:
        load_concept_segmenter(str(tmp_path / "no-such-sam3"))
    text = _one_paragraph(caught.value)
    assert "no-such-sam3" in text and "does not exist" in text


def test_a_model_of_another_kind_is_refused(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelLoadError) as caught:
        load_concept_segmenter(str(folder))
    text = _one_paragraph(caught.value)
    assert "'clip'" in text and "concept segmenter" in text


def test_a_sam3_folder_without_weights_is_a_load_error(tmp_path, tiny_sam3):
    folder = tmp_path / "broken-sam3"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_sam3 / "config.json").read_text())
    with pytest.raises(ModelLoadError) as caught:
        load_concept_segmenter(str(folder), device="cpu")
    text = _one_paragraph(caught.value)
    assert "broken-sam3" in text and "(sam3)" in text and "re-save or re-download" in text


def test_a_sam3_video_folder_loads_its_detector(tmp_path, tiny_sam3, segmenter):
    """facebook/sam3 ships the video model (detector + tracker); its detector is what we run."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import Sam3Config, Sam3VideoConfig

    folder = tmp_path / "sam3-video"
    shutil.copytree(tiny_sam3, folder)
    Sam3VideoConfig(detector_config=Sam3Config.from_pretrained(tiny_sam3).to_dict()
                    ).save_pretrained(folder)
    weights = {f"detector_model.{k}": v
               for k, v in load_file(tiny_sam3 / "model.safetensors").items()}
    weights["tracker_model.unused"] = torch.zeros(2)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam3_video"

    video = load_concept_segmenter(str(folder), device="cpu")
    image = image_of(30, 30)
    ours, theirs = (s.segment_concepts(image, ["water"])[0] for s in (video, segmenter))
    np.testing.assert_array_equal(ours.semantic_logits, theirs.semantic_logits)
    assert ours.presence == theirs.presence


@pytest.mark.parametrize(("height", "width"), [(1, 300), (3, 300), (300, 2), (1, 1)])
def test_thin_strips_are_padded_not_stretched_and_cut_back(segmenter, height, width):
    """A strip thinner than one token of the grid is encoded on black padding (bottom/right)
    instead of being stretched by the square resize; results are cut back to the strip."""
    assert segmenter.max_aspect == 8  # the tiny model: 112 px in 14 px patches
    segmenter.score_threshold = 0.0
    strip = image_of(height, width)
    [thin] = segmenter.segment_concepts(strip, ["road"])
    assert thin.instance_logits.shape == (QUERIES, height, width)
    assert thin.semantic_logits.shape == (height, width)
    side = -(-max(height, width) // 8)
    padded = np.zeros((max(height, side), max(width, side), 3), np.uint8)
    padded[:height, :width] = strip
    [full] = segmenter.segment_concepts(padded, ["road"])
    np.testing.assert_allclose(thin.semantic_logits, full.semantic_logits[:height, :width],
                               atol=1e-5)
    np.testing.assert_allclose(thin.instance_logits, full.instance_logits[:, :height, :width],
                               atol=1e-5)
    np.testing.assert_allclose(thin.instance_scores, full.instance_scores, atol=1e-6)
