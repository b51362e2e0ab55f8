"""How fast does `terramask train clicks` train a real-size Qwen3-VL-2B, and in how much memory?

Builds a Qwen3-VL with the 2B model's shapes (`QWEN3_VL_2B`: its released `config.json` as we
read it; pass `--config FILE` to use another) and random weights, saves it with a stand-in BPE
tokenizer (trained here on the clicks prompt, so a prompt costs about as many tokens as with
Qwen's own) and Qwen3-VL's image processor, writes a few samples cut from the shared real
imagery (`../shared/data/rs-samples`, Potsdam and Vaihingen label maps as masks), then runs,
each in a process of its own:

- **ours**: `terramask train clicks` end to end (`api.train_clicks`: clicks synthesised with a
  tiny random SAM beforehand and cached, so the run measures the LM training loop: reading
  and encoding each sample, forward/backward through LoRA, AdamW, the log), rank 32 on all
  language-model projections as by default;
- **peer**: the minimal transformers + peft loop a user would write for the same model and
  LoRA: one batch encoded once, then forward/backward/AdamW on it repeatedly.

Both report samples/s over the timed steps (the first step, a warm-up, is left out) and the
process's peak memory (peak RSS on a CPU; `torch.cuda.max_memory_allocated` on a GPU, where
the model trains in bf16). Prints ours/peer ratios.

    .venv/bin/python benchmarks/train_clicks.py [--steps 3] [--batch 1] [--max-side 448]
        [--device cpu|cuda] [--config config.json] [--tiny]

`--tiny` runs the same on a tiny model (a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: Qwen3-VL-2B-Instruct's shapes (text: the Qwen3-1.7B language model; vision: the 24-block
#: ViT with DeepStack taps at 5, 11, 17), as in its released config.json.
QWEN3_VL_2B = {
    "text_config": {
        "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 151936, "max_position_embeddings": 262144, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                            "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    },
    "vision_config": {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "out_hidden_size": 2048, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    },
}  # fmt: skip

SAMPLES = [
    ("potsdam/img_dir/2_10_0_0_512_512.png", "potsdam/ann_dir/2_10_0_0_512_512.png", 2,
     "the buildings"),
    ("potsdam/img_dir/2_10_0_0_512_512.png", "potsdam/ann_dir/2_10_0_0_512_512.png", 5,
     "the cars"),
    ("vaihingen/img_dir/area1_0_0_512_512.png", "vaihingen/ann_dir/area1_0_0_512_512.png", 2,
     "the buildings with red roofs"),
    ("vaihingen/img_dir/area1_0_0_512_512.png", "vaihingen/ann_dir/area1_0_0_512_512.png", 4,
     "the trees along the road"),
]  # fmt: skip


def build_model(folder: Path, config_file: Path | None, tiny: bool) -> Path:
    """A random Qwen3-VL of the 2B shapes (or tiny) with tokenizer, processor and template."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from terramask.testing.tiny_click_models import save_tiny_click_base

    save_tiny_click_base(folder, "qwen3_vl")  # tokenizer, template, tiny weights
    if tiny:
        return folder
    _train_tokenizer(folder)
    tokenizer_ids = json.loads((folder / "config.json").read_text())
    shapes = json.loads(config_file.read_text()) if config_file else QWEN3_VL_2B
    text = dict(shapes["text_config"])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        text[key] = tokenizer_ids["text_config"].get(key)
    ids = {k: tokenizer_ids[k] for k in ("image_token_id", "video_token_id",
                                          "vision_start_token_id", "vision_end_token_id")}
    config = Qwen3VLConfig(text_config=text, vision_config=dict(shapes["vision_config"]),
                           tie_word_embeddings=text.get("tie_word_embeddings", True), **ids)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: half the memory of fp32
    try:
        model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    for name in folder.glob("model*.safetensors"):
        name.unlink()
    model.save_pretrained(folder)
    del model
    processor = Qwen2VLImageProcessorPil(min_pixels=4 * 32 * 32, max_pixels=16384 * 32 * 32,
                                         patch_size=16, merge_size=2, temporal_patch_size=2)
    processor.save_pretrained(folder)
    return folder


