"""`terramask train unigeoseg`: fine-tune UniGeoSeg on UniGeoSeg-format data (issue #16).

Attached to the `train` group of `terramask.commands.clicks` by cli.py.
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from terramask.cli import built, common_options, emit, option, stdout
from terramask.commands.training_progress import resumable, training_bars
from terramask.options import PTS_CURVES, UniGeoSegTraining

_FLAGS: list[tuple[str, str, Any, str]] = [
    ("init", "--init", str, "Checkpoint to start from: alias, hub id or folder"),
    ("epochs", "--epochs", int, "Epochs (paper: 3)"),
    ("max_steps", "--max-steps", int, "Stop after this many optimizer steps"),
    ("batch_size", "--batch-size", int, "Samples per forward pass (released run: 2 per GPU)"),
    ("grad_accumulation", "--grad-accumulation", int, "Forward passes per optimizer step"),
    ("learning_rate", "--lr", float, "Peak AdamW learning rate (paper: 1e-4)"),
    ("warmup", "--warmup", float, "Fraction of the steps spent warming up (paper: 0.03)"),
    ("weight_decay", "--weight-decay", float, "AdamW weight decay (paper: 0)"),
    ("max_grad_norm", "--max-grad-norm", float, "Gradient clipping norm"),
    ("curve", "--pts-curve", click.Choice(PTS_CURVES),
     "Progressive task scheduling: linear (each step), epoch (once per epoch) or none"),
    ("interactive_end", "--interactive-end", float,
     "Interactive task weight at the end of training (paper: 0.7)"),
    ("points", "--points", int, "Points the mask losses are computed on"),
    ("lm_weight", "--lm-weight", float, "Weight of the language loss on the explanation"),
    ("lora_rank", "--lora-rank", int, "LoRA on the language model with this rank (small GPUs)"),
    ("lora_alpha", "--lora-alpha", float, "LoRA alpha"),
    ("precision", "--precision", click.Choice(["auto", "bf16", "fp32"]),
     "auto: bf16 autocast on GPUs, fp32 on CPU"),
    ("gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing", None,
     "Recompute the language model's activations (less memory)"),
    ("val_fraction", "--val-fraction", float, "Share held out for validation (without --val)"),
    ("save_every", "--save-every", int, "Checkpoint every N optimizer steps"),
    ("seed", "--seed", int, "Seed of the task draws, data order and point sampling"),
]  # fmt: skip


def _training_options(func: Any) -> Any:
    defaults = UniGeoSegTraining()
    for name, flag, kind, text in reversed(_FLAGS):
        attrs: dict[str, Any] = {"default": None} if kind is None else {"type": kind}
        shown = getattr(defaults, name)
        func = option(f"UniGeoSegTraining.{name}", flag, f"t_{name}",
                      help=f"{text} [default: {shown}].", **attrs)(func)  # fmt: skip
    return func


def _training_from(kw: dict[str, Any]) -> UniGeoSegTraining:
    return built(UniGeoSegTraining, {name: kw.pop(f"t_{name}") for name, *_ in _FLAGS})


def attach(train_group: click.Group) -> None:
    """Add `train unigeoseg` to the `train` group."""

    @train_group.command("unigeoseg")
    @click.argument("data", type=click.Path())
    @option("split", "--split", default="train", show_default=True, help="Split of DATA.")
    @option("val_data", "--val", "val_data", type=click.Path(file_okay=False),
            help="A separate validation folder [default: --val-fraction of DATA].")  # fmt: skip
    @option("val_split", "--val-split", default="val", show_default=True,
            help="Split of --val.")  # fmt: skip
    @_training_options
    @option("device", "--device", default="auto", show_default=True,
            help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")  # fmt: skip
    @option("output", "-o", "--output", default="terramask-unigeoseg", show_default=True,
            help="Run folder: checkpoints/, log.jsonl, final/ (the model), report.json.")
    @option("resume", "--resume", is_flag=True,
            help="Continue a stopped training in OUTPUT from its newest checkpoint.")
    @option("overwrite", "--overwrite", is_flag=True,
            help="Replace a finished or stopped training in OUTPUT.")
    @common_options
    def train_unigeoseg_command(data: str, as_json: bool, debug: bool, **kw: Any) -> None:
        """Fine-tune UniGeoSeg on instruction data in DATA (UniGeoSeg's layout: `{split}.json`
        lists of {img, mask, json}, in task folders interactive/, ref/, reason/ as `terramask
        data build` writes them, or at the root).

        The paper's recipe: frozen Swin, AdamW 1e-4 with warm-up 0.03 and cosine decay, bf16
        on GPUs, Mask2Former losses (Hungarian matching, BCE + Dice on sampled points) plus
        the language loss on the explanation, progressive task scheduling (interactive
        weight 1 → 0.7, the rest to reasoning). --lora-rank trains LoRA on the language model
        instead (small GPUs). Ctrl-C saves a checkpoint; --resume continues. OUTPUT/final is
        a checkpoint for `ask/prompt/eval --engine unigeoseg --unigeoseg OUTPUT/final`.
        """
        from terramask import api

        training = _training_from(kw)
        with resumable(kw["output"], as_json), _progress(not as_json) as (report, on_step):
            result = api.train_unigeoseg(data, training=training, progress=report,
                                         on_step=on_step, **kw)  # fmt: skip

        def human() -> None:
            counts = result["task_samples"]
            tasks = ", ".join(f"{task} {n}" for task, n in counts.items())
            last = result["last_loss"] and result["last_loss"]["loss"]
            stdout.print(f"{result['steps']} steps on {sum(counts.values())} samples ({tasks}); "
                         f"last loss {last}", highlight=False)  # fmt: skip
            for v in result["validations"]:
                scores = ", ".join(f"{k} {s['giou']:.2f}" for k, s in v.items()
                                   if isinstance(s, dict))  # fmt: skip
                stdout.print(f"  validation gIoU after epoch {v['epoch']}: {scores}",
                             highlight=False)  # fmt: skip
            stdout.print(f"  model  {escape(result['final'])}", highlight=False)

        emit(result, as_json, human)


def _progress(enabled: bool) -> Any:
    """A bar per stage with the task, loss and learning rate; a line per validation."""

    def validation_line(entry: dict) -> str | None:
        if "validation" not in entry:
            return None
        scores = ", ".join(f"{k} {s['giou']:.2f}" for k, s in entry["validation"].items())
        return f"validation gIoU at step {entry['step']}: {scores}"

    return training_bars(enabled, validation_line=validation_line,
                         step_note=lambda e: f"{e['task']:<11} loss {e['loss']:.3f} "
                         f"lr {e['lr']:.1e}")  # fmt: skip


__all__ = ["attach"]
