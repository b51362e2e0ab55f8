"""Loading: adapter per family, once per process, and broken folders as one-paragraph errors."""

from __future__ import annotations

import re
import shutil

import pytest

from terramask.errors import ModelLoadError
from terramask.models import load_image_text, load_segmenter
from terramask.models.clip import ClipImageText
from terramask.models.sam import SamSegmenter


def test_adapters_by_family(tiny_sam, tiny_clip):
    assert isinstance(load_segmenter(str(tiny_sam["sam_hq"])), SamSegmenter)
    assert isinstance(load_image_text(str(tiny_clip["siglip"])), ClipImageText)


def test_loaded_once_per_folder_device_and_dtype(tiny_sam):
    first = load_segmenter(str(tiny_sam["sam"]), device="cpu")
    assert load_segmenter(str(tiny_sam["sam"]) + "/", device="cpu", dtype="fp32") is first
    assert load_segmenter(str(tiny_sam["sam"]), device="cpu", dtype="bf16") is not first


def _broken_copy(source, target, damage):
    shutil.copytree(source, target)
    damage(target / "model.safetensors")
    return str(target)


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),  # truncated
        lambda f: f.write_bytes(b"this is not a safetensors file"),  # corrupt header
        lambda f: f.unlink(),  # missing weights
    ],
    ids=["truncated", "garbage", "missing"],
)
def test_broken_weights_are_a_load_error_naming_the_folder(tiny_sam, tiny_clip, tmp_path,
                                                           damage):
    folder = _broken_copy(tiny_sam["sam"], tmp_path / "sam", damage)
    with pytest.raises(ModelLoadError) as info:
        load_segmenter(folder)
    message = str(info.value)
    assert folder in message and "\n" not in message and "Traceback" not in message
    folder = _broken_copy(tiny_clip["clip"], tmp_path / "clip", damage)
    with pytest.raises(ModelLoadError, match="clip"):
        load_image_text(folder)


def test_unreadable_config_is_a_load_error(tiny_sam, tmp_path):
    target = tmp_path / "sam"
    shutil.copytree(tiny_sam["sam"], target)
    config = (target / "config.json").read_text()
    (target / "config.json").write_text(config.replace('"hidden_size": 32', '"hidden_size": "x"'))
    with pytest.raises(ModelLoadError, match=re.escape(str(target))):
        load_segmenter(str(target))
