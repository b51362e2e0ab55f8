"""CLIP Surgery on transformers' CLIP (GeoSeg's route A): the reference's preprocessing, its
architecture surgery recomputed independently in OpenAI's layout, and the text in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from terramask.errors import InputError
from terramask.methods.geoseg import surgery_similarity
from terramask.models import load_image_text
from terramask.models.clip import OPENAI_MEAN, OPENAI_STD


@pytest.fixture
def clip(tiny_clip):
    return load_image_text(str(tiny_clip["clip"]), device="cpu")


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_crops_are_resized_to_512_bicubic_and_normalised_like_openai(clip):
    crop = _image(37, 91)
    pixels = clip.surgery_pixels([crop])
    assert pixels.shape == (1, 3, 512, 512) and pixels.dtype == torch.float32
    resized = np.asarray(Image.fromarray(crop).resize((512, 512), Image.BICUBIC), np.float32)
    expected = (resized / 255 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def _openai_style_surgery(model, pixels: torch.Tensor, blocks: int = 6) -> torch.Tensor:
    """CLIP Surgery laid out as OpenAI's code is (LND sequences, nn.MultiheadAttention with one
    in_proj, a qkv reshape for the value-value path, a list of two paths), with the weights of a
    transformers CLIPModel: an independent check of `_surgery_forward`."""
    vision = model.vision_model
    emb = vision.embeddings
    width = emb.class_embedding.shape[0]
    x = F.conv2d(pixels, emb.patch_embedding.weight, stride=emb.patch_embedding.stride)
    batch, _, grid, _ = x.shape
    x = x.reshape(batch, width, -1).permute(0, 2, 1)
    x = torch.cat([emb.class_embedding + torch.zeros(batch, 1, width), x], dim=1)
    pos = emb.position_embedding.weight
    side = int((pos.shape[0] - 1) ** 0.5)
    grid_pos = pos[1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, (grid, grid), mode="bilinear")
    grid_pos = grid_pos.reshape(1, width, grid * grid).transpose(1, 2)[0]
    x = x + torch.cat([pos[:1], grid_pos])
    x = vision.pre_layrnorm(x).permute(1, 0, 2)  # NLD -> LND

    layers = vision.encoder.layers
    heads = layers[0].self_attn.num_heads

    def in_proj(layer):
        a = layer.self_attn
        weight = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        return weight, torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])

    def original(layer, h):
        mha = torch.nn.MultiheadAttention(width, heads)
        weight, bias = in_proj(layer)
        mha.in_proj_weight.data, mha.in_proj_bias.data = weight, bias
        mha.out_proj.weight.data = layer.self_attn.out_proj.weight
        mha.out_proj.bias.data = layer.self_attn.out_proj.bias
        return mha(h, h, h, need_weights=False)[0]

    def value_value(layer, h):
        weight, bias = in_proj(layer)
        seq = h.transpose(0, 1)  # B N C
        n, c = seq.shape[1], seq.shape[2]
        qkv = (seq @ weight.T + bias).reshape(batch, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        v = qkv[2]
        attn = ((v @ v.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, n, c)
        return layer.self_attn.out_proj(out).transpose(0, 1)

    first = len(layers) - blocks
    paths = x
    for index, layer in enumerate(layers):
        if index < first:
            paths = paths + original(layer, layer.layer_norm1(paths))
            paths = paths + layer.mlp(layer.layer_norm2(paths))
            continue
        new, old = (paths, paths) if not isinstance(paths, list) else paths
        h = layer.layer_norm1(old)
        old = old + original(layer, h)
        old = old + layer.mlp(layer.layer_norm2(old))
        paths = [new + value_value(layer, h), old]
    new, old = paths
    new = new.clone()
    new[0] = old[0]
    tokens = model.visual_projection(vision.post_layernorm(new.permute(1, 0, 2)))
    return tokens / tokens.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("blocks", [6, 1])
def test_surgery_matches_an_independent_openai_layout_implementation(clip, blocks):
    crops = [_image(40, 70, seed=1), _image(64, 30, seed=2)]
    got = np.concatenate([clip.surgery_features([c], blocks=blocks) for c in crops])
    with torch.no_grad():
        expected = torch.cat([_openai_style_surgery(clip.model, clip.surgery_pixels([c]), blocks)
                              for c in crops])  # fmt: skip
    # the tiny model: 8-px patches, so 512 px is a 64 x 64 grid (32 x 32 for ViT-B/16)
    assert got.shape == (2, 1 + 64 * 64, clip.embed_dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected.numpy(), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)


def test_the_class_token_is_the_ordinary_clip_at_512_with_bilinear_positions(clip):
    """The original path is transformers' own encoder fed the same embeddings."""
    crop = _image(50, 50, seed=4)
    pixels = clip.surgery_pixels([crop])
    vision = clip.model.vision_model
    emb = vision.embeddings
    with torch.no_grad():
        x = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([emb.class_embedding.expand(1, 1, -1), x], dim=1)
        pos = emb.position_embedding.weight
        grid = pos[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, (64, 64), mode="bilinear", align_corners=False)
        x = x + torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(64 * 64, -1)])
        hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(x)).last_hidden_state
        cls = clip.model.visual_projection(vision.post_layernorm(hidden[:, 0]))
        plain = clip.model.visual_projection(vision.post_layernorm(hidden))
    got = clip.surgery_features([crop])
    np.testing.assert_allclose(got[0, 0], (cls / cls.norm())[0].numpy(), atol=2e-5)
    without = clip.surgery_features([crop], blocks=0)  # no surgery: the ordinary tokens
    np.testing.assert_allclose(without[0], (plain / plain.norm(dim=-1, keepdim=True))[0].numpy(),
                               atol=2e-5)  # fmt: skip
    assert not np.allclose(got[0, 1:], without[0, 1:], atol=1e-3)


