"""LoRA tuning of a Qwen-VL click generator on synthesised clicks (`terramask train clicks`).

The run (docs/clicks.md has the whole procedure and its sources):

1. Samples are read (`terramask.train.data`), whole images held out for validation, and each
   mask's clicks synthesised once with the frozen segmenter and cached next to the data.
   The segmenter is then released: it is not in memory while the language model trains.
2. Each sample becomes exactly what `ask --engine clicks` shows the model: the image fitted
   to `ClickTraining.max_side`, the clicks prompt in the base model's coordinate frame
   (Qwen3-VL 0-1000, Qwen2.5-VL pixels of the image as shown, with its size stated), and as
   the answer the synthesised clicks in the text that prompt asks for. The loss is the
   causal-LM cross-entropy on the answer's tokens only.
3. LoRA on the language model's projections (peft), the vision tower frozen; AdamW with a
   linear warm-up and cosine decay; gradient accumulation; bf16 on a GPU, fp32 on a CPU.
4. Every `save_every` optimizer steps, after the last one and on Ctrl-C, a checkpoint
   (adapter, optimizer, schedule, random states, log) is written atomically; `resume`
   continues from the latest exactly where it stopped. `train_log.jsonl` holds one line per
   step (loss, learning rate, samples/s) and one per validation.
5. With a segmenter, validation each epoch (and once before training, the base model's
   score): greedy clicks → parsed as `ask` parses them → SAM → gIoU on the held-out images.
6. The adapter is saved in peft's format with `terramask_training.json` (base model and its
   fingerprint, frame, data, settings, scores) and a model card (README.md).
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terramask import __version__
from terramask.atomic import temp_sibling, write_atomic
from terramask.errors import InputError, MLLMError, OutputExistsError
from terramask.methods.click_synthesis import NO_TARGET_CLICKS, format_clicks, mask_iou
from terramask.models.mllm.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_RECORD,
    ADAPTER_WEIGHTS,
    base_fingerprint,
    peft_module,
    quiet_peft,
)
from terramask.options import ClickTraining
from terramask.protocols import Progress, Segmenter
from terramask.train.checkpoints import (
    checkpoint_folders,
    load_trainer_state,
    save_checkpoint,
    setting_differences,
)
from terramask.train.data import PreparedSample

#: Tokens a validation answer may take (six clicks need about 40).
VALIDATION_TOKENS = 128
#: The files of a finished adapter folder.
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_RECORD, "README.md", "train_log.jsonl")

StepReport = Callable[[dict], None]


# ---------------------------------------------------------------------------- model


class ClickModel:
    """The base Qwen-VL with LoRA layers, its input builder and frame, on one device."""

    def __init__(self, training: ClickTraining, device: str = "auto") -> None:
        from terramask.models.device import choose_device
        from terramask.models.loader import quiet_progress
        from terramask.models.mllm.frames import FAMILY_FRAME
        from terramask.models.mllm.local_client import QwenInputs, qwen_model_class
        from terramask.models.registry import resolve_model

        peft = peft_module()
        self.resolved = resolve_model(training.base, kind="mllm", option="ClickTraining.base")
        model_class = qwen_model_class(self.resolved)
        self.device = choose_device(device)
        self.dtype = torch.float32
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            self.dtype = torch.bfloat16
        torch.manual_seed(training.seed)
        with quiet_progress():
            base = model_class.from_pretrained(self.resolved.path, dtype=self.dtype)
        base.requires_grad_(False)
        self.fingerprint = base_fingerprint(base)
        self.frame = FAMILY_FRAME[self.resolved.family]
        self.inputs = QwenInputs(self.resolved, int(base.config.image_token_id))
        names = "|".join(re.escape(t) for t in training.target_modules)
        targets = rf"^(?:.*\.)?language_model\..*\.(?:{names})$"
        if not any(re.fullmatch(targets, name) for name, _ in base.named_modules()):
            raise InputError(
                f"No layer of the language model of '{training.base}' is named "
                f"{', '.join(training.target_modules)} (`ClickTraining.target_modules`); "
                "Qwen-VL's are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj."
            )
        config = peft.LoraConfig(r=training.rank, lora_alpha=training.alpha,
                                 lora_dropout=training.dropout, target_modules=targets,
                                 bias="none")  # fmt: skip
        with quiet_peft():
            self.model = peft.get_peft_model(base, config).to(self.device)
        self.pad_id = int(self.inputs.tokenizer.pad_token_id
                          if self.inputs.tokenizer.pad_token_id is not None
                          else base.config.text_config.pad_token_id or 0)  # fmt: skip
        self.eos_ids = _eos_ids(base, self.inputs.tokenizer)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def example(self, prepared: PreparedSample, max_side: int) -> dict[str, torch.Tensor]:
        """The tokens, image and labels of one sample (see the module notes, step 2)."""
        image, prompt, shown = self.question(prepared.sample.load_image(), prepared.sample
                                             .instruction, max_side)  # fmt: skip
        if prepared.trace is None:
            answer = NO_TARGET_CLICKS
        else:
            answer = format_clicks(prepared.trace.points, prepared.trace.labels,
                                   prepared.image_size, frame=self.frame, shown_size=shown)
        return self.inputs.encode(image, prompt, answer=answer)[0]

    def question(
        self, image: np.ndarray, instruction: str, max_side: int
    ) -> tuple[np.ndarray, str, tuple[int, int]]:
        """(image as shown, prompt, shown size): what `ask --engine clicks` asks."""
        from terramask.methods.replies import clicks_prompt
        from terramask.models.mllm.images import as_rgb, fit_long_side

        fitted = fit_long_side(as_rgb(image), max_side)
        shown = self.inputs.processed(fitted)[1]
        return fitted, clicks_prompt(instruction, frame=self.frame, image_size=shown), shown

    @torch.no_grad()
    def answer(self, image: np.ndarray, instruction: str, max_side: int) -> tuple[str, tuple]:
        """The greedy answer to the clicks prompt (validation), and the size shown."""
        fitted, prompt, shown = self.question(image, instruction, max_side)
        encoded, _ = self.inputs.encode(fitted, prompt)
        inputs = {k: v.to(self.device) for k, v in encoded.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        output = self.model.generate(**inputs, max_new_tokens=VALIDATION_TOKENS,
                                     do_sample=False, eos_token_id=self.eos_ids,
                                     pad_token_id=self.pad_id)  # fmt: skip
        new = output[0, inputs["input_ids"].shape[1]:]
        return self.inputs.tokenizer.decode(new, skip_special_tokens=True), shown


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = list(ids) if isinstance(ids, list | tuple) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return sorted({int(i) for i in ids})


def collate(examples: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch: sequences right-padded, images concatenated (Qwen's flat patch list)."""
    length = max(e["input_ids"].shape[1] for e in examples)

    def padded(key: str, value: int) -> torch.Tensor:
        rows = []
        for e in examples:
            row = e[key][0]
            rows.append(torch.cat([row, torch.full((length - len(row),), value, dtype=row.dtype)]))
        return torch.stack(rows)

    return {
        "input_ids": padded("input_ids", pad_id),
        "attention_mask": padded("attention_mask", 0),
        "mm_token_type_ids": padded("mm_token_type_ids", 0),
        "labels": padded("labels", -100),
        "pixel_values": torch.cat([e["pixel_values"] for e in examples]),
        "image_grid_thw": torch.cat([e["image_grid_thw"] for e in examples]),
    }


