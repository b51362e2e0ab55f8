"""Dense CLIP: the self-self block and probabilities against a by-hand ViT, windows, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramask.methods.dense_clip import DenseClip, resize_short_side, window_starts
from terramask.methods.labels import labels_from_probabilities
from terramask.methods.vocabulary import NO_CLASS, ClassVocabulary
from terramask.protocols import ImageText, SemanticEngine

TEMPLATES = ("a photo of a {}.", "a satellite image of a {}.")
VOCABULARY = ClassVocabulary((("building", "roof"), ("road",), ("water", "river")))

# ---------------------------------------------------------------------- a ViT written by hand

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu_pytorch_tanh": lambda x: 0.5 * x * (1 + torch.tanh(
        math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
}


class HandViT:
    """The model's vision tower recomputed from its state dict, in float64."""

    def __init__(self, model):
        self.family = model.family
        self.w = {k: v.double() for k, v in model.model.state_dict().items()}
        config = model.model.config.vision_config
        self.patch, self.heads = config.patch_size, config.num_attention_heads
        self.eps, self.layers = config.layer_norm_eps, config.num_hidden_layers
        self.act = _ACTIVATIONS[config.hidden_act]
        self.mean = torch.tensor(model.image_processor.image_mean, dtype=torch.float64)
        self.std = torch.tensor(model.image_processor.image_std, dtype=torch.float64)

    def linear(self, x, name, bias=True):
        out = x @ self.w[name + ".weight"].T
        return out + self.w[name + ".bias"] if bias else out

    def norm(self, x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[
            name + ".bias"]

    def mlp(self, x, name):
        return self.linear(self.act(self.linear(x, name + ".fc1")), name + ".fc2")

    def split(self, x):
        return x.reshape(x.shape[0], self.heads, -1).transpose(0, 1)  # (heads, N, hd)

    def block(self, x, i, self_self=False):
        name = f"vision_model.encoder.layers.{i}"
        y = self.norm(x, name + ".layer_norm1")
        q, k, v = (self.split(self.linear(y, f"{name}.self_attn.{p}_proj")) for p in "qkv")
        scale = q.shape[-1] ** -0.5
        if self_self:
            attn = sum(torch.softmax(t @ t.transpose(1, 2) * scale, -1) for t in (q, k, v))
        else:
            attn = torch.softmax(q @ k.transpose(1, 2) * scale, -1)
        merged = (attn @ v).transpose(0, 1).reshape(x.shape[0], -1)
        out = self.linear(merged, name + ".self_attn.out_proj")
        if self_self:
            return out
        x = x + out
        return x + self.mlp(self.norm(x, name + ".layer_norm2"), name + ".mlp")

    def embed(self, image):
        x = (torch.tensor(image, dtype=torch.float64) / 255 - self.mean) / self.std
        p = self.patch
        h, w = x.shape[0] // p, x.shape[1] // p
        cells = x.reshape(h, p, w, p, 3).permute(0, 2, 4, 1, 3).reshape(h * w, 3 * p * p)
        kernel = self.w["vision_model.embeddings.patch_embedding.weight"]
        tokens = cells @ kernel.reshape(kernel.shape[0], -1).T
        if "vision_model.embeddings.patch_embedding.bias" in self.w:
            tokens = tokens + self.w["vision_model.embeddings.patch_embedding.bias"]
        positions = self.w["vision_model.embeddings.position_embedding.weight"]
        if self.family == "clip":
            class_position, positions = positions[:1], positions[1:]
        side = round(positions.shape[0] ** 0.5)
        grid = positions.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        tokens = tokens + grid[0].permute(1, 2, 0).reshape(h * w, -1)
        if self.family == "clip":
            cls = self.w["vision_model.embeddings.class_embedding"] + class_position
            tokens = self.norm(torch.cat([cls, tokens]), "vision_model.pre_layrnorm")
        return tokens, (h, w)

    def siglip_head(self, tokens, probe=True):
        """The pooling head for the probe (global token), or each token's value path."""
        dim = tokens.shape[-1]
        w_in, b_in = self.w["vision_model.head.attention.in_proj_weight"], self.w[
            "vision_model.head.attention.in_proj_bias"]
        values = tokens @ w_in[2 * dim:].T + b_in[2 * dim:]
        if probe:
            query = self.w["vision_model.head.probe"][0] @ w_in[:dim].T + b_in[:dim]
            keys = tokens @ w_in[dim:2 * dim].T + b_in[dim:2 * dim]
            q, k, v = self.split(query), self.split(keys), self.split(values)
            attn = torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, -1)
            values = (attn @ v).transpose(0, 1).reshape(1, -1)
        out = self.linear(values, "vision_model.head.attention.out_proj")
        return out + self.mlp(self.norm(out, "vision_model.head.layernorm"),
                              "vision_model.head.mlp")

    def dense(self, image):
        """((h, w, D) self-self patch tokens, (D,) global token) in the joint space."""
        x, (h, w) = self.embed(image)
        for i in range(self.layers - 1):
            x = self.block(x, i)
        last = self.layers - 1
        standard = self.norm(self.block(x, last), "vision_model.post_layernorm")
        special = self.norm(self.block(x, last, self_self=True), "vision_model.post_layernorm")
        if self.family == "clip":
            project = self.w["visual_projection.weight"].T
            patches, global_token = special[1:] @ project, standard[0] @ project
        else:
            patches, global_token = self.siglip_head(special, probe=False), self.siglip_head(
                standard)[0]
        return patches.reshape(h, w, -1), global_token


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_tokens_and_probabilities_match_a_by_hand_computation(family, load_tiny_image_text):
    model = load_tiny_image_text(family)
    assert isinstance(model, ImageText)
    image = _image(32, 40, seed=1)  # a 4x5 grid of 8 px patches: positions are interpolated

    patches, global_token = model.dense_tokens([image, image])
    hand_patches, hand_global = HandViT(model).dense(image)
    assert patches.shape == (2, 4, 5, hand_patches.shape[-1])
    np.testing.assert_allclose(patches[1], hand_patches.numpy(), atol=1e-4)
    np.testing.assert_allclose(global_token[0], hand_global.numpy(), atol=1e-4)

    engine = DenseClip(model, templates=TEMPLATES, short_side=32, crop=48, stride=16,
                       cls_lambda=-0.3, logit_scale=50.0)
    got = engine.probabilities(image, VOCABULARY)

    names = [name for name, _ in VOCABULARY.prompts]
    text = torch.tensor(model.encode_text(names, TEMPLATES), dtype=torch.float64)
    logits = _unit(hand_patches) @ text.T + -0.3 * (_unit(hand_global) @ text.T)
    logits = F.interpolate(logits.permute(2, 0, 1)[None], size=(32, 40), mode="bilinear",
                           align_corners=False)[0]
    per_name = torch.softmax(50.0 * logits, dim=0).numpy()
    expected = np.stack([per_name[0:2].max(0), per_name[2], per_name[3:5].max(0)])
    assert got.shape == (3, 32, 40) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # The random tiny model must not be so flat that the comparison is vacuous.
    assert np.ptp(per_name) > 0.05


