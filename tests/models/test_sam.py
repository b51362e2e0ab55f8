"""SAM, SAM-HQ and SAM 2 adapters: loading, embedding cache, batching, parity with transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramask.errors import InputError
from terramask.models import load_segmenter
from terramask.models.sam import SamSegmenter
from terramask.protocols import ImageEmbedding, Segmenter

FAMILIES = ["sam", "sam_hq", "sam2"]
H, W = 100, 150  # not square and not the model's size: exercises resize, pad and crop-back


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(params=FAMILIES)
def segmenter(request, tiny_sam) -> SamSegmenter:
    return load_segmenter(str(tiny_sam[request.param]), device="cpu")


def count_calls(module: torch.nn.Module) -> list[int]:
    """A one-element list that counts the module's forward calls."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def test_loads_as_a_segmenter_once_per_process(segmenter, tiny_sam):
    assert isinstance(segmenter, Segmenter)
    assert segmenter.name == str(tiny_sam[segmenter.family])
    assert load_segmenter(str(tiny_sam[segmenter.family]), device="cpu") is segmenter


def test_embedding_cache_encodes_each_image_once(tiny_sam, image):
    segmenter = SamSegmenter(load_segmenter(str(tiny_sam["sam"])).resolved, cache_size=2)
    calls = count_calls(segmenter.model.vision_encoder)
    first = segmenter.embed(image)
    again = segmenter.embed(image.copy())  # same pixels, new array
    assert calls[0] == 1 and first.key == again.key and first.data is again.data
    assert isinstance(first, ImageEmbedding) and first.image_size == (H, W)

    other = image[::-1].copy()
    segmenter.embed(other)
    segmenter.embed(image[:, :, ::-1].copy())  # cache holds 2: `image` is evicted now
    assert calls[0] == 3
    segmenter.embed(image)
    assert calls[0] == 4
    segmenter.embed(image.reshape(W, H, 3))  # same bytes, other shape: a different key
    assert calls[0] == 5


def _check(prediction, b: int, m: int):
    assert prediction.masks.shape == (b, m, H, W) and prediction.masks.dtype == bool
    assert prediction.logits.shape == (b, m, H, W) and prediction.logits.dtype == np.float32
    assert prediction.iou_scores.shape == (b, m) and prediction.iou_scores.dtype == np.float32
    assert prediction.low_res_logits.shape[:2] == (b, m)
    assert prediction.low_res_logits.shape[2:] == (32, 32)  # 4x the 8x8 embedding grid
    np.testing.assert_array_equal(prediction.masks, prediction.logits > 0)


@pytest.mark.parametrize("multimask", [True, False])
def test_prompt_shapes(segmenter, image, multimask):
    embedding = segmenter.embed(image)
    m = 3 if multimask else 1
    points = np.array([[[10.0, 20.0]], [[140.0, 90.0]], [[75.0, 50.0]]])
    _check(segmenter.predict(embedding, points=points, point_labels=np.ones((3, 1), int),
                             multimask=multimask), 3, m)
    boxes = np.array([[5.0, 5.0, 60.0, 40.0], [50.0, 30.0, 149.0, 99.0]])
    _check(segmenter.predict(embedding, boxes=boxes, multimask=multimask), 2, m)
    both = segmenter.predict(embedding, points=points[:2], point_labels=np.ones((2, 1), int),
                             boxes=boxes, multimask=multimask)
    _check(both, 2, m)