# ---------------------------------------------------------------------------- schedule


def schedule(training: ClickTraining, train_samples: int) -> dict[str, int]:
    """Micro-batches per optimizer step and per epoch, steps per epoch and in all."""
    micro_per_epoch = math.ceil(train_samples / training.batch_size)
    per_epoch = math.ceil(micro_per_epoch / training.grad_accumulation)
    total = training.epochs * per_epoch
    if training.max_steps is not None:
        total = min(total, training.max_steps)
    return {"micro_per_epoch": micro_per_epoch, "steps_per_epoch": per_epoch,
            "total_steps": total, "warmup_steps": round(training.warmup * total)}  # fmt: skip


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The sample order of one epoch: a permutation fixed by the seed and the epoch."""
    return np.random.default_rng([seed, epoch]).permutation(count)


# ---------------------------------------------------------------------------- checkpoints


def _save_checkpoint(output: Path, model: ClickModel, optimizer: Any, scheduler: Any,
                     step: int, state: dict) -> Path:
    """The adapter and training state at `step` (`train.checkpoints.save_checkpoint`)."""
    return save_checkpoint(
        output, step, state,
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        lambda folder: model.model.save_pretrained(str(folder)),
    )  # fmt: skip


def _load_checkpoint(folder: Path, model: ClickModel, optimizer: Any, scheduler: Any,
                     settings: dict) -> dict:
    """The state saved in `folder`, loaded into the model, optimizer and schedule after
    checking that it was made with `settings` (else a one-line InputError)."""
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"The checkpoint {folder} cannot be read ({exc}); remove it to "
                         "resume from the one before, or pass `overwrite`.") from None
    differs = _differences(state.get("settings", {}), settings)
    if differs:
        raise InputError(
            f"The checkpoint in {folder} was made with other settings (these differ: "
            f"{', '.join(differs)}); resume with the same settings, or pass `overwrite` to "
            "start again."
        )
    peft = peft_module()
    weights = load_file(str(folder / ADAPTER_WEIGHTS), device=str(model.device))
    peft.set_peft_model_state_dict(model.model, weights)
    saved = load_trainer_state(folder)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return state


def _write_log(output: Path, log: list[dict]) -> None:
    write_atomic(output / "train_log.jsonl", "".join(json.dumps(e) + "\n" for e in log))


# ---------------------------------------------------------------------------- validation


def validate(
    model: ClickModel,
    samples: Sequence[PreparedSample],
    segmenter: Segmenter,
    max_side: int,
    progress: Progress | None = None,
) -> dict:
    """gIoU of the model's clicks through the segmenter on held-out samples, read as `ask`
    reads a reply (a reply that does not parse scores 0, like an empty mask)."""
    from terramask.methods.interactive import PointBoxPrompt, segment_prompts
    from terramask.methods.replies import parse_reply
    from terramask.protocols import MLLMReply

    was_training = model.model.training
    model.model.eval()
    ious, parsed_count = [], 0
    try:
        for done, prepared in enumerate(samples, 1):
            image = prepared.sample.load_image()
            target = prepared.sample.load_mask()
            text, shown = model.answer(image, prepared.sample.instruction, max_side)
            reply = MLLMReply(text=text, shown_size=shown, frame=model.frame, model="validation")
            predicted = np.zeros(target.shape, dtype=bool)
            try:
                parsed = parse_reply(reply, target.shape)
                parsed_count += 1
            except MLLMError:
                parsed = None
            if parsed is not None and not parsed.no_target and (parsed.point_labels == 1).any():
                prompt = PointBoxPrompt(parsed.points, parsed.point_labels)
                predicted = segment_prompts(segmenter, image, [prompt])[0].mask
            ious.append(mask_iou(predicted, target))
            if progress:
                progress("validate", done, len(samples))
    finally:
        model.model.train(was_training)
    return {"giou": float(np.mean(ious)) if ious else None, "samples": len(ious),
            "parsed": parsed_count}  # fmt: skip


# ---------------------------------------------------------------------------- the run


def run_click_training(
    train: Sequence[PreparedSample],
    validation: Sequence[PreparedSample],
    output: Path,
    *,
    training: ClickTraining,
    device: str = "auto",
    segmenter: Callable[[], Segmenter] | None = None,
    resume: bool = False,
    data: dict | None = None,
    progress: Progress | None = None,
    on_step: StepReport | None = None,
) -> dict:
    """Train, validate, checkpoint and save the adapter in `output` (see the module notes).

    `segmenter` (a loader, called only for validation) enables validation. With `resume`,
    the newest checkpoint in `output/checkpoints` is continued. `on_step` gets each logged
    step ({"step", "total_steps", "epoch", "loss", "lr", "samples_per_s"}).
    """
    output = Path(output)
    settings = {"training": _plain(training), "data": data or {}}
    model = ClickModel(training, device)
    plan = schedule(training, len(train))
    optimizer = torch.optim.AdamW(model.trainable(), lr=training.learning_rate,
                                  weight_decay=training.weight_decay)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: learning_rate_factor(s, plan["warmup_steps"], plan["total_steps"]))
    step, log, scores = 0, [], []
    checkpoints = checkpoint_folders(output)
    if resume and checkpoints:
        state = _load_checkpoint(checkpoints[-1], model, optimizer, scheduler, settings)
        step, log, scores = state["step"], state["log"], state["validation"]
    output.mkdir(parents=True, exist_ok=True)
    do_validate = segmenter is not None and bool(validation)

    def checkpoint() -> None:
        state = {"step": step, "settings": settings, "log": log, "validation": scores,
                 "terramask": __version__}  # fmt: skip
        _save_checkpoint(output, model, optimizer, scheduler, step, state)
        _write_log(output, log)

    def run_validation(epoch: int) -> None:
        assert segmenter is not None
        seg = segmenter()
        try:
            result = validate(model, validation, seg, training.max_side, progress)
        finally:
            del seg
            _release()
        entry = {"validation": True, "epoch": epoch, "step": step, **result}
        scores.append(entry)
        log.append(entry)
        if on_step:
            on_step(entry)

    if do_validate and not scores:
        run_validation(0)  # the base model's score, before any step
    model.model.train()
    started, samples_seen = time.perf_counter(), 0
    last_saved = step
    try:
        while step < plan["total_steps"]:
            epoch, in_epoch = divmod(step, plan["steps_per_epoch"])
            order = epoch_order(training.seed, epoch, len(train))
            first_micro = in_epoch * training.grad_accumulation
            micro = range(first_micro, min(first_micro + training.grad_accumulation,
                                           plan["micro_per_epoch"]))  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            losses = []
            for m in micro:
                chosen = order[m * training.batch_size:(m + 1) * training.batch_size]
                batch = collate([model.example(train[i], training.max_side) for i in chosen],
                                model.pad_id)  # fmt: skip
                batch = {k: v.to(model.device) for k, v in batch.items()}
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
                loss = model.model(**batch).loss
                (loss / len(micro)).backward()
                losses.append(float(loss.detach()))
                samples_seen += len(chosen)
            torch.nn.utils.clip_grad_norm_(model.trainable(), training.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            elapsed = time.perf_counter() - started
            entry = {"step": step, "total_steps": plan["total_steps"], "epoch": epoch + 1,
                     "loss": round(float(np.mean(losses)), 6), "lr": lr,
                     "samples_per_s": round(samples_seen / max(elapsed, 1e-9), 4)}  # fmt: skip
            log.append(entry)
            if on_step:
                on_step(entry)
            if progress:
                progress("train", step, plan["total_steps"])
            finished = step == plan["total_steps"]
            if do_validate and (step % plan["steps_per_epoch"] == 0 or finished):
                run_validation(epoch + 1)
            if step % training.save_every == 0 or finished:
                checkpoint()
                last_saved = step
    except KeyboardInterrupt:
        if step > last_saved:
            checkpoint()  # no finished step is lost; `resume` continues from here
        raise
    return _save_adapter(output, model, training, settings, log, scores, plan)


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _plain(training: ClickTraining) -> dict:
    return json.loads(json.dumps(asdict(training), default=str))


def _differences(saved: dict, now: dict) -> list[str]:
    """The setting names whose values differ; the step limit, the checkpoint interval and
    where the clicks are cached may change between runs."""
    return setting_differences(saved, now, ignore=(
        "training.max_steps", "training.save_every", "data.click_cache"))


def _save_adapter(output: Path, model: ClickModel, training: ClickTraining, settings: dict,
                  log: list[dict], scores: list[dict], plan: dict) -> dict:
    """peft's files, the record and the model card, each written atomically (record last)."""
    staging = temp_sibling(output / "adapter", "work")
    try:
        model.model.save_pretrained(str(staging))
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            os.replace(staging / name, output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_log(output, log)
    losses = [e["loss"] for e in log if "loss" in e]
    base = Path(training.base).expanduser()
    record = {
        "terramask": __version__,
        "base": str(base.resolve()) if base.is_dir() else training.base,  # usable from anywhere
        "base_path": str(model.resolved.path),
        "base_family": model.resolved.family,
        "base_fingerprint": model.fingerprint,
        "frame": model.frame,
        "max_side": training.max_side,
        "prompt": "terramask.methods.replies.clicks_prompt (as `ask --engine clicks` asks)",
        "answer_format": '{"points": [[x, y], ...], "labels": [1, 0, ...]}',
        "settings": settings,
        "steps": len(losses),
        "total_steps": plan["total_steps"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "validation": scores,
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
    }
    write_atomic(output / "README.md", model_card(record))
    write_atomic(output / ADAPTER_RECORD, json.dumps(record, indent=2))
    return {"output": str(output), **{k: record[k] for k in (
        "base", "frame", "steps", "first_loss", "last_loss", "validation")}}


def model_card(record: dict) -> str:
    """A short README.md: what the adapter is, how it was made, how well it does, how to use it."""
    training = record["settings"]["training"]
    data = record["settings"]["data"]
    lines = [
        f"# Click-generator LoRA adapter for {record['base']}",
        "",
        "Made by `terramask train clicks` (TerraMask " f"{record['terramask']}): a LoRA "
        "adapter that makes the model answer an instruction about an overhead image with "
        "positive/negative clicks for SAM, in the text the clicks prompt asks for: "
        f"`{record['answer_format']}`, coordinates in the **{record['frame']}** frame.",
        "",
        "## Use",
        "",
        "```bash",
        f"terramask ask scene.tif \"the largest building\" --engine clicks "
        f"--mllm-model {record['base']} --adapter ADAPTER_DIR --segmenter sam-vit-large",
        "terramask train merge ADAPTER_DIR -o merged/   # one folder for vLLM / SGLang",
        "```",
        "",
        "## Base model",
        "",
        f"- `{record['base']}` ({record['base_family']}), loaded from `{record['base_path']}`",
        "- fingerprint (checked when the adapter is loaded): " + ", ".join(
            f"{k} {v}" for k, v in record["base_fingerprint"].items() if k != "embedding_sample")
        + ", and 64 values of its input embeddings",
        "",
        "## Data",
        "",
    ]
    for key, value in data.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in training.items()],
        f"| device / dtype | {record['device']} / {record['dtype']} |",
        "",
        "## Training",
        "",
        f"- optimizer steps: {record['steps']} of {record['total_steps']}; loss "
        f"{record['first_loss']} → {record['last_loss']} (train_log.jsonl has every step)",
        "",
        "## Validation (held-out images: clicks → SAM → gIoU)",
        "",
    ]
    if record["validation"]:
        lines += ["| epoch | step | gIoU | samples | replies parsed |", "|---|---|---|---|---|"]
        for v in record["validation"]:
            giou = "-" if v["giou"] is None else f"{v['giou']:.4f}"
            label = "0 (base model)" if v["epoch"] == 0 else str(v["epoch"])
            lines.append(f"| {label} | {v['step']} | {giou} | {v['samples']} | {v['parsed']} |")
    else:
        lines.append("Not run (no segmenter given, or no held-out image).")
    return "\n".join(lines) + "\n"


def check_output(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to replace a finished adapter or to restart over a stopped run unasked;
    with `overwrite`, clear what a former run left (before any work)."""
    finished = [n for n in ADAPTER_FILES if (output / n).exists()]
    stopped = checkpoint_folders(output)
    if overwrite:
        for name in finished:
            (output / name).unlink()
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
        shutil.rmtree(output / "merged", ignore_errors=True)
        return
    if resume:
        if (output / ADAPTER_RECORD).exists() and not stopped:
            raise OutputExistsError(
                f"The training in {output} finished already; there is nothing to resume. Pass "
                "`overwrite` to train again."
            )
        return
    if (output / ADAPTER_RECORD).exists():
        raise OutputExistsError(
            f"An adapter already exists in {output} and was left untouched. Pass `overwrite` "
            "to replace it, or choose another output folder."
        )
    if stopped:
        raise InputError(
            f"A stopped training is in {output} (checkpoint {stopped[-1].name}): pass `resume` "
            "to continue it, or `overwrite` to start again."
        )


__all__ = [
    "ClickModel",
    "check_output",
    "checkpoint_folders",
    "collate",
    "epoch_order",
    "learning_rate_factor",
    "model_card",
    "run_click_training",
    "schedule",
    "validate",
]
