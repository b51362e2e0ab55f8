"""Dense CLIP with SimFeatUp: the window's patch features are upsampled with its pixels as
guidance, then normalised and compared with the text at full window resolution (SegEarth-OV's
order), instead of bilinear upsampling of the logits; random weights through the real loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramask.errors import InputError
from terramask.methods.dense_clip import DenseClip
from terramask.methods.vocabulary import ClassVocabulary
from terramask.models.featup import SimFeatUp, load_featup, to_checkpoint
from terramask.models.loader import clear_loaded

VOCABULARY = ClassVocabulary((("building",), ("road",), ("water",)))


class PatchImageText:
    """An image-text double with 16-px patches: a patch's token is a fixed projection of its
    mean colour (not normalised), the global token that of the whole image's."""

    name = "patch-double"
    patch_size = 16

    def __init__(self, dim: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.projection = rng.normal(size=(3, dim))
        self.dim = dim

    def encode_text(self, texts, templates=None):
        vectors = np.stack([np.random.default_rng(len(t) * 7 + ord(t[0])).normal(size=self.dim)
                            for t in texts])  # fmt: skip
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def dense_tokens(self, images):
        patches, globals_ = [], []
        for image in images:
            h, w = image.shape[0] // 16, image.shape[1] // 16
            cells = image[: h * 16, : w * 16].reshape(h, 16, w, 16, 3).mean(axis=(1, 3)) / 255
            patches.append(cells @ self.projection + 0.5)
            globals_.append(image.reshape(-1, 3).mean(0) / 255 @ self.projection)
        return np.stack(patches).astype(np.float32), np.stack(globals_).astype(np.float32)


@pytest.fixture
def upsampler(tmp_path):
    module = SimFeatUp(8)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    path = tmp_path / "simfeatup.ckpt"
    torch.save({"state_dict": to_checkpoint(module.eval())}, path)
    yield load_featup(path, device="cpu"), module.eval()
    clear_loaded()


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_features_are_upsampled_then_normalised_then_compared(upsampler):
    loaded, module = upsampler
    double = PatchImageText()
    engine = DenseClip(double, templates=("{}",), short_side=None, crop=32, stride=32,
                       upsampler=loaded)  # fmt: skip
    image = _image(32, 32)
    got = engine.name_logits(image, VOCABULARY)

    # by hand: SegEarth-OV's forward_feature for one window
    patches, global_token = double.dense_tokens([image])
    features = torch.from_numpy(patches).permute(0, 3, 1, 2)
    mean = torch.tensor([122.771, 116.746, 104.094]).view(1, 3, 1, 1)
    std = torch.tensor([68.501, 66.632, 70.323]).view(1, 3, 1, 1)
    guidance = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - mean) / std
    with torch.no_grad():
        up = module(features, guidance)[0]  # (8, 32, 32)
    up = up / up.norm(dim=0, keepdim=True)
    text = torch.from_numpy(double.encode_text(["building", "road", "water"]))
    cls = torch.from_numpy(global_token[0])
    cls = cls / cls.norm()
    expected = torch.einsum("dhw,nd->nhw", up, text) - 0.3 * (text @ cls)[:, None, None]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)

    # and it is not what bilinear upsampling gives
    plain = DenseClip(double, templates=("{}",), short_side=None, crop=32, stride=32)
    assert np.abs(plain.name_logits(image, VOCABULARY) - got).max() > 1e-2
    assert engine.configuration["upsampler"] == loaded.name
    assert loaded.name.startswith("simfeatup:")
    assert plain.configuration["upsampler"] == "bilinear"
    assert engine.name == "dense-clip:patch-double+" + loaded.name


def test_sliding_windows_with_an_upsampler_cover_the_image(upsampler):
    loaded, _ = upsampler
    engine = DenseClip(PatchImageText(), templates=("{}",), short_side=None, crop=32,
                       stride=16, upsampler=loaded)  # fmt: skip
    probabilities = engine.probabilities(_image(48, 40, seed=1), VOCABULARY)
    assert probabilities.shape == (3, 48, 40) and np.isfinite(probabilities).all()


def test_an_upsampler_for_other_features_is_refused(upsampler):
    loaded, _ = upsampler
    engine = DenseClip(PatchImageText(dim=6), templates=("{}",), short_side=None, crop=32,
                       stride=32, upsampler=loaded)  # fmt: skip
    with pytest.raises(InputError, match="8-channel features but the image-text model gives 6"):
        engine.name_logits(_image(32, 32), VOCABULARY)
