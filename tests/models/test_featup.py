"""SimFeatUp: the joint-bilateral architecture SegEarth-OV applies to CLIP features, recomputed
here with unfolded windows; random weights saved as a released-style checkpoint and loaded
through the same path; every unmatched or mis-shaped tensor listed; paths, folders, hub ids."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramask.errors import InputError, ModelLoadError, ModelNotFoundError
from terramask.models.featup import (
    FeatureUpsampler,
    SimFeatUp,
    key_table,
    load_featup,
    load_simfeatup,
    to_checkpoint,
)
from terramask.models.loader import clear_loaded

#: The tensors SegEarth-OV's released checkpoint (xclip_jbu_one_million_aid.ckpt, CLIP
#: ViT-B/16) must hold: its `JBUOne(512)`'s state dict under "upsampler.", which SegEarth-OV
#: loads strictly after stripping that prefix (simfeatup_dev/upsamplers.py,
#: segearth_segmentor.py).
RELEASED_JBU_ONE = {
    "upsampler.up.range_temp": (),
    "upsampler.up.sigma_spatial": (),
    "upsampler.up.range_proj.0.weight": (32, 3, 1, 1),
    "upsampler.up.range_proj.0.bias": (32,),
    "upsampler.up.range_proj.3.weight": (32, 32, 1, 1),
    "upsampler.up.range_proj.3.bias": (32,),
    "upsampler.up.fixup_proj.0.weight": (121, 124, 1, 1),
    "upsampler.up.fixup_proj.0.bias": (121,),
    "upsampler.up.fixup_proj.3.weight": (121, 121, 1, 1),
    "upsampler.up.fixup_proj.3.bias": (121,),
    "upsampler.fixup_proj.1.weight": (512, 512, 1, 1),
    "upsampler.fixup_proj.1.bias": (512,),
}


@pytest.fixture(autouse=True)
def _forget_loaded():
    yield
    clear_loaded()


def randomised(module: SimFeatUp, seed: int = 0) -> SimFeatUp:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def save_released_style(module: SimFeatUp, path) -> None:
    """As SegEarth-OV's release: a Lightning checkpoint, weights under `state_dict`."""
    torch.save({"epoch": 7, "global_step": 70, "state_dict": to_checkpoint(module),
                "optimizer_states": [], "lr_schedulers": []}, path)  # fmt: skip


# ---------------------------------------------------------------------- the architecture


def jbu_step_by_unfold(step_weights: dict, radius: int, source, guidance):
    """One JBU step written from its description with unfolded windows (as FeatUp's python
    fallback does), from raw weights: range kernel, spatial kernel, fix-up, adaptive conv."""
    d = 2 * radius + 1
    b, _, gh, gw = guidance.shape

    def conv(x, name):
        return F.conv2d(x, step_weights[name + ".weight"], step_weights[name + ".bias"])

    keys = conv(F.gelu(conv(guidance, "range_proj.0")), "range_proj.3")
    padded = F.pad(keys, [radius] * 4, mode="reflect")
    windows = F.unfold(padded, d).reshape(b, keys.shape[1], d * d, gh, gw)
    similarity = (windows * keys[:, :, None]).sum(1)
    temperature = step_weights["range_temp"].exp().clamp(1e-4, 1e4)
    range_kernel = torch.softmax(temperature * similarity, dim=1)
    offsets = torch.linspace(-1, 1, d)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    spatial = torch.exp(-(dx**2 + dy**2) / (2 * step_weights["sigma_spatial"] ** 2))
    kernel = range_kernel * spatial.reshape(1, d * d, 1, 1)
    kernel = kernel / kernel.sum(1, keepdim=True).clamp(min=1e-7)
    fix = conv(F.gelu(conv(torch.cat([kernel, guidance], 1), "fixup_proj.0")), "fixup_proj.3")
    kernel = kernel + 0.1 * fix
    hr = F.interpolate(source, (gh, gw), mode="bicubic", align_corners=False)
    hr = F.pad(hr, [radius] * 4, mode="reflect")
    patches = F.unfold(hr, d).reshape(b, source.shape[1], d * d, gh, gw)
    return (patches * kernel[:, None]).sum(2)


def simfeatup_by_unfold(weights: dict, variant: str, features, guidance):
    radius, names = (5, ["up"] * 4) if variant == "jbu_one" else (3, ["up1", "up2", "up3", "up4"])
    for name in names:
        step = {k[len(name) + 1 :]: v for k, v in weights.items() if k.startswith(name + ".")}
        h, w = features.shape[-2:]
        small = F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w))
        features = jbu_step_by_unfold(step, radius, features, small)
    fix = F.conv2d(features, weights["fixup_proj.1.weight"], weights["fixup_proj.1.bias"])
    return features + 0.1 * fix


@pytest.mark.parametrize("variant", ["jbu_one", "jbu_stack"])
def test_forward_is_the_joint_bilateral_upsampler_16x(variant):
    module = randomised(SimFeatUp(8, variant), seed=1)
    weights = {k[len("upsampler.") :]: v for k, v in to_checkpoint(module).items()}
    features = torch.randn(2, 8, 3, 4, generator=torch.Generator().manual_seed(2))
    guidance = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = module(features, guidance)
        expected = simfeatup_by_unfold(weights, variant, features, guidance)
    assert got.shape == (2, 8, 48, 64) and module.factor == 16
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_key_table_is_the_released_checkpoints():
    table = key_table("jbu_one", 512)
    assert {"upsampler." + k: shape for k, (_, shape) in table.items()} == RELEASED_JBU_ONE
    ours = SimFeatUp(512).state_dict()
    assert sorted(name for name, _ in table.values()) == sorted(ours)
    assert all(tuple(ours[name].shape) == shape for name, shape in table.values())