def test_ragged_point_batches_use_minus_one_padding(segmenter, image):
    embedding = segmenter.embed(image)
    points = np.array([[[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]],
                       [[70.0, 80.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = np.array([[1, 0, 1], [1, -1, -1]])
    _check(segmenter.predict(embedding, points=points, point_labels=labels), 2, 3)


def test_one_decoder_call_per_batch_and_chunking_changes_nothing(tiny_sam, image):
    segmenter = load_segmenter(str(tiny_sam["sam"]))
    embedding = segmenter.embed(image)
    points = np.random.default_rng(2).uniform(0, 100, (5, 2, 2))
    labels = np.array([[1, 0]] * 5)
    calls = count_calls(segmenter.model.mask_decoder)
    whole = segmenter.predict(embedding, points=points, point_labels=labels)
    assert calls[0] == 1
    chunked = SamSegmenter(segmenter.resolved, max_prompts_per_call=2)
    parts = chunked.predict(chunked.embed(image), points=points, point_labels=labels)
    for a, b in zip((whole.logits, whole.iou_scores, whole.low_res_logits),
                    (parts.logits, parts.iou_scores, parts.low_res_logits), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("family", ["sam", "sam_hq"])
def test_matches_transformers_called_directly(tiny_sam, image, family):
    """The adapter's decoder output equals the documented SamProcessor + model(...) recipe."""
    segmenter = load_segmenter(str(tiny_sam[family]))
    prediction = segmenter.predict(segmenter.embed(image), points=np.array([[[60.0, 30.0]]]),
                                   point_labels=np.array([[1]]))
    processor = segmenter.processor
    inputs = processor(images=image, input_points=[[[60.0, 30.0]]], return_tensors="pt")
    with torch.no_grad():
        output = segmenter.model(**inputs)
    np.testing.assert_allclose(prediction.low_res_logits, output.pred_masks[0].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(prediction.iou_scores, output.iou_scores[0].numpy(), atol=1e-6)
    full = processor.post_process_masks(output.pred_masks, inputs["original_sizes"],
                                        inputs["reshaped_input_sizes"], binarize=False)[0]
    np.testing.assert_allclose(prediction.logits, full.numpy(), atol=1e-4)


def test_sam2_matches_a_full_forward_pass(tiny_sam, image):
    """SAM 2 from a cached embedding equals one forward pass from pixels with the same prompt."""
    segmenter = load_segmenter(str(tiny_sam["sam2"]))
    box = np.array([[20.0, 10.0, 120.0, 80.0]])
    prediction = segmenter.predict(segmenter.embed(image), boxes=box, multimask=False)
    pixels = segmenter.processor(images=image)["pixel_values"]
    size = pixels.shape[-1]
    scaled = box * np.array([size / W, size / H, size / W, size / H])
    with torch.no_grad():
        output = segmenter.model(pixel_values=pixels, multimask_output=False,
                                 input_boxes=torch.tensor(scaled[None], dtype=torch.float32))
    np.testing.assert_allclose(prediction.low_res_logits, output.pred_masks[0].numpy(),
                               atol=1e-5)


def test_bad_inputs_are_input_errors(segmenter, image):
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        segmenter.embed(image[..., 0])
    with pytest.raises(InputError, match="uint8"):
        segmenter.embed(image.astype(np.float32))
    embedding = segmenter.embed(image)
    bad = [
        dict(),
        dict(points=np.zeros((2, 2))),
        dict(points=np.zeros((2, 1, 2)), point_labels=np.ones((2, 2))),
        dict(points=np.zeros((1, 1, 2)), point_labels=np.array([[3]])),
        dict(boxes=np.zeros((2, 2))),
        dict(points=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1)), boxes=np.zeros((3, 4))),
        dict(boxes=np.full((1, 4), np.nan)),
        dict(boxes=np.zeros((0, 4))),
    ]
    for kwargs in bad:
        with pytest.raises(InputError):
            segmenter.predict(embedding, **kwargs)
    foreign = ImageEmbedding(image_size=(H, W), data=torch.zeros(1))
    with pytest.raises(InputError, match="embed"):
        segmenter.predict(foreign, boxes=np.zeros((1, 4)))


def test_low_res_decoding_then_upsampling_equals_full_resolution(segmenter, image):
    embedding = segmenter.embed(image)
    points = np.array([[[20.0, 30.0]], [[50.0, 10.0]]])
    labels = np.ones((2, 1), dtype=np.int64)
    full = segmenter.predict(embedding, points=points, point_labels=labels)
    low = segmenter.predict(embedding, points=points, point_labels=labels, full_resolution=False)
    assert low.masks is None and low.logits is None
    np.testing.assert_array_equal(low.iou_scores, full.iou_scores)
    flat = low.low_res_logits.reshape(-1, *low.low_res_logits.shape[-2:])
    upsampled = segmenter.upsample(embedding, flat)
    np.testing.assert_allclose(upsampled, full.logits.reshape(upsampled.shape), atol=1e-5)


# ---------------------------------------------------------------------- degenerate images


@pytest.mark.parametrize("shape", [(1, 300), (2, 300), (3, 300), (300, 1), (300, 3), (1, 1),
                                   (1, 3000)])  # fmt: skip
def test_strips_a_few_pixels_thin_are_segmented_at_their_own_size(segmenter, shape):
    """1- and 3-px sides are not read as channels, and a strip that the processor's resize
    would shrink to nothing is padded to one token of the grid; masks come back at its size."""
    height, width = shape
    strip = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    embedding = segmenter.embed(strip)
    assert embedding.image_size == shape
    points = np.array([[[width / 2, height / 2]]])
    prediction = segmenter.predict(embedding, points=points, point_labels=np.ones((1, 1), int))
    assert prediction.masks.shape == (1, 3, height, width)
    assert prediction.logits.shape == (1, 3, height, width)
    boxes = np.array([[0.0, 0.0, float(width), float(height)]])
    assert segmenter.predict(embedding, boxes=boxes).masks.shape == (1, 3, height, width)
    low = segmenter.predict(embedding, points=points, full_resolution=False)
    flat = low.low_res_logits.reshape(-1, *low.low_res_logits.shape[-2:])
    np.testing.assert_allclose(segmenter.upsample(embedding, flat),
                               prediction.logits.reshape(-1, height, width), atol=1e-5)


def test_a_thin_strip_is_encoded_padded_and_its_masks_cut_back(tiny_sam):
    """The strip is what the encoder sees on top of black padding: the same logits as the
    padded image gives, cut to the strip."""
    segmenter = load_segmenter(str(tiny_sam["sam"]))
    assert segmenter.max_aspect == 8  # the tiny model: 128 px input in 16 px patches
    strip = np.random.default_rng(4).integers(0, 256, (2, 300, 3), dtype=np.uint8)
    padded = np.zeros((38, 300, 3), np.uint8)  # ceil(300 / 8) rows
    padded[:2] = strip
    points, labels = np.array([[[150.0, 1.0]]]), np.ones((1, 1), int)
    thin = segmenter.predict(segmenter.embed(strip), points=points, point_labels=labels)
    full = segmenter.predict(segmenter.embed(padded), points=points, point_labels=labels)
    np.testing.assert_allclose(thin.logits, full.logits[:, :, :2], atol=1e-5)
    np.testing.assert_array_equal(thin.iou_scores, full.iou_scores)


def test_pad_thin_and_the_grid_side():
    from terramask.models.sam import grid_side, pad_thin, thin_padded_size

    image = np.full((1, 640, 3), 7, np.uint8)
    padded = pad_thin(image, 64)
    assert padded.shape == (10, 640, 3) and (padded[:1] == 7).all() and (padded[1:] == 0).all()
    assert pad_thin(image.transpose(1, 0, 2), 64).shape == (640, 10, 3)
    square = np.zeros((100, 150, 3), np.uint8)
    assert pad_thin(square, 64) is square
    assert thin_padded_size(1, 640, 64) == (10, 640) and thin_padded_size(64, 64, 64) == (64, 64)

    class Config:
        class vision_config:
            image_size, patch_size = 1024, 16

    assert grid_side(Config) == 64
    assert grid_side(object()) == 64  # unknown: SAM's
