"""Saves tiny random models of the real transformers classes, for tests and `terramask doctor`.

The folders they write look exactly like a hub download (config.json, safetensors, processor
and tokenizer files), so loading them exercises the same code path as a real checkpoint.
Everything is built offline: the tokenizers are trained here on a few sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_SENTENCES = (
    "a photo of a building.", "a satellite image of a road.", "an aerial photo of water.",
    "a bad photo of a tree.", "a photo of the large field next to the river.",
    "the roof of a house, a car park and a ship in the harbour.",
    "itap of a forest. a sculpture of a bridge. a rendering of low vegetation.",
)

SAM_FAMILIES = ("sam", "sam_hq", "sam2")
CLIP_FAMILIES = ("clip", "siglip")


def save_tiny_sam(path: str | Path, family: str = "sam", image_size: int = 128,
                  seed: int = 0) -> Path:
    """A tiny random SamModel / SamHQModel / Sam2Model and its processor, saved to `path`."""
    if family not in SAM_FAMILIES:
        raise ValueError(f"family must be one of {SAM_FAMILIES}, got {family!r}")
    from terramask.models.loader import quiet_progress

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with quiet_progress():
        if family == "sam2":
            _save_tiny_sam2(path, image_size)
        else:
            _save_tiny_sam_v1(path, family, image_size)
    return path


def _spread_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Re-draw weight matrices at unit gain: SAM's own init keeps tiny models' logits near 0,
    which would make masks arbitrary and numerical comparisons in tests meaningless."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                torch.nn.init.xavier_normal_(parameter)
    return model


def _sam_v1_config(family: str, image_size: int):
    from transformers import SamConfig, SamHQConfig

    hidden, out = 32, 32
    vision = dict(
        hidden_size=hidden, output_channels=out, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=16, window_size=4, global_attn_indexes=[1],
        num_pos_feats=out // 2, mlp_dim=64, initializer_range=0.02,
    )
    prompt = dict(hidden_size=out, image_size=image_size, patch_size=16)
    decoder = dict(hidden_size=out, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                   iou_head_hidden_dim=32)
    if family == "sam_hq":
        decoder["vit_dim"] = hidden
        return SamHQConfig(vision_config=vision, prompt_encoder_config=prompt,
                           mask_decoder_config=decoder)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt,
                     mask_decoder_config=decoder)


def _save_tiny_sam_v1(path: Path, family: str, image_size: int) -> None:
    from transformers import SamHQModel, SamHQProcessor, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    config = _sam_v1_config(family, image_size)
    model = _spread_weights((SamHQModel if family == "sam_hq" else SamModel)(config)).eval()
    model.save_pretrained(path)
    low_res = 4 * image_size // 16
    image_processor = SamImageProcessorPil(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": low_res},
        mask_pad_size={"height": low_res, "width": low_res},
    )
    processor_cls = SamHQProcessor if family == "sam_hq" else SamProcessor
    processor_cls(image_processor).save_pretrained(path)


def _save_tiny_sam2(path: Path, image_size: int) -> None:
    from transformers import Sam2Config, Sam2Model

    stride = 4  # patch embedding stride; three query-pool stages halve it three times
    sizes = [[image_size // stride // 2**i] * 2 for i in range(3)]
    hidden = 32
    vision = {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model", "hidden_size": 8, "num_attention_heads": 1,
            "image_size": [image_size, image_size], "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": [8, 16, 32, 64], "num_attention_heads_per_stage": [1, 1, 2, 2],
            "window_size_per_stage": [4, 4, 4, 4], "global_attention_blocks": [3],
            "window_positional_embedding_background_size": [4, 4],
        },
        "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": sizes,
        "fpn_hidden_size": hidden,
    }
    prompt = {"hidden_size": hidden, "image_size": image_size, "patch_size": 16}
    decoder = {"hidden_size": hidden, "mlp_dim": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "iou_head_hidden_dim": 32}
    config = Sam2Config(vision_config=vision, prompt_encoder_config=prompt,
                        mask_decoder_config=decoder)
    _spread_weights(Sam2Model(config)).eval().save_pretrained(path)
    # Sam2ImageProcessor needs torchvision to be instantiated, so its config is written as
    # the real class would write it; the adapter reads the same keys when it falls back.
    processor = {
        "image_processor_type": "Sam2ImageProcessor", "processor_class": "Sam2Processor",
        "do_resize": True, "size": {"height": image_size, "width": image_size},
        "mask_size": {"height": 4 * image_size // 16, "width": 4 * image_size // 16},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    (path / "processor_config.json").write_text(
        json.dumps({"processor_class": "Sam2Processor", "point_pad_value": -10,
                    "target_size": image_size}, indent=2))


def save_tiny_clip(path: str | Path, family: str = "clip", seed: int = 0) -> Path:
    """A tiny random CLIPModel / SiglipModel with an offline-trained tokenizer, saved to `path`."""
    if family not in CLIP_FAMILIES:
        raise ValueError(f"family must be one of {CLIP_FAMILIES}, got {family!r}")
    from terramask.models.loader import quiet_progress

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with quiet_progress():
        if family == "clip":
            _save_tiny_clip(path)
        else:
            _save_tiny_siglip(path)
    return path


def _train_clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE with CLIP's word-end suffix, trained on a few sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator([s.lower() for s in _SENTENCES], trainer)
    data = json.loads(tok.to_str())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in data["model"]["merges"]]
    vocab = dict(data["model"]["vocab"])
    # CLIP marks the end of every word; make sure each byte also exists in word-final form.
    for char in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(char + "</w>", len(vocab))
    return vocab, merges


def _save_tiny_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab, merges = _train_clip_bpe()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    model.eval().save_pretrained(path)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


def _save_tiny_siglip(path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    # SiglipTokenizer needs sentencepiece, which a test machine may lack; the adapter only
    # relies on AutoTokenizer, so a tokenizers-backed WordPiece stands in for it.
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"],
                                        show_progress=False)
    tok.train_from_iterator(list(_SENTENCES), trainer)
    # Like SigLIP's own tokenizer, end every text with </s>.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>", model_max_length=16)
    text = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=None)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval().save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    tokenizer.save_pretrained(path)


def save_tiny_sam3(path: str | Path, seed: int = 0) -> Path:
    """A tiny random Sam3Model with an offline CLIP-style tokenizer and its processor configs.

    112-px input, 14-px patches (an 8x8 grid; the real model sees 1008 px as 72x72), eight
    object queries; masks and the semantic map come out at 32x32, four times the grid, as
    the real model's 288x288. Sam3ImageProcessor needs torchvision, so its config is written
    as the real class writes it; the adapter reads the same keys when it falls back.
    """
    from transformers import Sam3Config, Sam3Model

    from terramask.models.loader import quiet_progress

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer, detector = _tiny_sam3_detector()
    config = Sam3Config(**detector)
    with quiet_progress():
        _spread_weights(Sam3Model(config)).eval().save_pretrained(path)
        tokenizer.save_pretrained(path)
    _write_sam3_processor(path)
    return path


def save_tiny_sam3_video(path: str | Path, seed: int = 0) -> Path:
    """A tiny random Sam3VideoModel: SAM 3's detector and its interactive tracker, as the real
    facebook/sam3 folder holds them (model_type sam3_video), with the same tokenizer and
    processor files as `save_tiny_sam3`.

    `Sam3Model` (text prompts) and `Sam3TrackerModel` (clicks) both load from it. The weights
    are written under the real checkpoint's names (`detector_model.*`, `tracker_model.*`,
    `tracker_neck.*`); transformers' own save_pretrained would nest the tracker's as
    `tracker_model.tracker_model.*`, which Sam3TrackerModel then cannot find.
    """
    from safetensors.torch import save_model
    from transformers import Sam3VideoConfig, Sam3VideoModel
    from transformers.models.sam3_tracker_video import Sam3TrackerVideoConfig

    from terramask.models.loader import quiet_progress

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer, detector = _tiny_sam3_detector()
    hidden = detector["vision_config"]["fpn_hidden_size"]
    image_size = detector["vision_config"]["backbone_config"]["image_size"]
    grid = image_size // detector["vision_config"]["backbone_config"]["patch_size"]
    tracker = Sam3TrackerVideoConfig(
        image_size=image_size,
        vision_config=dict(detector["vision_config"], model_type="sam3_vision_model"),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=image_size,
                                   patch_size=image_size // grid),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_hidden_layers=2,
                                 num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=16,
        mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
    )
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker)
    with quiet_progress():
        model = _spread_weights(Sam3VideoModel(config)).eval()
        config.save_pretrained(path)
        save_model(model, str(path / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(path)
    _write_sam3_processor(path)
    return path


_SAM3_IMAGE, _SAM3_PATCH = 112, 14


def _tiny_sam3_detector():
    """(tokenizer, Sam3Config keyword arguments) of the tiny SAM 3 detector."""
    from transformers import CLIPTokenizer

    image_size, patch, hidden, max_text = _SAM3_IMAGE, _SAM3_PATCH, 32, 32
    vocab, merges = _train_clip_bpe()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_text)
    grid = image_size // patch
    vit = dict(
        model_type="sam3_vit_model", hidden_size=hidden, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=patch,
        window_size=4, global_attn_indexes=[1], pretrain_image_size=image_size // 2,
    )
    vision = dict(backbone_config=vit, fpn_hidden_size=hidden,
                  backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2])
    text = dict(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=64,
                projection_dim=hidden, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=max_text, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    small = dict(hidden_size=hidden, num_attention_heads=2, intermediate_size=64)
    detector = dict(
        vision_config=vision, text_config=text,
        geometry_encoder_config=dict(small, num_layers=1),
        detr_encoder_config=dict(small, num_layers=1),
        detr_decoder_config=dict(small, num_layers=2, num_queries=8),
        mask_decoder_config=dict(hidden_size=hidden, num_attention_heads=2),
    )
    return tokenizer, detector


def _write_sam3_processor(path: Path) -> None:
    image_size, grid = _SAM3_IMAGE, _SAM3_IMAGE // _SAM3_PATCH
    processor = {
        "image_processor_type": "Sam3ImageProcessor", "processor_class": "Sam3Processor",
        "do_resize": True, "size": {"height": image_size, "width": image_size},
        "mask_size": {"height": 4 * grid, "width": 4 * grid}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    (path / "processor_config.json").write_text(
        json.dumps({"processor_class": "Sam3Processor", "point_pad_value": -10,
                    "target_size": image_size}, indent=2))


QWEN_VL_FAMILIES = ("qwen2_5_vl", "qwen3_vl")

_QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# The shape of Qwen's own template for one turn: text and image parts, the image as
# <|vision_start|><|image_pad|><|vision_end|> for the processor (or TerraMask) to expand.
_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen_vl(path: str | Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A tiny random Qwen2.5-VL / Qwen3-VL with an offline BPE tokenizer and chat template.

    Two-layer text and vision towers of width 32; the image processor keeps Qwen's patch
    size (14 for 2.5, 16 for 3) and 2×2 merge but caps images at 64 merged patches, so a
    question costs a fraction of a second on a CPU. Its replies are random text.
    """
    if family not in QWEN_VL_FAMILIES:
        raise ValueError(f"family must be one of {QWEN_VL_FAMILIES}, got {family!r}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from terramask.models.loader import quiet_progress

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(_QWEN_SPECIAL), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        [*_SENTENCES, '{"bbox": [12, 40, 118, 96], "prompt": "building"}', "system user"],
        trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=8192)
    tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIAL}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        # head_dim 16 = 2 × (2 + 3 + 3): temporal, height and width rotary sections.
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "mrope_section": [2, 3, 3]},
    )
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"])
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        patch = 14
        vision.update(patch_size=patch, window_size=112, fullatt_block_indexes=[1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
        model = Qwen2_5_VLForConditionalGeneration(config)
    else:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        patch = 16
        text.update(head_dim=16)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision.update(patch_size=patch, num_position_embeddings=64, deepstack_visual_indexes=[1])
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    factor = 2 * patch
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=4 * factor * factor, max_pixels=64 * factor * factor, patch_size=patch,
        merge_size=2, temporal_patch_size=2)
    with quiet_progress():
        model.eval().save_pretrained(path)
        tokenizer.save_pretrained(path)
        image_processor.save_pretrained(path)
    return path