# ---------------------------------------------------------------------- loading


def test_random_weights_round_trip_through_a_released_style_checkpoint(tmp_path):
    module = randomised(SimFeatUp(16), seed=4)
    path = tmp_path / "xclip_jbu_one_million_aid.ckpt"
    save_released_style(module, path)
    upsampler = load_featup(path, device="cpu")
    assert isinstance(upsampler, FeatureUpsampler)
    assert upsampler.variant == "jbu_one" and upsampler.feat_dim == 16
    assert load_featup(str(path), device="cpu") is upsampler  # loaded once per process
    assert load_featup(upsampler) is upsampler
    for name, value in module.state_dict().items():
        torch.testing.assert_close(upsampler.module.state_dict()[name], value)
    features = torch.randn(1, 16, 2, 3)
    crops = [np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)]
    guidance = upsampler.guidance(crops)
    mean = torch.tensor([122.771, 116.746, 104.094]).view(1, 3, 1, 1)
    std = torch.tensor([68.501, 66.632, 70.323]).view(1, 3, 1, 1)
    pixels = torch.from_numpy(crops[0]).permute(2, 0, 1)[None].float()
    torch.testing.assert_close(guidance, (pixels - mean) / std)
    with torch.no_grad():
        torch.testing.assert_close(upsampler(features, crops), module(features, guidance))
    with pytest.raises(InputError, match="16-channel"):
        upsampler(torch.randn(1, 8, 2, 3), crops)


def test_bare_state_dicts_with_or_without_the_prefix_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    module = randomised(SimFeatUp(8, "jbu_stack"), seed=5)
    prefixed = to_checkpoint(module)
    bare = {k[len("upsampler.") :]: v for k, v in prefixed.items()}
    torch.save(bare, tmp_path / "bare.pth")
    save_file({k: v.contiguous() for k, v in prefixed.items()}, tmp_path / "w.safetensors")
    for name in ("bare.pth", "w.safetensors"):
        loaded = load_simfeatup(tmp_path / name)
        assert loaded.variant == "jbu_stack"
        for key, value in module.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value)


def test_a_load_that_leaves_a_tensor_unmatched_or_misshaped_lists_them_all(tmp_path):
    weights = to_checkpoint(randomised(SimFeatUp(8)))
    del weights["upsampler.up.range_proj.3.bias"]
    weights["upsampler.up.extra.weight"] = torch.zeros(3)
    weights["upsampler.up.fixup_proj.0.weight"] = torch.zeros(121, 121, 1, 1)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": weights}, path)
    with pytest.raises(ModelLoadError) as info:
        load_featup(path, device="cpu")
    message = str(info.value)
    assert "missing: upsampler.up.range_proj.3.bias" in message
    assert "not SimFeatUp's: upsampler.up.extra.weight" in message
    assert "upsampler.up.fixup_proj.0.weight (121, 121, 1, 1) (expected (121, 124, 1, 1))" in (
        message)  # fmt: skip
    assert "nothing was loaded" in message and "\n" not in message


def test_files_that_are_not_simfeatup_checkpoints_are_named(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not be read as tensors"):
        load_featup(tmp_path / "junk.ckpt", device="cpu")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelLoadError, match="not a SimFeatUp checkpoint"):
        load_featup(tmp_path / "other.ckpt", device="cpu")


def test_folders_must_hold_one_checkpoint_and_missing_paths_say_where(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    save_released_style(randomised(SimFeatUp(8)), folder / "a.ckpt")
    assert load_featup(folder, device="cpu").feat_dim == 8
    save_released_style(randomised(SimFeatUp(8)), folder / "b.ckpt")
    with pytest.raises(ModelNotFoundError, match=r"exactly one checkpoint.*a\.ckpt, b\.ckpt"):
        load_featup(folder, device="cpu")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_featup(tmp_path / "nowhere.ckpt", device="cpu")


def test_hub_ids_come_from_the_cache_first_and_offline_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_featup("someone/simfeatup", device="cpu")
    assert "offline mode is on" in str(info.value) and str(tmp_path / "hub") in str(info.value)

    # a cached snapshot, laid out as huggingface_hub stores it
    repo = tmp_path / "hub" / "models--someone--simfeatup"
    snapshot = repo / "snapshots" / ("0" * 40)
    (snapshot / "weights").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_released_style(randomised(SimFeatUp(8), seed=6), snapshot / "weights" / "jbu.ckpt")
    loaded = load_featup("someone/simfeatup", device="cpu")
    assert loaded.feat_dim == 8 and loaded.name == "simfeatup:someone/simfeatup"
    by_file = load_featup("someone/simfeatup/weights/jbu.ckpt", device="cpu")
    assert by_file.feat_dim == 8
    assert os.environ["HF_HUB_OFFLINE"] == "1"