def test_clip_global_token_is_the_image_embedding(load_tiny_image_text):
    model = load_tiny_image_text("clip")
    images = [_image(32, 32, seed=4)]  # the processor's resize and crop are no-ops here
    _, global_token = model.dense_tokens(images)
    np.testing.assert_allclose(_unit(torch.tensor(global_token)).numpy(),
                               model.encode_image(images), atol=1e-5)


# ---------------------------------------------------------------------- doubles

class PositionImageText:
    """A double whose tokens are known functions of the pixel (row, col) encoded in R and G.

    Patch size 1: the token grid is the pixel grid. A pixel's token has angle 0.3·row + 0.7·col;
    a window's global token has angle 0.2·top − 0.1·left (read from its first pixel), so
    windows disagree and overlap averaging shows. Text of name n has angle `angles[n]`.
    """

    name = "position-double"
    patch_size = 1

    def __init__(self, angles: dict[str, float]):
        self.angles = angles
        self.text_calls: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self.batches: list[int] = []

    def encode_text(self, texts, templates=None):
        self.text_calls.append((tuple(texts), tuple(templates or ())))
        return np.array([[math.cos(self.angles[t]), math.sin(self.angles[t])] for t in texts],
                        dtype=np.float32)

    def encode_image(self, images):
        raise NotImplementedError

    def patch_tokens(self, images):
        return self.dense_tokens(images)[0]

    def dense_tokens(self, images):
        self.batches.append(len(images))
        assert len({image.shape for image in images}) == 1
        patches, globals_ = [], []
        for image in images:
            rows, cols = image[..., 0].astype(np.float64), image[..., 1].astype(np.float64)
            theta = 0.3 * rows + 0.7 * cols
            patches.append(3.0 * np.stack([np.cos(theta), np.sin(theta)], axis=-1))
            phi = 0.2 * rows[0, 0] - 0.1 * cols[0, 0]
            globals_.append(2.0 * np.array([np.cos(phi), np.sin(phi)]))
        return np.stack(patches).astype(np.float32), np.stack(globals_).astype(np.float32)


