"""The released checkpoint's key names load through the explicit key table, or nothing loads."""

from __future__ import annotations

import json

import pytest
import torch

from terramask.errors import ModelLoadError
from terramask.models.unigeoseg.checkpoint import build_model
from terramask.models.unigeoseg.config import UniGeoSegConfig
from terramask.models.unigeoseg.keys import (
    UNUSED_RELEASED,
    convert_released,
    key_table,
    to_released,
    unused_reason,
)
from terramask.testing.tiny_unigeoseg import released_state_dict, tiny_config


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def model(config):
    return build_model(config)


@pytest.fixture(scope="module")
def released(config):
    return released_state_dict(config, seed=7)


def test_every_released_weight_is_used_or_named_unused(model, config, released):
    converted, report = convert_released(released, model, config)
    assert report.ok and not report.missing and not report.unexpected and not report.misshaped
    assert set(converted) == set(model.state_dict()) and report.loaded == len(converted)
    blocks = sum(config.swin_depths)
    assert report.checked_buffers == blocks  # every Swin relative-position index compared
    expected_unused = {
        k for k in released if unused_reason(k) is not None
    }
    assert set(report.unused) == expected_unused
    # what the released forward never reads, by name: 3 + 2 + 2 + 1 + 2 + 1 + 4 + 2 * 2 * 2
    assert len(expected_unused) == 3 + 2 + 2 + 1 + 2 + 1 + 4 + 8
    used = len(released) - len(expected_unused) - blocks
    assert used == len({rule.released for rule in key_table(config)})
    model.load_state_dict(converted, strict=True)


def test_fused_projections_are_split_into_q_k_v(model, config, released):
    converted, _ = convert_released(released, model, config)
    qkv = released["model.vision_tower.layers.0.blocks.1.attn.qkv.weight"]
    c = config.vision_channels[0]
    ours = "vision.swin.encoder.layers.0.blocks.1.attention"
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(converted[f"{ours}.{name}.weight"], qkv[i * c : (i + 1) * c])
    in_bias = released["predictor.transformer_self_attention_layers.2.self_attn.in_proj_bias"]
    h = config.mask_hidden
    got = converted["mask_decoder.decoder.layers.2.self_attn.v_proj.bias"]
    assert torch.equal(got, in_bias[2 * h :])
    # the cross-attention keeps nn.MultiheadAttention's fused layout
    assert torch.equal(
        converted["mask_decoder.decoder.layers.0.cross_attn.in_proj_weight"],
        released["predictor.transformer_cross_attention_layers.0.multihead_attn.in_proj_weight"],
    )
    # and the whole table runs backwards to the released names
    back = to_released(converted, config)
    for key, tensor in back.items():
        assert torch.equal(tensor, released[key]), key


def test_a_missing_weight_stops_the_load_naming_it(model, config, released):
    broken = dict(released)
    del broken["intera_fuse.weight"]
    for i in range(config.decoder_layers - 1):
        del broken[f"predictor.transformer_ffn_layers.{i}.linear1.bias"]
    with pytest.raises(ModelLoadError) as info:
        convert_released(broken, model, config, source="/models/x")
    message = str(info.value)
    assert "\n" not in message and "/models/x" in message and "nothing was loaded" in message
    assert "intera_fuse.weight" in message
    assert "predictor.transformer_ffn_layers.*.linear1.bias (x3)" in message
    assert "4 weights UniGeoSeg needs are missing" in message


def test_unknown_and_misshaped_weights_stop_the_load(model, config, released):
    extra = dict(released)
    extra["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(4)  # named unused
    extra["sam_mask_decoder.iou_head.weight"] = torch.zeros(2, 2)
    extra["model.mm_projector.norm1.weight"] = torch.zeros(32, 16, 16)
    with pytest.raises(ModelLoadError) as info:
        convert_released(extra, model, config)
    message = str(info.value)
    assert "1 weights are not UniGeoSeg's (sam_mask_decoder.iou_head.weight)" in message
    assert "model.mm_projector.norm1.weight has [32, 16, 16], needs [32, 4, 4]" in message
    assert "rotary_emb" not in message


def test_a_fused_weight_of_the_wrong_size_is_named_with_its_full_shape(model, config, released):
    broken = dict(released)
    broken["model.vision_tower.layers.2.blocks.0.attn.qkv.weight"] = torch.zeros(90, 32)
    with pytest.raises(ModelLoadError, match=r"attn\.qkv\.weight has \[90, 32\], needs \[96, 32\]"):
        convert_released(broken, model, config)


def test_another_window_size_is_caught_by_the_relative_position_index(model, config, released):
    from terramask.testing.tiny_unigeoseg import _relative_position_index

    broken = dict(released)
    broken["model.vision_tower.layers.1.blocks.0.attn.relative_position_index"] = (
        _relative_position_index(3)
    )
    with pytest.raises(ModelLoadError, match="another window size"):
        convert_released(broken, model, config)


def test_a_psalm_style_model_without_tate_gets_a_hint(model, config, released):
    own = ("intera_", "enhanced_reasoning_pooling", "global_latents")
    other = {k: v for k, v in released.items() if not k.startswith(own)}
    with pytest.raises(ModelLoadError, match="SegEarth-R1"):
        convert_released(other, model, config)


def test_the_unused_list_names_only_modules_the_released_forward_never_calls():
    for pattern, why in UNUSED_RELEASED:
        assert why and pattern
    for key in ("ref_attn.query", "global_latents", "predictor.level_embed.weight",
                "predictor.mask_embed.layers.0.weight", "model.embed_tokens.weight"):  # fmt: skip
        assert unused_reason(key) is None, key
    assert unused_reason("predictor.SEG_proj.layers.1.bias") is not None


def test_the_table_covers_the_released_sizes_without_building_the_model():
    real = UniGeoSegConfig(text={"hidden_size": 2048, "num_hidden_layers": 24})
    rules = key_table(real)
    ours = [r.ours for r in rules]
    assert len(ours) == len(set(ours))
    assert sum(r.parts == 3 for r in rules) == 2 * 3 * (24 + 9)  # Swin-B blocks + 9 layers
    assert sum(r.ours.startswith("language_model.layers.23.") for r in rules) == 14


def test_config_json_must_be_a_unigeoseg_one():
    with pytest.raises(ModelLoadError, match="model_type 'sam'"):
        UniGeoSegConfig.from_checkpoint({"model_type": "sam"})
    base = {"model_type": "llava_phi", "hidden_size": 32}
    with pytest.raises(ModelLoadError, match="MSCC"):
        UniGeoSegConfig.from_checkpoint({**base, "mm_projector_type": "MSCC"})
    with pytest.raises(ModelLoadError, match="large"):
        UniGeoSegConfig.from_checkpoint({**base, "swin_type": "large"})
    released = UniGeoSegConfig.from_checkpoint({**base, "mm_projector_type": "SparseConv_1"})
    assert released.image_size == 512 and released.swin_depths == (2, 2, 18, 2)
    assert released.memory_weight("interactive") == 0.0
    assert released.memory_weight("reasoning") == 0.2
    assert released.image_tokens == 64
    tiny = tiny_config()
    assert UniGeoSegConfig.from_checkpoint(json.loads(json.dumps(tiny.to_checkpoint()))) == tiny
