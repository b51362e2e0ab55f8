"""The explicit key table between the released UniGeoSeg checkpoint and TerraMask's modules.

Every tensor of `UniGeoSegModel` has exactly one rule naming the released key it comes from
(`key_table`); fused tensors of the released code are split by rule (Swin's `attn.qkv` and
the decoder's `nn.MultiheadAttention.in_proj_*` self-attention, as [q; k; v] thirds). Released
keys that the released forward pass never reads are listed by name in `UNUSED_RELEASED`
with the reason; derived buffers (Swin's relative position index) are checked against ours
and dropped. A checkpoint with a key the table does not expect, a key it lacks, or a tensor of
the wrong shape is refused with the full list (`convert_released`): a model never runs on
weights it did not load.

Released names come from MiliLab/UniGeoSeg (`llava_phi.py`, `swin_trans.py`,
`multimodal_projector/builder.py`, `projector.py`) and the PSALM Mask2Former files it loads
(`msdeformattn.py`, `mask2former_transformer_decoder.py`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from terramask.errors import ModelLoadError
from terramask.models.unigeoseg.config import UniGeoSegConfig

_WB = ("weight", "bias")


@dataclass(frozen=True)
class KeyRule:
    """Our tensor `ours` is the released tensor `released`, or its `part`-th of `parts`
    equal slices along the first dimension (a fused [q; k; v] projection)."""

    ours: str
    released: str
    part: int = 0
    parts: int = 1


#: Released keys the released forward pass never reads, with why; they are left out.
UNUSED_RELEASED: tuple[tuple[str, str], ...] = (
    (r"refer_pooling\.(query|proj\.(weight|bias))",
     "`refer_pooling`, an attention pooling the released code builds and never calls"),
    (r"ref_attn\.proj\.(weight|bias)",
     "the projection of `ref_attn`, whose forward only uses its query"),
    (r"reason_norm\.(weight|bias)", "`reason_norm`, built and never called"),
    (r"task_embed\.weight", "`task_embed`, built (twice) and never called"),
    (r"global_projector\.(weight|bias)", "`global_projector`, built and never called"),
    (r"seg_query", "PSALM's 100 learnable SEG queries (unused: `use_seg_query` is False)"),
    (r"seg_query_projector\.(weight|bias)", "the SEG-query projector (unused, as above)"),
    (r"predictor\.(query_feat|query_embed|SEG_query_embed|new_query_embed)\.weight",
     "Mask2Former's learnable queries and query positions (the decoder runs on UniGeoSeg's "
     "one query with zero positions)"),
    (r"predictor\.(SEG_proj|CLASS_proj)\.layers\.\d+\.(weight|bias)",
     "PSALM's class-score heads (no class scores are computed: SEG_embedding is not passed "
     "to the prediction heads)"),
    (r".*rotary_emb\..*", "rotary-embedding caches, recomputed"),
)  # fmt: skip
_UNUSED = [(re.compile(pattern + r"\Z"), why) for pattern, why in UNUSED_RELEASED]
_RELATIVE_INDEX = re.compile(
    r"model\.vision_tower\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_index\Z"
)


def unused_reason(key: str) -> str | None:
    """Why the released forward pass never reads `key` (None: it does, or it is unknown)."""
    for pattern, why in _UNUSED:
        if pattern.match(key):
            return why
    return None


def key_table(config: UniGeoSegConfig) -> list[KeyRule]:
    """One rule per tensor of `UniGeoSegModel(config)`'s state dict."""
    rules: list[KeyRule] = []

    def add(ours: str, released: str, suffixes: tuple[str, ...] = _WB) -> None:
        rules.extend(KeyRule(f"{ours}.{s}", f"{released}.{s}") for s in suffixes)

    def fused(ours: str, released: str, suffixes: tuple[str, str]) -> None:
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            for ours_suffix, released_suffix in zip(_WB, suffixes, strict=True):
                rule = KeyRule(f"{ours}.{name}.{ours_suffix}", f"{released}.{released_suffix}",
                               part=index, parts=3)  # fmt: skip
                rules.append(rule)

    # Phi: the released model keeps PhiModel's own names under `model.`; its LM head has no
    # bias (UniGeoSeg replaces Phi's).
    text = config.text
    add("language_model.embed_tokens", "model.embed_tokens", ("weight",))
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense",
             "mlp.fc1", "mlp.fc2", "input_layernorm"]  # fmt: skip
    if text.get("qk_layernorm"):
        names += ["self_attn.q_layernorm", "self_attn.k_layernorm"]
    for i in range(int(text.get("num_hidden_layers", 24))):
        for name in names:
            add(f"language_model.layers.{i}.{name}", f"model.layers.{i}.{name}")
    add("language_model.final_layernorm", "model.final_layernorm")
    rules.append(KeyRule("lm_head.weight", "lm_head.weight"))

    # Swin-B: Swin-Seg names (timm style) -> transformers' SwinBackbone.
    tower = "model.vision_tower"
    add("vision.swin.embeddings.patch_embeddings.projection", f"{tower}.patch_embed.proj")
    add("vision.swin.embeddings.norm", f"{tower}.patch_embed.norm")
    for i, depth in enumerate(config.swin_depths):
        for j in range(depth):
            ours = f"vision.swin.encoder.layers.{i}.blocks.{j}"
            released = f"{tower}.layers.{i}.blocks.{j}"
            add(f"{ours}.layernorm_before", f"{released}.norm1")
            fused(f"{ours}.attention", f"{released}.attn.qkv", _WB)
            add(f"{ours}.attention.o_proj", f"{released}.attn.proj")
            rules.append(KeyRule(
                f"{ours}.attention.relative_position_bias.relative_position_bias_table",
                f"{released}.attn.relative_position_bias_table",
            ))  # fmt: skip
            add(f"{ours}.layernorm_after", f"{released}.norm2")
            add(f"{ours}.mlp.fc1", f"{released}.mlp.fc1")
            add(f"{ours}.mlp.fc2", f"{released}.mlp.fc2")
        if i < len(config.swin_depths) - 1:
            rules.append(KeyRule(f"vision.swin.encoder.layers.{i}.downsample.reduction.weight",
                                 f"{tower}.layers.{i}.downsample.reduction.weight"))  # fmt: skip
            add(f"vision.swin.encoder.layers.{i}.downsample.norm",
                f"{tower}.layers.{i}.downsample.norm")  # fmt: skip
        add(f"vision.hidden_states_norms.stage{i + 1}", f"{tower}.norm{i}")

    # The projector (SparseConv_1 = Compression_Connector).
    for ours, released in (("conv1", "proj1"), ("norm1", "norm1"), ("conv2", "proj2"),
                           ("norm2", "norm2"), ("fc", "fc")):  # fmt: skip
        add(f"projector.{ours}", f"model.mm_projector.{released}")

    # TATE, the memory and the mask-query path (top-level modules of the released model).
    rules.append(KeyRule("ref_query", "ref_attn.query"))
    rules.append(KeyRule("tate.reason_queries", "enhanced_reasoning_pooling.multi_query"))
    add("tate.reason_proj", "enhanced_reasoning_pooling.functional_proj")
    add("tate.reason_fuse", "enhanced_reasoning_pooling.fusion")
    add("tate.reason_norm", "enhanced_reasoning_pooling.layer_norm")
    add("tate.coord_proj", "intera_coord_project")
    add("tate.coord_fuse", "intera_fuse")
    rules.append(KeyRule("memory.slots", "global_latents"))
    add("mask_query.pooled_proj", "origin_SEG_token_projector")
    add("mask_query.text_proj", "text_projector")
    add("mask_query.vision_proj", "local_project")
    add("mask_query.out", "SEG_token_projector")
    for k in range(config.perceiver_depth):
        ours, released = f"mask_query.perceiver.layers.{k}", f"d_layers.layers.{k}"
        add(f"{ours}.attn.norm_media", f"{released}.0.norm_media")
        add(f"{ours}.attn.norm_latents", f"{released}.0.norm_latents")
        for name in ("to_q", "to_kv", "to_out"):
            rules.append(KeyRule(f"{ours}.attn.{name}.weight", f"{released}.0.{name}.weight"))
        add(f"{ours}.ff.0", f"{released}.1.0")
        rules.append(KeyRule(f"{ours}.ff.1.weight", f"{released}.1.1.weight"))
        rules.append(KeyRule(f"{ours}.ff.3.weight", f"{released}.1.3.weight"))
    add("mask_query.perceiver.norm", "d_layers.norm")

    # The pixel decoder (PSALM's MSDeformAttnPixelDecoder).
    for k in range(3):
        for m in range(2):
            add(f"pixel_decoder.input_projections.{k}.{m}", f"pixel_decoder.input_proj.{k}.{m}")
    rules.append(KeyRule("pixel_decoder.level_embed", "pixel_decoder.transformer.level_embed"))
    for i in range(config.encoder_layers):
        ours = f"pixel_decoder.encoder.layers.{i}"
        released = f"pixel_decoder.transformer.encoder.layers.{i}"
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            add(f"{ours}.self_attn.{name}", f"{released}.self_attn.{name}")
        add(f"{ours}.self_attn_layer_norm", f"{released}.norm1")
        add(f"{ours}.fc1", f"{released}.linear1")
        add(f"{ours}.fc2", f"{released}.linear2")
        add(f"{ours}.final_layer_norm", f"{released}.norm2")
    for m in range(2):
        add(f"pixel_decoder.lateral.{m}", f"pixel_decoder.adapter_1.{m}")
        add(f"pixel_decoder.output.{m}", f"pixel_decoder.layer_1.{m}")
    add("pixel_decoder.mask_projection", "pixel_decoder.mask_features")

    # The mask decoder (PSALM's MultiScaleMaskedTransformerDecoderForOPTPreTrain).
    for i in range(config.decoder_layers - 1):
        ours = f"mask_decoder.decoder.layers.{i}"
        self_attn = f"predictor.transformer_self_attention_layers.{i}"
        cross = f"predictor.transformer_cross_attention_layers.{i}"
        ffn = f"predictor.transformer_ffn_layers.{i}"
        fused(f"{ours}.self_attn", f"{self_attn}.self_attn", ("in_proj_weight", "in_proj_bias"))
        add(f"{ours}.self_attn.out_proj", f"{self_attn}.self_attn.out_proj")
        add(f"{ours}.self_attn_layer_norm", f"{self_attn}.norm")
        for name in ("in_proj_weight", "in_proj_bias"):
            rules.append(KeyRule(f"{ours}.cross_attn.{name}", f"{cross}.multihead_attn.{name}"))
        add(f"{ours}.cross_attn.out_proj", f"{cross}.multihead_attn.out_proj")
        add(f"{ours}.cross_attn_layer_norm", f"{cross}.norm")
        add(f"{ours}.fc1", f"{ffn}.linear1")
        add(f"{ours}.fc2", f"{ffn}.linear2")
        add(f"{ours}.final_layer_norm", f"{ffn}.norm")
    add("mask_decoder.decoder.layernorm", "predictor.decoder_norm")
    for k in range(3):
        add(f"mask_decoder.decoder.mask_predictor.mask_embedder.{k}.0",
            f"predictor.mask_embed.layers.{k}")  # fmt: skip
    rules.append(KeyRule("mask_decoder.level_embed.weight", "predictor.level_embed.weight"))
    return rules


