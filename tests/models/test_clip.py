"""CLIP and SigLIP adapters: prompt ensembles, image embeddings and dense patch tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramask.errors import InputError
from terramask.methods.templates import IMAGENET_TEMPLATES, REMOTE_SENSING_TEMPLATES
from terramask.models import load_image_text
from terramask.models.clip import ClipImageText
from terramask.protocols import ImageText


@pytest.fixture(params=["clip", "siglip"])
def model(request, tiny_clip) -> ClipImageText:
    return load_image_text(str(tiny_clip[request.param]), device="cpu")


def _images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_loads_as_image_text(model, tiny_clip):
    assert isinstance(model, ImageText)
    assert model.name == str(tiny_clip[model.family])
    assert model.logit_scale > 0 and model.patch_size == 8


def test_text_ensemble_is_the_mean_of_normalised_template_embeddings(model):
    names = ["building", "low vegetation", "water"]
    templates = IMAGENET_TEMPLATES[:7] + REMOTE_SENSING_TEMPLATES[:2]
    got = model.encode_text(names, templates)

    padding = "max_length" if model.family == "siglip" else True
    expected = []
    for name in names:
        per_template = []
        for template in templates:  # one prompt at a time: padding cannot leak between prompts
            tokens = model.tokenizer([template.replace("{}", name)], padding=padding,
                                     max_length=16, truncation=True, return_tensors="pt")
            with torch.no_grad():
                per_template.append(model.model.get_text_features(**tokens).pooler_output[0])
        expected.append(_unit(_unit(torch.stack(per_template)).mean(0)))
    np.testing.assert_allclose(got, torch.stack(expected).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_text_without_templates_is_used_as_written(model):
    raw = model.encode_text(["an empty background"])
    same = model.encode_text(["an empty background"], ["{}"])
    np.testing.assert_allclose(raw, same, atol=1e-6)
    assert model.encode_text([], IMAGENET_TEMPLATES).shape == (0, raw.shape[1])


def test_bad_text_inputs(model):
    with pytest.raises(InputError, match="non-empty"):
        model.encode_text(["building", " "])
    with pytest.raises(InputError, match=r"\{\}"):
        model.encode_text(["building"], ["a photo of a building"])


def test_encode_image_matches_the_model(model):
    images = _images(2, 50, 70)
    got = model.encode_image(images)
    pixels = model.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = _unit(model.model.get_image_features(pixel_values=pixels).pooler_output)
    assert got.shape == (2, expected.shape[1])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_patch_tokens_at_a_non_default_size(model):
    images = _images(2, 48, 40)  # the tiny model was trained at 32x32 with 8 px patches
    tokens = model.patch_tokens(images)
    assert tokens.shape == (2, 6, 5, model.embed_dim)
    patches, cls = model.dense_features(images)
    np.testing.assert_allclose(patches, tokens)
    assert cls.shape == (2, model.embed_dim)


def test_clip_patch_tokens_are_projected_post_layernorm_tokens(tiny_clip):
    model = load_image_text(str(tiny_clip["clip"]))
    images = _images(1, 40, 48, seed=3)
    pixels = model.preprocess(images, native=True)
    assert pixels.shape[-2:] == (40, 48)
    vision = model.model.vision_model
    with torch.no_grad():
        hidden = vision(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        tokens = model.model.visual_projection(vision.post_layernorm(hidden))
    patches, cls = model.dense_features(images)
    np.testing.assert_allclose(patches, tokens[:, 1:].reshape(1, 5, 6, -1).numpy(), atol=1e-5)
    np.testing.assert_allclose(cls, tokens[:, 0].numpy(), atol=1e-5)


def test_bad_image_inputs(model):
    with pytest.raises(InputError, match="uint8"):
        model.encode_image([np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(InputError, match="one size"):
        model.patch_tokens(_images(1, 32, 32) + _images(1, 40, 32))
    with pytest.raises(InputError):
        model.encode_image([])


@pytest.mark.parametrize("shape", [(1, 300), (3, 300), (300, 2)])
def test_thin_images_are_read_channels_last_and_padded_before_the_crop(model, shape):
    """A 1- or 3-px side is not taken for the channels, and a strip is padded with black to
    4:1 before the processor's resize and centre crop, so the crop shows the strip rather
    than the middle of a row stretched a hundred-fold (and the resize stays bounded)."""
    height, width = shape
    [strip] = _images(1, height, width, seed=5)
    side = max(height, width) // 4
    padded = np.zeros((max(height, side), max(width, side), 3), np.uint8)
    padded[:height, :width] = strip
    np.testing.assert_allclose(model.encode_image([strip]), model.encode_image([padded]),
                               atol=1e-6)
    assert model.preprocess([strip]).shape[-2:] == model.preprocess([padded]).shape[-2:]


def test_native_images_need_one_patch_per_side(model):
    assert model.patch_size == 8
    with pytest.raises(InputError, match="8-pixel patches"):
        model.dense_tokens(_images(1, 5, 300))
    assert model.dense_tokens(_images(1, 8, 300))[0].shape[:3] == (1, 1, 37)
