"""A tiny UniGeoSeg checkpoint in the released layout, for tests and `terramask doctor`.

`released_state_dict` writes the tensors the released code's modules hold (MiliLab/UniGeoSeg
`llava_phi.py` with PSALM's Swin, projector and Mask2Former files), by their released names and
at a tiny configuration's shapes, including the modules the released forward never reads and
Swin's relative-position buffers. It is written from the released module structure on its
own, not from TerraMask's key table, so loading it checks that table. `save_tiny_unigeoseg`
puts it in a folder with config.json (`model_type` llava_phi) and an offline-trained
tokenizer, as a hub download would look.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from terramask.models.unigeoseg.config import CONFIG_KEY, UniGeoSegConfig

_SENTENCES = (
    "[INST] <<SYS>> You are a helpful language and vision assistant. You are able to understand "
    "the visual content that the user provides, and assist the user with a variety of tasks "
    "using natural language. <</SYS>>",
    "This is an image , Please doing Reasoning Segmentation according to the following "
    "instruction: [/INST] Sure, It is . ",
    "This is an image , Please doing Referring Segmentation according to the following "
    "instruction: Sure.",
    "Please segment the target corresponding to the points [0.25,0.5], [0.75,0.125].",
    "Please segment the target corresponding to the box x0,y0=[0.1,0.2], x1,y1=[0.6,0.9].",
    "which field lies next to the river? the large building on the left of the road.",
    "the roof of a house, a car park and a ship in the harbour; water, forest, bridge.",
)


def tiny_config(vocab_size: int = 400, *, bos: int = 0, eos: int = 0) -> UniGeoSegConfig:
    """Width 32 everywhere, two language layers, a four-stage Swin of width 8 on a 128 canvas."""
    text = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, hidden_act="gelu_new", max_position_embeddings=1024,
        layer_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.5,
        bos_token_id=bos, eos_token_id=eos, qk_layernorm=False, resid_pdrop=0.0,
        embd_pdrop=0.0, attention_dropout=0.0,
    )  # fmt: skip
    return UniGeoSegConfig(
        text=text, image_size=128, swin_embed_dim=8, swin_depths=(2, 1, 1, 1),
        swin_heads=(1, 1, 2, 2), swin_window=4, mask_hidden=32, mask_heads=2, decoder_ffn=64,
        decoder_layers=4, encoder_layers=1, encoder_ffn=64, num_queries=4, query_dim=32,
        perceiver_depth=1, perceiver_heads=2, perceiver_head_dim=8, perceiver_ff_mult=1,
        memory_slots=4, reasoning_queries=4,
    )  # fmt: skip


def tiny_tokenizer():
    """A byte-level BPE with Phi's `<|endoftext|>` and a `[SEG]` token, trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "[SEG]"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(list(_SENTENCES), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=2048,
    )  # fmt: skip