@dataclass
class KeyReport:
    """What a conversion used, left out and found wrong (released key names)."""

    loaded: int = 0
    unused: list[str] = field(default_factory=list)
    checked_buffers: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)


def convert_released(
    released: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    config: UniGeoSegConfig,
    *,
    source: str = "the checkpoint",
) -> tuple[dict[str, torch.Tensor], KeyReport]:
    """The released state dict as `model`'s, through `key_table`.

    Raises:
        ModelLoadError: Any key missing, unexpected or of the wrong shape, all listed.
    """
    ours = model.state_dict()
    table = key_table(config)
    covered = Counter(rule.ours for rule in table)
    if set(covered) != set(ours) or any(n > 1 for n in covered.values()):
        stray = sorted(set(ours) ^ set(covered)) + [k for k, n in covered.items() if n > 1]
        raise RuntimeError(f"the UniGeoSeg key table does not cover the model: {stray[:10]}")
    report = KeyReport()
    converted: dict[str, torch.Tensor] = {}
    expected_keys = {rule.released for rule in table}
    for rule in table:
        if rule.released not in released:
            if rule.released not in report.missing:
                report.missing.append(rule.released)
            continue
        tensor = released[rule.released]
        want = tuple(ours[rule.ours].shape)
        if rule.parts > 1:
            full = (want[0] * rule.parts, *want[1:])
            if tuple(tensor.shape) != full:
                _note_shape(report, rule.released, tensor.shape, full)
                continue
            tensor = tensor.chunk(rule.parts, dim=0)[rule.part]
        elif tuple(tensor.shape) != want:
            _note_shape(report, rule.released, tensor.shape, want)
            continue
        converted[rule.ours] = tensor
    for key, tensor in released.items():
        if key in expected_keys:
            continue
        if unused_reason(key) is not None:
            report.unused.append(key)
            continue
        index = _RELATIVE_INDEX.match(key)
        if index is not None:
            _check_relative_index(report, model, key, tensor, index)
            continue
        report.unexpected.append(key)
    report.loaded = len(converted)
    if not report.ok:
        raise ModelLoadError(_mismatch_message(report, source))
    return converted, report