def _position_image(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def test_windows_average_exactly_where_they_overlap():
    angles = {"a": 0.0, "b": 1.2}
    double = PositionImageText(angles)
    vocabulary = ClassVocabulary((("a",), ("b",)))
    engine = DenseClip(double, templates=("{}",), short_side=10, crop=6, stride=4,
                       cls_lambda=-0.3, batch_size=4)
    assert isinstance(engine, SemanticEngine)
    got = engine.name_logits(_position_image(10, 13), vocabulary)

    tops, lefts = [0, 4], [0, 4, 7]  # the last column window is pulled back to the edge
    rows, cols = np.mgrid[:10, :13]
    theta = 0.3 * rows + 0.7 * cols
    for n, alpha in enumerate(angles.values()):
        total, count = np.zeros((10, 13)), np.zeros((10, 13))
        for top in tops:
            for left in lefts:
                phi = 0.2 * top - 0.1 * left
                total[top:top + 6, left:left + 6] += -0.3 * math.cos(phi - alpha)
                count[top:top + 6, left:left + 6] += 1
        expected = np.cos(theta - alpha) + total / count
        np.testing.assert_allclose(got[n], expected, atol=1e-5)
    assert double.batches == [4, 2]


def test_a_class_probability_is_the_max_over_its_synonyms():
    angles = {"road": 0.0, "street": 0.9, "water": 2.5}
    engine = DenseClip(PositionImageText(angles), templates=("{}",), short_side=None, crop=8,
                       stride=4)
    vocabulary = ClassVocabulary((("road", "street"), ("water",)))
    image = _position_image(9, 11)
    per_name = torch.softmax(50.0 * torch.tensor(engine.name_logits(image, vocabulary)), 0).numpy()
    got = engine.probabilities(image, vocabulary)
    np.testing.assert_allclose(got[0], np.maximum(per_name[0], per_name[1]), atol=1e-6)
    np.testing.assert_allclose(got[1], per_name[2], atol=1e-6)
    assert (got[0] > per_name[0] + 1e-3).any()  # "street" wins somewhere


def test_text_embeddings_are_computed_once_per_vocabulary():
    double = PositionImageText({"a": 0.0, "b": 1.0, "c": 2.0})
    engine = DenseClip(double, templates=TEMPLATES, short_side=None, crop=8, stride=8)
    first = ClassVocabulary((("a", "b"), ("c",)))
    for seed in range(3):
        engine.probabilities(_image(8, 12, seed), first)
    engine.probabilities(_image(8, 8), ClassVocabulary((("a", "b"), ("c",)), background=1))
    assert double.text_calls == [(("a", "b", "c"), TEMPLATES)]
    engine.probabilities(_image(8, 8), ClassVocabulary((("c",), ("a",))))
    assert len(double.text_calls) == 2


def test_labels_from_probabilities_threshold():
    probabilities = np.array([[[0.7, 0.2], [0.4, 0.1]],
                              [[0.2, 0.5], [0.35, 0.1]],
                              [[0.1, 0.3], [0.25, 0.8]]], dtype=np.float32)
    plain = ClassVocabulary((("building",), ("road",), ("water",)))
    labels = labels_from_probabilities(probabilities, plain, None)
    assert labels.dtype == np.int16
    np.testing.assert_array_equal(labels, [[0, 1], [0, 2]])
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, plain, 0.45),
                                  [[0, 1], [NO_CLASS, 2]])
    with_background = ClassVocabulary(plain.classes, background=1)
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, with_background, 0.6),
                                  [[0, 1], [1, 2]])
    with pytest.raises(ValueError):
        labels_from_probabilities(probabilities[:2], plain, None)