def _train_tokenizer(folder: Path) -> None:
    """A 4000-token BPE trained on clicks prompts and answers, so that a prompt is about as
    many tokens as with Qwen's tokenizer (one a word or number, roughly)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from terramask.methods.replies import clicks_prompt

    old = PreTrainedTokenizerFast.from_pretrained(folder)
    special = old.all_special_tokens + [t for t in ("<|vision_start|>", "<|vision_end|>",
                                                     "<|image_pad|>", "<|video_pad|>",
                                                     "<|im_start|>") if t not in
                                         old.all_special_tokens]  # fmt: skip
    corpus = [clicks_prompt(q, frame=f, image_size=(448, 448))
              for q in ("the buildings", "the cars near the road", "which field could flood")
              for f in ("pixel", "norm1000")]  # fmt: skip
    corpus += [json.dumps({"points": [[i, 999 - i], [i // 2, i]], "labels": [1, 0]})
               for i in range(0, 1000, 7)]  # fmt: skip
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    new = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", model_max_length=32768)
    new.chat_template = old.chat_template
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / file).unlink(missing_ok=True)
    new.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"),
                       ("vision_end_token_id", "<|vision_end|>")):  # fmt: skip
        config[key] = new.convert_tokens_to_ids(token)
    for key, token in (("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"),
                       ("pad_token_id", "<|endoftext|>")):  # fmt: skip
        config["text_config"][key] = new.convert_tokens_to_ids(token)
    (folder / "config.json").write_text(json.dumps(config))


def write_data(folder: Path) -> Path:
    from tests.helpers.paths import rs_samples_folder

    root = rs_samples_folder()
    if not root.is_dir():
        raise SystemExit(f"the shared samples are not at {root}")
    lines = [json.dumps({"image": str(root / i), "mask": str(root / m), "value": v,
                         "instruction": t}) for i, m, v, t in SAMPLES]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def _peak() -> dict:
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return {"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                      1)}  # fmt: skip
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_ours(args: argparse.Namespace) -> dict:
    from terramask import api
    from terramask.options import ClickTraining, ModelOptions

    times: list[float] = []
    training = ClickTraining(base=str(args.model), epochs=1000, max_steps=args.steps + 1,
                             batch_size=args.batch, grad_accumulation=1,
                             max_side=args.max_side, clicks=3, val_fraction=0.0,
                             save_every=10_000)  # fmt: skip
    out = Path(args.work) / "ours-adapter"
    shutil.rmtree(out, ignore_errors=True)
    api.train_clicks(args.data, training=training,
                     models=ModelOptions(segmenter=str(args.sam), device=args.device),
                     output=out, on_step=lambda e: times.append(time.perf_counter()))
    timed = times[-1] - times[0]
    return {"samples_per_s": round(args.steps * args.batch / timed, 4),
            "s_per_step": round(timed / args.steps, 2), **_peak()}


def run_peer(args: argparse.Namespace) -> dict:
    import numpy as np
    import peft
    import torch
    from PIL import Image

    from terramask.methods.replies import clicks_prompt
    from terramask.models.mllm.images import fit_long_side
    from terramask.models.registry import resolve_model
    from terramask.options import LORA_TARGETS
    from terramask.train.clicks import collate

    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))  # fmt: skip
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    from transformers import Qwen3VLForConditionalGeneration

    resolved = resolve_model(str(args.model), kind="mllm")
    model = Qwen3VLForConditionalGeneration.from_pretrained(resolved.path, dtype=dtype)
    model.requires_grad_(False)
    names = "|".join(LORA_TARGETS)
    config = peft.LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, bias="none",
                             target_modules=rf"^(?:.*\.)?language_model\..*\.(?:{names})$")
    model = peft.get_peft_model(model, config).to(device)
    from terramask.models.mllm.local_client import QwenInputs

    inputs = QwenInputs(resolved, int(model.config.image_token_id))
    from tests.helpers.paths import rs_samples_folder

    image = np.asarray(Image.open(rs_samples_folder() / SAMPLES[0][0]).convert("RGB"))
    fitted = fit_long_side(image, args.max_side)
    shown = inputs.processed(fitted)[1]
    prompt = clicks_prompt(SAMPLES[0][3], frame="norm1000", image_size=shown)
    answer = '{"points": [[164, 572], [908, 621], [332, 43]], "labels": [1, 0, 0]}'
    example = inputs.encode(fitted, prompt, answer=answer)[0]
    batch = collate([example] * args.batch, int(inputs.tokenizer.pad_token_id))
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    times = []
    for _ in range(args.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    timed = times[-1] - times[0]
    return {"samples_per_s": round(args.steps * args.batch / timed, 4),
            "s_per_step": round(timed / args.steps, 2),
            "tokens_per_sample": int(batch["input_ids"].shape[1]), **_peak()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--batch", type=int, default=1, help="samples per step")
    parser.add_argument("--max-side", type=int, default=448, help="image long side shown")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", type=Path, help="a Qwen3-VL config.json for the shapes")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--role", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sam", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        result = run_ours(args) if args.role == "ours" else run_peer(args)
        print(json.dumps(result))
        return

    import subprocess

    from terramask.testing.tiny_models import save_tiny_sam

    work = args.work or Path(tempfile.mkdtemp(prefix="train-clicks-bench-"))
    started = time.perf_counter()
    model = build_model(work / "model", args.config, args.tiny)
    sam = save_tiny_sam(work / "sam")
    data = write_data(work / "data")
    print(f"model written in {time.perf_counter() - started:.0f} s: {model}", flush=True)
    # the clicks are synthesised once (tiny SAM) so that the timed run is the training loop
    from terramask.options import ClickTraining, ModelOptions
    from terramask.train.synthesis import prepare_training_data

    prepare_training_data(data, layout="auto", split=None,
                          training=ClickTraining(base=str(model), clicks=3, val_fraction=0.0),
                          models=ModelOptions(segmenter=str(sam), device="cpu"), cache=None,
                          progress=None)  # fmt: skip
    results = {}
    common = ["--steps", str(args.steps), "--batch", str(args.batch), "--max-side",
              str(args.max_side), "--device", args.device, "--work", str(work), "--model",
              str(model), "--sam", str(sam), "--data", str(data)]  # fmt: skip
    for role in ("ours", "peer"):
        done = subprocess.run([sys.executable, __file__, "--role", role, *common],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{role} failed:\n{done.stderr[-3000:]}")
        results[role] = json.loads(done.stdout.strip().splitlines()[-1])
        print(role, results[role], flush=True)
    ours, peer = results["ours"], results["peer"]
    memory = "peak_gpu_mib" if "peak_gpu_mib" in ours else "peak_rss_mib"
    print(json.dumps({
        "model": "tiny" if args.tiny else (str(args.config) if args.config else "Qwen3-VL-2B"),
        "steps": args.steps, "batch": args.batch, "max_side": args.max_side,
        "tokens_per_sample": peer.get("tokens_per_sample"),
        "ours": ours, "peer": peer,
        "speed_ours_over_peer": round(ours["samples_per_s"] / peer["samples_per_s"], 3),
        "memory_ours_over_peer": round(ours[memory] / peer[memory], 3),
    }, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