def _note_shape(report: KeyReport, key: str, has, needs) -> None:
    report.misshaped.append(f"{key} has {list(has)}, needs {list(needs)}")


def _check_relative_index(report, model, key, tensor, match) -> None:
    name = (f"vision.swin.encoder.layers.{match[1]}.blocks.{match[2]}.attention."
            "relative_position_bias.relative_position_index")  # fmt: skip
    try:
        ours = model.get_buffer(name)
    except AttributeError:
        report.unexpected.append(key)
        return
    if tensor.numel() != ours.numel() or not torch.equal(
        tensor.reshape(-1).to(ours.device, ours.dtype), ours.reshape(-1)
    ):
        report.misshaped.append(
            f"{key} (a {list(tensor.shape)} index: another window size than this model's "
            f"{list(ours.shape)} positions)"
        )
    else:
        report.checked_buffers += 1


def _grouped(keys: list[str], limit: int = 12) -> str:
    """Keys with layer indices folded (model.layers.*.mlp.fc1.weight x24), at most `limit`
    groups named and the rest counted."""
    groups = Counter(re.sub(r"\.\d+(?=\.)", ".*", key) for key in keys)
    named = [g if n == 1 else f"{g} (x{n})" for g, n in groups.items()]
    more = len(named) - limit
    return ", ".join(named[:limit]) + (f" and {more} more groups" if more > 0 else "")


