"""`terramask train unigeoseg`: fine-tune UniGeoSeg on UniGeoSeg-format instruction data.

The recipe is the paper's where it gives one (Tab. 11; `UniGeoSegTraining` says which values
are ours): the Swin backbone frozen, everything else trained (or LoRA on the language model
with `lora_rank`), AdamW with a linear warm-up and cosine decay, bf16 autocast on GPUs,
Mask2Former's matched point-sampled BCE + Dice on every decoder stage plus the language loss
on the reply and explanation (`unigeoseg_loss`), one task per batch drawn by progressive task
scheduling (`unigeoseg_schedule`). Each sample is the benchmark's: the image on the centred
512 letterbox, the mask letterboxed the same way (nearest), the released "Reasoning
Segmentation" conversation with the explanation (`reason`) teacher-forced.

The run folder holds `checkpoints/step-N/` (trainable weights, optimizer, scheduler, sampler
and RNG states; written to a temporary folder and renamed), `log.jsonl`, `final/` (a
checkpoint in the released layout that `ask/prompt/eval --engine unigeoseg --unigeoseg
OUT/final` load) and `report.json` (recipe, data, validation gIoU/cIoU per task per epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terramask.atomic import temp_sibling, write_atomic
from terramask.errors import InputError, OutputExistsError
from terramask.options import UniGeoSegTraining
from terramask.protocols import Progress
from terramask.train.checkpoints import (
    checkpoint_folders,
    load_trainer_state,
    save_checkpoint,
    setting_differences,
)
from terramask.train.unigeoseg_loss import UniGeoSegCriterion
from terramask.train.unigeoseg_schedule import TASK_ORDER, TaskSampler, training_progress

FINAL = "final"
REPORT = "report.json"
LOG = "log.jsonl"
#: The language model's projections LoRA goes on (Phi's attention and MLP).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")


# ---------------------------------------------------------------------------------- data


def load_training_samples(root: str | os.PathLike, split: str) -> list:
    """The samples of a UniGeoSeg-format folder (its `{split}.json`, or per-task folders as
    `terramask data build` writes them), each with its task, instruction, mask and reason."""
    from terramask.eval.referring_datasets import load_referring_dataset

    try:
        data = load_referring_dataset("unigeoseg-bench", root, split=split, protocol="reference")
    except InputError as exc:  # the loader speaks of a benchmark's `root`; here it is DATA
        raise InputError(str(exc).replace("`root`", "DATA").replace(
            "UniGeoSeg's GeoSeg-Bench", "UniGeoSeg-format training data")) from None
    if not data.samples:
        raise InputError(f"The training data {root} holds no samples in split {split!r}.")
    return data.samples


def split_validation(samples: Sequence, fraction: float) -> tuple[list, list]:
    """(train, validation) by a hash of each sample's id, so the split never moves."""
    if fraction <= 0:
        return list(samples), []
    train, val = [], []
    for sample in samples:
        digest = hashlib.blake2b(str(sample.id).encode(), digest_size=8).digest()
        (val if int.from_bytes(digest, "big") / 2**64 < fraction else train).append(sample)
    if not train:
        raise InputError("`UniGeoSegTraining.val_fraction` leaves no training samples.")
    return train, val