def _relative_position_index(window: int) -> torch.Tensor:
    """Swin's (window², window²) relative-position index, as the released Swin registers it."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


def released_state_dict(config: UniGeoSegConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under every name the released UniGeoSeg checkpoint holds, at `config`'s
    shapes (see the module notes)."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}

    def weight(name: str, *shape: int) -> None:
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        out[name] = torch.randn(*shape, generator=generator) / math.sqrt(fan_in)

    def linear(name: str, out_features: int, in_features: int, bias: bool = True) -> None:
        weight(f"{name}.weight", out_features, in_features)
        if bias:
            out[f"{name}.bias"] = 0.02 * torch.randn(out_features, generator=generator)

    def conv(name: str, out_ch: int, in_ch: int, k: int) -> None:
        weight(f"{name}.weight", out_ch, in_ch, k, k)
        out[f"{name}.bias"] = 0.02 * torch.randn(out_ch, generator=generator)

    def norm(name: str, *shape: int) -> None:
        out[f"{name}.weight"] = 1 + 0.1 * torch.randn(*shape, generator=generator)
        out[f"{name}.bias"] = 0.05 * torch.randn(*shape, generator=generator)

    text = config.text
    d, vocab = config.hidden_size, int(text["vocab_size"])
    # Phi (PhiForCausalLM's `model.`), UniGeoSeg's bias-free LM head
    weight("model.embed_tokens.weight", vocab, d)
    for i in range(int(text["num_hidden_layers"])):
        prefix = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "dense"):
            linear(f"{prefix}.self_attn.{proj}", d, d)
        linear(f"{prefix}.mlp.fc1", int(text["intermediate_size"]), d)
        linear(f"{prefix}.mlp.fc2", d, int(text["intermediate_size"]))
        norm(f"{prefix}.input_layernorm", d)
    norm("model.final_layernorm", d)
    linear("lm_head", vocab, d, bias=False)
    # Swin (the released swin_trans.py, under model.vision_tower)
    tower, channels = "model.vision_tower", config.vision_channels
    conv(f"{tower}.patch_embed.proj", channels[0], 3, 4)
    norm(f"{tower}.patch_embed.norm", channels[0])
    window = config.swin_window
    for i, (depth, heads) in enumerate(zip(config.swin_depths, config.swin_heads, strict=True)):
        c = channels[i]
        for j in range(depth):
            block = f"{tower}.layers.{i}.blocks.{j}"
            norm(f"{block}.norm1", c)
            out[f"{block}.attn.relative_position_bias_table"] = 0.02 * torch.randn(
                (2 * window - 1) ** 2, heads, generator=generator
            )
            out[f"{block}.attn.relative_position_index"] = _relative_position_index(window)
            linear(f"{block}.attn.qkv", 3 * c, c)
            linear(f"{block}.attn.proj", c, c)
            norm(f"{block}.norm2", c)
            linear(f"{block}.mlp.fc1", 4 * c, c)
            linear(f"{block}.mlp.fc2", c, 4 * c)
        if i < 3:
            linear(f"{tower}.layers.{i}.downsample.reduction", 2 * c, 4 * c, bias=False)
            norm(f"{tower}.layers.{i}.downsample.norm", 4 * c)
        norm(f"{tower}.norm{i}", c)
    # projector (SparseConv_1)
    grid = config.grid
    conv("model.mm_projector.proj1", d, channels[3], 3)
    norm("model.mm_projector.norm1", d, grid, grid)
    conv("model.mm_projector.proj2", d, d, 3)
    norm("model.mm_projector.norm2", d, grid // 2, grid // 2)
    conv("model.mm_projector.fc", d, d, 1)
    # PSALM's learnable SEG queries (initial_mask_module)
    weight("seg_query", config.num_queries, d)
    # pixel decoder (MSDeformAttnPixelDecoder)
    h, heads = config.mask_hidden, config.mask_heads
    for k, c in enumerate(channels[1:][::-1]):
        conv(f"pixel_decoder.input_proj.{k}.0", h, c, 1)
        norm(f"pixel_decoder.input_proj.{k}.1", h)
    weight("pixel_decoder.transformer.level_embed", 3, h)
    for i in range(config.encoder_layers):
        layer = f"pixel_decoder.transformer.encoder.layers.{i}"
        linear(f"{layer}.self_attn.sampling_offsets", heads * 3 * 4 * 2, h)
        linear(f"{layer}.self_attn.attention_weights", heads * 3 * 4, h)
        linear(f"{layer}.self_attn.value_proj", h, h)
        linear(f"{layer}.self_attn.output_proj", h, h)
        norm(f"{layer}.norm1", h)
        linear(f"{layer}.linear1", config.encoder_ffn, h)
        linear(f"{layer}.linear2", h, config.encoder_ffn)
        norm(f"{layer}.norm2", h)
    conv("pixel_decoder.mask_features", h, h, 1)
    conv("pixel_decoder.adapter_1.0", h, channels[0], 1)
    norm("pixel_decoder.adapter_1.1", h)
    conv("pixel_decoder.layer_1.0", h, h, 3)
    norm("pixel_decoder.layer_1.1", h)
    # transformer decoder (MultiScaleMaskedTransformerDecoderForOPTPreTrain)
    for i in range(config.decoder_layers - 1):
        for kind, attn in (("self_attention", "self_attn"), ("cross_attention", "multihead_attn")):
            layer = f"predictor.transformer_{kind}_layers.{i}"
            weight(f"{layer}.{attn}.in_proj_weight", 3 * h, h)
            out[f"{layer}.{attn}.in_proj_bias"] = 0.02 * torch.randn(3 * h, generator=generator)
            linear(f"{layer}.{attn}.out_proj", h, h)
            norm(f"{layer}.norm", h)
        layer = f"predictor.transformer_ffn_layers.{i}"
        linear(f"{layer}.linear1", config.decoder_ffn, h)
        linear(f"{layer}.linear2", h, config.decoder_ffn)
        norm(f"{layer}.norm", h)
    norm("predictor.decoder_norm", h)
    for name, rows in (("query_feat", config.num_queries), ("query_embed", config.num_queries),
                       ("SEG_query_embed", config.num_queries + 1), ("new_query_embed", 1),
                       ("level_embed", 3)):  # fmt: skip
        weight(f"predictor.{name}.weight", rows, h)
    for k in range(3):
        linear(f"predictor.mask_embed.layers.{k}", h, h)
    for head in ("SEG_proj", "CLASS_proj"):
        for k in range(2):
            linear(f"predictor.{head}.layers.{k}", h, h)
    # UniGeoSeg's own modules (top level of the released model)
    q = config.query_dim
    weight("refer_pooling.query", 1, d)
    linear("refer_pooling.proj", d, d)
    linear("text_projector", q, d)
    linear("origin_SEG_token_projector", q, d)
    linear("local_project", q, channels[3])
    linear("SEG_token_projector", h, 2 * q)
    inner = config.perceiver_heads * config.perceiver_head_dim
    for k in range(config.perceiver_depth):
        layer = f"d_layers.layers.{k}"
        norm(f"{layer}.0.norm_media", q)
        norm(f"{layer}.0.norm_latents", q)
        linear(f"{layer}.0.to_q", inner, q, bias=False)
        linear(f"{layer}.0.to_kv", 2 * inner, q, bias=False)
        linear(f"{layer}.0.to_out", q, inner, bias=False)
        norm(f"{layer}.1.0", q)
        linear(f"{layer}.1.1", q * config.perceiver_ff_mult, q, bias=False)
        linear(f"{layer}.1.3", q, q * config.perceiver_ff_mult, bias=False)
    norm("d_layers.norm", q)
    norm("reason_norm", d)
    weight("ref_attn.query", 1, d)
    linear("ref_attn.proj", d, d)
    out["enhanced_reasoning_pooling.multi_query"] = 0.5 * torch.randn(
        config.reasoning_queries, d, generator=generator
    )
    linear("enhanced_reasoning_pooling.functional_proj", d, d)
    linear("enhanced_reasoning_pooling.fusion", d, 2 * d)
    norm("enhanced_reasoning_pooling.layer_norm", d)
    linear("intera_coord_project", d, 4)
    linear("intera_fuse", d, 2 * d)
    weight("task_embed.weight", 3, d)
    out["global_latents"] = 0.5 * torch.randn(config.memory_slots, d, generator=generator)
    linear("global_projector", q, d)
    return out


def released_config_json(config: UniGeoSegConfig) -> dict:
    """config.json as the released checkpoint writes it (PhiConfig fields and the
    multimodal ones), plus the tiny sizes under TerraMask's own key."""
    raw = config.to_checkpoint()
    raw.update({"architectures": ["UniGeoSeg"], "mm_hidden_size": 256, "use_mm_proj": True,
                "mask_decode_train": True, "with_norm": True, "with_layernorm": False,
                "transformers_version": "4.36.2", "torch_dtype": "float32"})  # fmt: skip
    assert CONFIG_KEY in raw
    return raw


