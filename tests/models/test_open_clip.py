"""open_clip checkpoints: file naming, the message when the optional package is missing, and
the adapter's whole path (`load_image_text` → `OpenClipImageText`) run against a stand-in
`open_clip` module backed by a tiny torch model.

The real open_clip cannot run here (it needs torchvision, which is not installable beside this
CPU torch, and no open_clip weights can be downloaded), so the stand-in provides exactly what
the adapter calls: `create_model_and_transforms` (which loads the checkpoint it is given),
`get_tokenizer`, and a model with `encode_text`, `encode_image` and a `visual` tower that
returns its patch tokens when `output_tokens` is set, as open_clip's VisionTransformer does.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from terramask.errors import InputError, ModelLoadError
from terramask.models import load_image_text, resolve_model
from terramask.models.open_clip_adapter import find_checkpoint

HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


@pytest.mark.parametrize(
    ("name", "arch"),
    [("RemoteCLIP-ViT-B-32.pt", "ViT-B-32"), ("RS5M_ViT-L-14.pt", "ViT-L-14"),
     ("RemoteCLIP-RN50.pt", "RN50"), ("weights.bin", None)],
)
def test_architecture_from_the_checkpoint_name(tmp_path, name, arch):
    (tmp_path / name).write_bytes(b"")
    assert find_checkpoint(tmp_path) == (tmp_path / name, arch, None)
    assert find_checkpoint(tmp_path / name)[1] == arch


def test_a_folder_of_several_checkpoints_is_ambiguous(tmp_path):
    for name in ("a-ViT-B-32.pt", "b-ViT-L-14.pt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ModelLoadError, match="2 checkpoint files"):
        find_checkpoint(tmp_path)


def test_single_checkpoint_folder_is_open_clip(tmp_path):
    (tmp_path / "RemoteCLIP-ViT-B-32.pt").write_bytes(b"")
    assert resolve_model(str(tmp_path), kind="image_text").family == "open_clip"
    with pytest.raises(ModelLoadError, match="segmenter"):
        resolve_model(str(tmp_path), kind="segmenter")


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="open_clip is installed here")
def test_missing_open_clip_says_how_to_install(tmp_path):
    (tmp_path / "RemoteCLIP-ViT-B-32.pt").write_bytes(b"")
    with pytest.raises(InputError, match=r'pip install "terramask\[open_clip\]"'):
        load_image_text(str(tmp_path))


# --- the adapter against a stand-in open_clip --------------------------------------------

IMAGE, PATCH, WIDTH, EMBED, CONTEXT = 32, 8, 16, 8, 6
GRID = IMAGE // PATCH


class TinyVisual(nn.Module):
    """open_clip's VisionTransformer in miniature: patch embedding, layer norm; pooled output
    projected; with `output_tokens`, also the (unprojected) patch tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, WIDTH, PATCH, stride=PATCH)
        self.ln_post = nn.LayerNorm(WIDTH)
        self.proj = nn.Parameter(torch.randn(WIDTH, EMBED))
        self.grid_size = (GRID, GRID)
        self.output_tokens = False

    def forward(self, pixels: torch.Tensor):
        tokens = self.ln_post(self.conv(pixels).flatten(2).transpose(1, 2))  # (B, h*w, WIDTH)
        pooled = tokens.mean(dim=1) @ self.proj
        return (pooled, tokens) if self.output_tokens else pooled


class TinyOpenClip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = TinyVisual()
        self.token_embedding = nn.Embedding(64, EMBED)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens).mean(dim=1)


def preprocess(image) -> torch.Tensor:
    """PIL image -> (3, IMAGE, IMAGE) floats, as open_clip's transforms give."""
    pixels = np.asarray(image.convert("RGB").resize((IMAGE, IMAGE)), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)