@pytest.mark.parametrize("size", [(37, 53), (5, 9), (64, 17), (33, 33)])
def test_any_image_size_gives_one_probability_map_per_class(size, load_tiny_image_text):
    model = load_tiny_image_text("clip")
    engine = DenseClip(model, templates=TEMPLATES, short_side=None, crop=32, stride=16)
    got = engine.probabilities(_image(*size), VOCABULARY)
    assert got.shape == (3, *size) and got.dtype == np.float32
    assert np.isfinite(got).all() and (got >= 0).all() and (got <= 1 + 1e-6).all()


def test_resized_images_come_back_at_their_own_size(load_tiny_image_text):
    model = load_tiny_image_text("siglip")
    engine = DenseClip(model, templates=TEMPLATES, short_side=40, crop=32, stride=16)
    assert engine.probabilities(_image(23, 61), VOCABULARY).shape == (3, 23, 61)
    assert resize_short_side(_image(23, 61), 40).shape == (40, 106, 3)
    assert resize_short_side(_image(90, 30), 15).shape == (45, 15, 3)


def test_window_starts_cover_the_side_and_end_at_the_edge():
    assert window_starts(10, 6, 4) == [0, 4]
    assert window_starts(13, 6, 4) == [0, 4, 7]
    assert window_starts(448, 224, 112) == [0, 112, 224]
    assert window_starts(5, 5, 4) == [0]


# ---------------------------------------------------------------------- thin images


class CountingImageText:
    """A real tiny model, recording the shape of every window `dense_tokens` is given."""

    def __init__(self, model):
        self.model = model
        self.name, self.patch_size = model.name, model.patch_size
        self.windows: list[tuple[int, int]] = []

    def encode_text(self, texts, templates=None):
        return self.model.encode_text(texts, templates)

    def dense_tokens(self, images):
        self.windows += [image.shape[:2] for image in images]
        return self.model.dense_tokens(images)


def test_thin_images_are_resized_within_a_bounded_size():
    """The short-side resize treats a strip as if its short side were long / 4: a 1 × 1024 tile
    becomes 2 × 1792 (448 · 4), not 448 × 458 752; images up to 4:1 resize as before."""
    assert resize_short_side(_image(1, 1024), 448).shape == (2, 1792, 3)
    assert resize_short_side(_image(1024, 3), 448).shape == (1792, 5, 3)
    assert resize_short_side(_image(1, 20000), 448).shape == (1, 1792, 3)
    assert resize_short_side(_image(100, 400), 448).shape == (448, 1792, 3)  # 4:1, as before
    assert resize_short_side(_image(1, 1024), 448, max_aspect=None).shape == (448, 458752, 3)
    for shape in ((1, 190), (3, 5000), (2, 2), (224, 224)):
        resized = resize_short_side(_image(*shape), 448)
        assert min(resized.shape[:2]) <= 448 and max(resized.shape[:2]) <= 1792


@pytest.mark.parametrize("size", [(1, 1024), (2, 300), (3, 700), (1024, 1), (1, 1)])
def test_strips_get_probabilities_at_their_size_from_a_few_windows(size, load_tiny_image_text):
    counting = CountingImageText(load_tiny_image_text("clip"))
    engine = DenseClip(counting, templates=TEMPLATES)  # SegEarth-OV's 448 / 224 / 112
    got = engine.probabilities(_image(*size), VOCABULARY)
    assert got.shape == (3, *size) and np.isfinite(got).all()
    assert len(counting.windows) <= 15  # (1792 - 224) / 112 + 1
    # a window is padded (mirrored) to whole patches, at least one: never beyond the crop
    assert all(min(w) >= 8 and max(w) <= 224 for w in counting.windows)
