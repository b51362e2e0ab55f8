"""open_clip checkpoints: file naming and the message when the optional package is missing.

Loading real open_clip models cannot be tested here: open_clip needs torchvision, which is
not installable beside this CPU torch.
"""

from __future__ import annotations

import importlib.util

import pytest

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


@pytest.mark.skip(reason="open_clip needs torchvision, which cannot be installed beside this "
                         "CPU torch; no open_clip weights can be downloaded here either")
def test_open_clip_model_end_to_end():
    """Would load RemoteCLIP ViT-B/32 and check encode_text/encode_image/patch_tokens shapes."""