def tokenize(texts) -> torch.Tensor:
    """(N, CONTEXT) token ids from the characters, zero-padded, as open_clip's tokenizers."""
    ids = torch.zeros(len(texts), CONTEXT, dtype=torch.long)
    for row, text in enumerate(texts):
        codes = [ord(c) % 63 + 1 for c in text[:CONTEXT]]
        ids[row, : len(codes)] = torch.tensor(codes)
    return ids


@pytest.fixture
def stand_in(monkeypatch):
    """A stand-in `open_clip` in sys.modules; `calls` records what the adapter asked of it."""
    calls: dict[str, list] = {"create": [], "tokenizer": []}

    def create_model_and_transforms(name, pretrained=None):
        calls["create"].append((name, pretrained))
        model = TinyOpenClip()
        if pretrained is not None:
            model.load_state_dict(torch.load(pretrained, weights_only=True))
        return model, preprocess, preprocess

    def get_tokenizer(name):
        calls["tokenizer"].append(name)
        return tokenize

    module = types.ModuleType("open_clip")
    module.create_model_and_transforms = create_model_and_transforms
    module.get_tokenizer = get_tokenizer
    monkeypatch.setitem(sys.modules, "open_clip", module)
    return calls


def save_checkpoint(path) -> TinyOpenClip:
    torch.manual_seed(0)
    model = TinyOpenClip().eval()
    torch.save(model.state_dict(), path)
    return model


def test_open_clip_checkpoint_loads_and_embeds(tmp_path, stand_in):
    folder = tmp_path / "remoteclip"
    folder.mkdir()
    checkpoint = folder / "RemoteCLIP-ViT-B-32.pt"
    saved = save_checkpoint(checkpoint)
    model = load_image_text(str(folder), device="cpu")
    assert model.family == "open_clip" and model.name == str(folder)
    assert stand_in["create"] == [("ViT-B-32", str(checkpoint))]  # architecture from the name
    assert stand_in["tokenizer"] == ["ViT-B-32"]
    assert load_image_text(str(folder), device="cpu") is model  # loaded once

    text = model.encode_text(["field", "road"], templates=["a photo of {}.", "{}"])
    assert text.shape == (2, EMBED) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    with torch.no_grad():  # the mean over templates of normalised features, renormalised
        features = saved.encode_text(tokenize(["a photo of field.", "field"]))
        expected = nn.functional.normalize(nn.functional.normalize(features).mean(0), dim=0)
    np.testing.assert_allclose(text[0], expected.numpy(), atol=1e-5)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
              rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)]  # fmt: skip
    pooled = model.encode_image(images)  # sizes may differ: the preprocessing resizes
    assert pooled.shape == (2, EMBED)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-5)

    tokens = model.patch_tokens(images)
    assert tokens.shape == (2, GRID, GRID, EMBED) and tokens.dtype == np.float32
    assert model.model.visual.output_tokens is False  # restored after patch_tokens
    with torch.no_grad():  # the patch tokens go through the visual projection
        saved.visual.output_tokens = True
        pixels = torch.stack([preprocess(Image.fromarray(image)) for image in images])
        _, raw = saved.visual(pixels)
        projected = (raw @ saved.visual.proj).reshape(2, GRID, GRID, EMBED).numpy()
    np.testing.assert_allclose(tokens, projected, atol=1e-5)


def test_open_clip_folder_with_config_loads_as_a_local_dir(tmp_path, stand_in):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")  # no architecture in the name
    model = load_image_text(str(tmp_path), device="cpu")
    assert stand_in["create"] == [(f"local-dir:{tmp_path}", None)]
    assert stand_in["tokenizer"] == [f"local-dir:{tmp_path}"]
    assert model.encode_text(["water"]).shape == (1, EMBED)


def test_open_clip_checkpoint_without_architecture_or_config_is_refused(tmp_path, stand_in):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="Cannot tell the open_clip architecture"):
        load_image_text(str(tmp_path), device="cpu")
    assert stand_in["create"] == []
