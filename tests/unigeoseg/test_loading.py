"""UniGeoSeg resolves offline like the other models and loads only complete checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from terramask.errors import ModelLoadError, ModelNotFoundError
from terramask.models.registry import KNOWN_MODELS, resolve_model
from terramask.models.unigeoseg import load_unigeoseg
from terramask.models.unigeoseg.checkpoint import save_checkpoint, seg_token_id


def _lay_out_cache(cache, repo_id, folder, revision="0" * 40):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_the_alias_resolves_to_the_released_checkpoint_in_the_offline_cache(
    offline_hub, tiny_unigeoseg_folder
):
    assert KNOWN_MODELS["unigeoseg"].hub_id == "nishuo1999/UniGeoSeg"
    snapshot = _lay_out_cache(offline_hub, "nishuo1999/UniGeoSeg", tiny_unigeoseg_folder)
    resolved = resolve_model("unigeoseg", kind="unigeoseg")
    assert (resolved.path, resolved.family, resolved.origin) == (snapshot, "unigeoseg", "cache")
    model = load_unigeoseg("unigeoseg", device="cpu")
    assert model.name == "unigeoseg" and load_unigeoseg() is model  # the default, loaded once
    assert model.load_report.ok and not model.load_report.missing


def test_a_missing_checkpoint_is_one_paragraph_saying_how_to_get_it(offline_hub):
    with pytest.raises(ModelNotFoundError) as info:
        load_unigeoseg(device="cpu")
    message = str(info.value)
    assert "\n" not in message and "nishuo1999/UniGeoSeg" in message
    assert "terramask models pull nishuo1999/UniGeoSeg" in message and "HF_HUB_OFFLINE" in message


def test_a_folder_without_weights_or_of_another_kind_is_refused(
    offline_hub, tiny_unigeoseg_folder, tmp_path
):
    empty = tmp_path / "no-weights"
    shutil.copytree(tiny_unigeoseg_folder, empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="holds no weights"):
        load_unigeoseg(empty, device="cpu")
    with pytest.raises(ModelLoadError, match="UniGeoSeg checkpoint"):
        resolve_model(str(tiny_unigeoseg_folder), kind="segmenter")


def test_a_checkpoint_with_a_weight_missing_never_runs(
    offline_hub, tiny_unigeoseg_folder, tmp_path
):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_unigeoseg_folder, broken)
    state = load_file(str(broken / "model.safetensors"))
    del state["global_latents"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="global_latents"):
        load_unigeoseg(broken, device="cpu")


def test_the_seg_id_is_the_first_id_of_seg_as_the_released_code_takes_it(tiny_unigeoseg):
    tokenizer = tiny_unigeoseg.tokenizer
    assert tiny_unigeoseg.seg_id == tokenizer.convert_tokens_to_ids("[SEG]")

    class Pieces:
        def encode(self, text, add_special_tokens=False):
            return [91, 50, 93] if text == "[SEG]" else []

    assert seg_token_id(Pieces()) == 91


def test_a_saved_checkpoint_loads_back_to_the_same_answers(tiny_unigeoseg, tmp_path, offline_hub):
    folder = save_checkpoint(tiny_unigeoseg.model, tiny_unigeoseg.tokenizer, tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava_phi" and config["mm_projector_type"] == "SparseConv_1"
    again = load_unigeoseg(folder, device="cpu", dtype="fp32")
    image = np.random.default_rng(9).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    a = tiny_unigeoseg.segment(image, "the harbour")
    b = again.segment(image, "the harbour")
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    assert again.model.lm_head.weight.dtype == torch.float32