def prepare_sample(sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(canvas image (S, S, 3) uint8, canvas mask (S, S) bool): the benchmark's centred
    letterbox, bilinear for the image and nearest for the mask."""
    from terramask.eval.referring_datasets import letterbox
    from terramask.models.unigeoseg.canvas import letterbox_canvas

    image = sample.load_image()
    mask = sample.load_mask()
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"The mask of sample {sample.id} is {mask.shape[1]}x{mask.shape[0]} px but its image "
            f"{image.shape[1]}x{image.shape[0]} px; they must match."
        )
    canvas, _ = letterbox_canvas(image, size)
    return canvas, letterbox(mask, size, centred=True).astype(bool)


def encode_sample(sample, task: str, tokenizer, seg_id: int):
    """The conversation of a sample with its explanation teacher-forced (labels on the
    reply), and its interactive coordinates."""
    from terramask.methods.unigeoseg_prompts import route_instruction
    from terramask.models.unigeoseg.model import encode_prompt

    routed = route_instruction(sample.question, task)
    return encode_prompt(tokenizer, seg_id, routed.text, task, coordinates=routed.coordinates,
                         style="benchmark", answer=sample.answer_text or "",
                         upto="all")  # fmt: skip


# ---------------------------------------------------------------------------------- model


def freeze_for_training(model, training: UniGeoSegTraining) -> list[str]:
    """Freeze the Swin backbone (always) and, with LoRA, the language model's own weights;
    returns the names of the trainable parameters."""
    for p in model.vision.parameters():
        p.requires_grad_(False)
    if training.lora_rank is not None:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=training.lora_rank, lora_alpha=training.lora_alpha,
                            lora_dropout=0.0, target_modules=list(LORA_TARGETS))  # fmt: skip
        inject_adapter_in_model(config, model.language_model)
        for name, p in model.language_model.named_parameters():
            p.requires_grad_("lora_" in name)
        model.lm_head.weight.requires_grad_(False)
    if training.gradient_checkpointing:
        lm = model.language_model
        enable = getattr(lm, "activation_checkpointing_enable", None)  # transformers >= 5.x
        (enable or lm.gradient_checkpointing_enable)()
    return [n for n, p in model.named_parameters() if p.requires_grad]


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights with any LoRA merged into its base layers, under the plain names
    (what the released layout stores)."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if not any("lora_" in k for k in state):
        return state
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            weight = base.weight.detach().clone()
            for adapter in module.active_adapters:
                weight += module.get_delta_weight(adapter).to(weight.dtype)
            merged[f"{name}.weight"] = weight
            if base.bias is not None:
                merged[f"{name}.bias"] = base.bias.detach()
    out = {k: v for k, v in state.items() if "lora_" not in k and ".base_layer." not in k}
    out.update(merged)
    return out


def save_final(model, tokenizer, folder: Path) -> Path:
    """The trained model as a checkpoint folder in the released layout, written beside and
    renamed (a crash never leaves half a checkpoint)."""
    from terramask.models.unigeoseg.checkpoint import save_checkpoint

    staging = temp_sibling(folder, "work")
    try:
        clean = _plain_model(model)
        save_checkpoint(clean, tokenizer, staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _plain_model(model):
    """`model` itself, or (with LoRA) a copy with the adapters merged away."""
    if not any("lora_" in n for n, _ in model.named_parameters()):
        return model
    from terramask.models.unigeoseg.checkpoint import build_model

    plain = build_model(model.config, initialise=False)
    plain.load_state_dict(merged_state_dict(model), strict=True)
    return plain


# ---------------------------------------------------------------------------------- checkpoints


def check_output(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to replace a finished run or restart a stopped one unasked; with `overwrite`,
    clear what a former run left (before any model loads)."""
    finished = (output / REPORT).is_file() and (output / FINAL).is_dir()
    stopped = checkpoint_folders(output)
    if overwrite:
        for name in (FINAL, "checkpoints"):
            shutil.rmtree(output / name, ignore_errors=True)
        for name in (REPORT, LOG):
            (output / name).unlink(missing_ok=True)
        return
    if resume:
        if not stopped:
            raise InputError(
                f"There is no stopped training in {output} to resume"
                + (" (the training there finished)" if finished else "")
                + ". Pass `overwrite` to train again, or leave out `resume`."
            )
        return
    if finished:
        raise OutputExistsError(
            f"A trained UniGeoSeg is already in {output} and was left untouched. Pass "
            "`overwrite` to replace it, or choose another output folder."
        )
    if stopped:
        raise OutputExistsError(
            f"A stopped training is in {output} (checkpoint {stopped[-1].name}): pass `resume` "
            "to continue it, or `overwrite` to start again."
        )


def _save_checkpoint(output: Path, model, optimizer, scheduler, sampler: TaskSampler,
                     state: dict) -> Path:  # fmt: skip
    """The trainable weights and training state (`train.checkpoints.save_checkpoint`)."""
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    return save_checkpoint(output, state["step"], state, {
        "trainable": trainable, "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "sampler": sampler.state(),
    })  # fmt: skip


def _load_checkpoint(folder: Path, model, optimizer, scheduler, sampler: TaskSampler) -> dict:
    saved = load_trainer_state(folder)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["trainable"].items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    sampler.restore(saved["sampler"])
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model, tokenizer, samples: Sequence, size: int) -> dict[str, Any]:
    """gIoU and cIoU (percent) per task and overall on the 512 canvas, as the benchmark
    scores them (foreground = logit > 0; an empty prediction of an empty target counts 1)."""
    from terramask.methods.unigeoseg_prompts import route_instruction
    from terramask.models.unigeoseg.predictor import UniGeoSeg, UniGeoSegSettings

    if not samples:
        return {}
    was_training = model.training
    wrapper = UniGeoSeg(model, tokenizer, name="training", cache_size=1)
    per_task: dict[str, list[float]] = {}
    inter: dict[str, float] = {}
    union: dict[str, float] = {}
    try:
        for sample in samples:
            task = sample.group or "reasoning"
            canvas, truth = prepare_sample(sample, size)
            result = wrapper.segment(canvas, route_instruction(sample.question, task),
                                     UniGeoSegSettings(task=task))  # fmt: skip
            pred = result.canvas_logits > 0
            i, u = float((pred & truth).sum()), float((pred | truth).sum())
            for key in (task, "all"):
                per_task.setdefault(key, []).append(1.0 if u == 0 else i / u)
                inter[key] = inter.get(key, 0.0) + i
                union[key] = union.get(key, 0.0) + u
    finally:
        model.train(was_training)
        model.vision.eval()
    return {key: {"giou": round(100 * float(np.mean(v)), 2),
                  "ciou": round(100 * inter[key] / union[key], 2) if union[key] else 100.0,
                  "samples": len(v)}
            for key, v in per_task.items()}  # fmt: skip