def test_surgery_runs_in_float32_on_a_half_precision_model(tiny_clip, clip):
    half = load_image_text(str(tiny_clip["clip"]), device="cpu", dtype="bf16")
    assert half.dtype == torch.bfloat16
    crop = _image(33, 47, seed=5)
    tokens = half.surgery_features([crop])
    assert tokens.dtype == np.float32 and np.isfinite(tokens).all()
    np.testing.assert_allclose(tokens, clip.surgery_features([crop]), atol=0.05)
    exact = half.encode_text(["building"], ["a photo of a {}."], float32=True)
    rough = half.encode_text(["building"], ["a photo of a {}."])
    full = clip.encode_text(["building"], ["a photo of a {}."])
    assert np.abs(exact - full).max() <= np.abs(rough - full).max()
    np.testing.assert_allclose(exact, full, atol=0.05)


def test_geoseg_uses_clip_surgery_and_the_empty_text_ensemble(clip):
    crop = _image(40, 60, seed=6)
    templates = ("a photo of a {}.", "a {} in a video game.")
    similarity = surgery_similarity(clip, crop, "road", templates=templates)
    assert similarity.method == "clip-surgery" and similarity.scores.shape == (64, 64)
    tokens = clip.surgery_features([crop])[0, 1:]

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def embed(prompt):
        batch = clip.tokenizer([prompt], truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            return unit(clip.model.get_text_features(**batch).pooler_output[0].numpy())

    text = unit(np.mean([embed("a photo of a road."), embed("a road in a video game.")], 0))
    empty = unit(np.mean([embed("a photo of a ."), embed("a  in a video game.")], 0))
    np.testing.assert_allclose(similarity.scores.reshape(-1), tokens @ (text - empty),
                               atol=1e-5)  # fmt: skip


def test_siglip_has_no_clip_surgery(tiny_clip):
    siglip = load_image_text(str(tiny_clip["siglip"]), device="cpu")
    assert not siglip.supports_surgery
    with pytest.raises(InputError, match="CLIP Surgery"):
        siglip.surgery_features([_image(32, 32)])