def save_tiny_unigeoseg(path: str | Path, seed: int = 0) -> Path:
    """A tiny UniGeoSeg checkpoint folder in the released layout (see the module notes)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = tiny_config(len(tokenizer), bos=eos, eos=eos)
    state = released_state_dict(config, seed)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    (path / "config.json").write_text(json.dumps(released_config_json(config), indent=2))
    tokenizer.save_pretrained(str(path))
    return path


def write_tiny_instruction_data(root: str | Path, *, per_task: int = 2, size: int = 48,
                                split: str = "train", seed: int = 0) -> Path:  # fmt: skip
    """UniGeoSeg-format instruction data (task folders interactive/, ref/, reason/ with
    `{split}.json` lists of {img, mask, json}, as `terramask data build` writes them): a
    bright rectangle on a dark textured image, its mask, and an instruction per task."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = {"interactive": "interactive", "referring": "ref", "reasoning": "reason"}
    for task, name in folders.items():
        base = root / name
        for sub in ("images", "masks", "json"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        entries = []
        for i in range(per_task):
            image = rng.integers(0, 60, (size, size + 8 * (i % 2), 3), dtype=np.uint8)
            h, w = image.shape[:2]
            y0, x0 = rng.integers(2, h // 2), rng.integers(2, w // 2)
            y1, x1 = y0 + h // 3, x0 + w // 3
            image[y0:y1, x0:x1] = 230
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y1, x0:x1] = 255
            stem = f"{task}-{i}"
            Image.fromarray(image).save(base / "images" / f"{stem}.png")
            Image.fromarray(mask).save(base / "masks" / f"{stem}.png")
            if task == "interactive":
                question = (f"Please segment the target corresponding to the box "
                            f"x0,y0=[{x0 / w:.3f},{y0 / h:.3f}], "
                            f"x1,y1=[{x1 / w:.3f},{y1 / h:.3f}].")
                reason = ""
            elif task == "referring":
                question, reason = "the bright roof on the left of the road.", ""
            else:
                question = "which field lies next to the river?"
                reason = "the bright roof is the field next to the river."
            doc = {"question": [question], "reason": [reason]}
            (base / "json" / f"{stem}.json").write_text(json.dumps(doc))
            entries.append({"img": f"images/{stem}.png", "mask": f"masks/{stem}.png",
                            "json": f"json/{stem}.json"})  # fmt: skip
        (base / f"{split}.json").write_text(json.dumps(entries))
    return root


def main(argv: list[str] | None = None) -> None:
    """Write a tiny UniGeoSeg checkpoint (FOLDER/unigeoseg) and tiny instruction data
    (FOLDER/data) for trying `--engine unigeoseg` and `train unigeoseg` without weights."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path, help="writes FOLDER/unigeoseg and FOLDER/data")
    args = parser.parse_args(argv)
    print(save_tiny_unigeoseg(args.folder / "unigeoseg"))
    print(write_tiny_instruction_data(args.folder / "data"))


if __name__ == "__main__":
    main()