# ---------------------------------------------------------------------------------- training


def _fingerprint(training: UniGeoSegTraining, samples: Sequence, val: Sequence) -> dict:
    ids = hashlib.blake2b(digest_size=12)
    for sample in samples:
        ids.update(f"{sample.id}|{sample.group}|{sample.question}\n".encode())
    recipe = {k: v for k, v in asdict(training).items() if k not in ("save_every",)}
    return {"recipe": recipe, "train_samples": len(samples), "val_samples": len(val),
            "data": ids.hexdigest()}  # fmt: skip


def _differences(saved: dict, now: dict) -> list[str]:
    return setting_differences(saved, now, values=True)


def train_unigeoseg(
    data: str | os.PathLike,
    *,
    output: str | os.PathLike = "terramask-unigeoseg",
    training: UniGeoSegTraining | None = None,
    val_data: str | os.PathLike | None = None,
    split: str = "train",
    val_split: str = "val",
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune; returns the report (also written to `output/report.json`). See `api`."""
    from transformers import get_cosine_schedule_with_warmup

    from terramask.models.unigeoseg import load_unigeoseg_fresh
    from terramask.models.unigeoseg.checkpoint import seg_token_id

    training = training or UniGeoSegTraining()
    output = Path(output)
    samples = load_training_samples(data, split)
    if val_data is not None:
        train_samples, val_samples = samples, load_training_samples(val_data, val_split)
    else:
        train_samples, val_samples = split_validation(samples, training.val_fraction)
    pools: dict[str, list[int]] = {t: [] for t in TASK_ORDER}
    for index, sample in enumerate(train_samples):
        pools.setdefault(sample.group or "reasoning", []).append(index)
    fingerprint = _fingerprint(training, train_samples, val_samples)
    check_output(output, resume=resume, overwrite=overwrite)
    output.mkdir(parents=True, exist_ok=True)

    loaded = load_unigeoseg_fresh(training.init, device=device, dtype="fp32")
    model, tokenizer = loaded.model, loaded.tokenizer
    seg_id = seg_token_id(tokenizer)
    size = model.config.image_size
    dev = model.lm_head.weight.device
    trainable = freeze_for_training(model, training)
    model.train()
    model.vision.eval()  # frozen: its dropout/drop-path stay off
    autocast = dev.type == "cuda" and training.precision in ("auto", "bf16")

    steps_per_epoch = max(1, math.ceil(len(train_samples) / (training.batch_size
                                                             * training.grad_accumulation)))
    total_steps = steps_per_epoch * training.epochs
    if training.max_steps is not None:
        total_steps = min(total_steps, training.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.learning_rate,
                                  weight_decay=training.weight_decay)  # fmt: skip
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(training.warmup * total_steps), total_steps
    )
    sampler = TaskSampler(pools, curve=training.curve, interactive_end=training.interactive_end,
                          seed=training.seed)  # fmt: skip
    criterion = UniGeoSegCriterion(
        points=training.points, oversample=training.oversample, importance=training.importance,
        mask_weight=training.mask_weight, dice_weight=training.dice_weight,
        lm_weight=training.lm_weight, deep_supervision=training.deep_supervision,
    )  # fmt: skip
    torch.manual_seed(training.seed)
    step, validations, log = 0, [], []
    if resume:
        last = checkpoint_folders(output)[-1]
        state = json.loads((last / "state.json").read_text(encoding="utf-8"))
        changed = _differences(state["fingerprint"], fingerprint)
        if changed:
            raise InputError(
                f"The stopped training in {output} used other settings or data: "
                f"{'; '.join(changed[:5])}. Resume with the same ones, or pass `overwrite`."
            )
        state = _load_checkpoint(last, model, optimizer, scheduler, sampler)
        step, validations = state["step"], state.get("validations", [])
        if (output / LOG).is_file():
            log = [json.loads(line) for line in (output / LOG).read_text().splitlines() if line]
            log = [e for e in log if e["step"] <= step]

    def save(state_step: int) -> None:
        _save_checkpoint(output, model, optimizer, scheduler, sampler, {
            "step": state_step, "fingerprint": fingerprint, "validations": validations,
            "trainable": len(trainable),
        })  # fmt: skip
        write_atomic(output / LOG, "".join(json.dumps(e) + "\n" for e in log))

    started = time.perf_counter()
    if progress:
        progress("train", step, total_steps)
    try:
        while step < total_steps:
            epoch = step // steps_per_epoch
            where = training_progress(training.curve, step, total_steps, epoch, training.epochs)
            optimizer.zero_grad(set_to_none=True)
            parts_log: list[dict] = []
            task = ""
            for _ in range(training.grad_accumulation):
                task, chosen = sampler.draw(where, training.batch_size)
                prepared = [prepare_sample(train_samples[i], size) for i in chosen]
                prompts = [encode_sample(train_samples[i], task, tokenizer, seg_id)
                           for i in chosen]  # fmt: skip
                canvas = torch.from_numpy(np.stack([c for c, _ in prepared])).permute(0, 3, 1, 2)
                targets = torch.from_numpy(np.stack([m for _, m in prepared])).to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                    pixels = model.normalize(canvas.to(dev))
                    with torch.no_grad():
                        levels = model.encode_image(pixels)
                    out = model(pixels, prompts, language_logits=training.lm_weight > 0,
                                levels=levels)  # fmt: skip
                    parts = criterion(out.masks, targets, out.lm_logits, out.labels)
                (parts.total / training.grad_accumulation).backward()
                parts_log.append(parts.record())
            torch.nn.utils.clip_grad_norm_(params, training.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            entry = {"step": step, "epoch": epoch + 1, "task": task,
                     "lr": scheduler.get_last_lr()[0],
                     "mix": {t: round(w, 4) for t, w in sampler.weights(where).items()},
                     **{k: round(float(np.mean([p[k] for p in parts_log])), 5)
                        for k in parts_log[0]}}  # fmt: skip
            log.append(entry)
            if on_step:
                on_step(entry)
            if progress:
                progress("train", step, total_steps)
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if end_of_epoch and val_samples:
                scores = validate(model, tokenizer, val_samples, size)
                validations.append({"step": step, "epoch": epoch + 1, **scores})
                if on_step:
                    on_step({"step": step, "validation": scores})
            if step % training.save_every == 0 or end_of_epoch:
                save(step)
    except KeyboardInterrupt:
        save(step)
        raise
    final = save_final(model, tokenizer, output / FINAL)
    report = {
        "final": str(final), "steps": step, "steps_per_epoch": steps_per_epoch,
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "frozen": "vision (Swin)" + (", language model (LoRA)" if training.lora_rank else ""),
        "fingerprint": fingerprint, "init": training.init,
        "task_samples": sampler.counts, "validations": validations,
        "last_loss": log[-1] if log else None,
        "seconds": round(time.perf_counter() - started, 2),
    }  # fmt: skip
    write_atomic(output / LOG, "".join(json.dumps(e) + "\n" for e in log))
    write_atomic(output / REPORT, json.dumps(report, indent=1))
    shutil.rmtree(output / "checkpoints", ignore_errors=True)  # final/ replaces them
    return report


__all__ = [
    "check_output",
    "encode_sample",
    "freeze_for_training",
    "load_training_samples",
    "merged_state_dict",
    "prepare_sample",
    "split_validation",
    "train_unigeoseg",
    "validate",
]