def _mismatch_message(report: KeyReport, source: str) -> str:
    said = []
    if report.missing:
        said.append(f"{len(report.missing)} weights UniGeoSeg needs are missing "
                    f"({_grouped(report.missing)})")  # fmt: skip
    if report.unexpected:
        said.append(f"{len(report.unexpected)} weights are not UniGeoSeg's "
                    f"({_grouped(report.unexpected)})")  # fmt: skip
    if report.misshaped:
        said.append(f"{len(report.misshaped)} have the wrong shape ("
                    + "; ".join(report.misshaped[:12])
                    + (f"; and {len(report.misshaped) - 12} more" if len(report.misshaped) > 12
                       else "") + ")")  # fmt: skip
    hint = ""
    if "intera_fuse.weight" in report.missing and "text_projector.weight" not in report.missing:
        hint = (" It looks like another PSALM-style model (PSALM or SegEarth-R1), which has no "
                "task-adaptive text enhancement; UniGeoSeg's checkpoint is nishuo1999/UniGeoSeg.")
    return (
        f"The UniGeoSeg checkpoint in {source} does not match the released model's layout, so "
        "nothing was loaded (TerraMask never runs UniGeoSeg on weights it did not load): "
        + "; ".join(said) + "." + hint + " Point `ModelOptions.unigeoseg` at a complete copy "
        "of nishuo1999/UniGeoSeg (`terramask models pull unigeoseg`) or a folder `terramask "
        "train unigeoseg` wrote."
    )


def to_released(
    state: Mapping[str, torch.Tensor], config: UniGeoSegConfig
) -> dict[str, torch.Tensor]:
    """Our state dict under the released names (fused tensors joined again), for saving a
    checkpoint the same table (and the released code) reads."""
    out: dict[str, list[torch.Tensor | None]] = {}
    for rule in key_table(config):
        slots = out.setdefault(rule.released, [None] * rule.parts)
        slots[rule.part] = state[rule.ours]
    return {
        key: parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # type: ignore[misc]
        for key, parts in out.items()
    }
