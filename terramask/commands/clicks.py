"""`terramask clicks` (click synthesis from masks) and `terramask train clicks|merge` (LoRA
tuning of a Qwen-VL click generator, and merging the adapter for serving): issue #13."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape

from terramask.cli import (
    built,
    common_options,
    emit,
    models_from,
    option,
    progress_reporter,
    stdout,
    table,
)
from terramask.commands.training_progress import resumable, training_bars
from terramask.options import COORDINATE_FRAMES, ClickSynthesis, ClickTraining, ModelOptions


def _device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return option("ModelOptions.device", "--device",
                  help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps "
                  "[default: auto].")(func)  # fmt: skip


def _segmenter_option(help_text: str) -> Callable[[Callable[..., Any]], Any]:
    return option("ModelOptions.segmenter", "--segmenter", help=help_text)


# ---------------------------------------------------------------- terramask clicks


@click.command("clicks")
@click.argument("masks", nargs=-1, required=True, type=click.Path(dir_okay=False))
@option("images", "--images", "--image", "images", type=click.Path(),
        help="The image of a single mask, or a folder of images named like the masks "
        "[default: the images/ folder beside the masks' folder].")  # fmt: skip
@option("mask_value", "--mask-value", type=int,
        help="The mask value that marks the target, e.g. 2 for buildings in a label map "
        "[default: any non-zero value].")  # fmt: skip
@option("ClickSynthesis.clicks", "--clicks", type=int,
        help=f"Clicks per mask (early stop when the mask is exact) "
        f"[default: {ClickSynthesis.clicks}].")  # fmt: skip
@option("ClickSynthesis.frame", "--frame", type=click.Choice(COORDINATE_FRAMES),
        help="Coordinate frame of the clicks text: pixel, norm1000 (Qwen3-VL) or norm1 "
        f"[default: {ClickSynthesis.frame}].")  # fmt: skip
@_segmenter_option("SAM-family model in the loop: hub id, alias or folder "
                   "[default: sam-vit-large].")
@_device_option
@option("output", "-o", "--output", type=click.Path(dir_okay=False),
        help="Also write the results to this JSONL file (one line per mask).")  # fmt: skip
@option("overwrite", "--overwrite", is_flag=True, help="Replace the output file.")
@common_options
def clicks_command(masks: tuple[str, ...], as_json: bool, debug: bool, **kw: Any) -> None:
    """Synthesise the clicks a segmenter needs for each of MASKS (PNG/TIFF, non-zero = target).

    First click at the mask's interior-most pixel; then, with the segmenter run on the clicks
    so far, a positive click deep in what it misses or a negative one deep in what it adds,
    whichever error region is deeper; up to --clicks, stopping early when the mask is exact.
    Prints each mask's clicks in the text the clicks engine reads, and the IoU after each
    click.
    """
    from terramask import api

    settings = built(ClickSynthesis, {"clicks": kw.pop("clicks"), "frame": kw.pop("frame")})
    models = built(ModelOptions, {"segmenter": kw.pop("segmenter"), "device": kw.pop("device")})
    try:
        with progress_reporter(not as_json) as report:
            results = api.synthesize_clicks(list(masks), settings=settings, models=models,
                                            progress=report, **kw)  # fmt: skip
    except KeyboardInterrupt:  # the results are written at the end: nothing is kept
        from terramask.cli import EXIT_INTERRUPTED, _fail

        _fail("KeyboardInterrupt", "stopped before the end, so nothing was written: run the "
              "same command again.", "interrupted", EXIT_INTERRUPTED, as_json)  # fmt: skip

    def human() -> None:
        rows = table("mask", "clicks", "IoU after each click")
        for r in results:
            curve = " ".join(f"{v:.3f}" for v in r["ious"])
            if r["stopped_early"]:
                curve += " (exact: stopped)"
            rows.add_row(escape(r["mask"]), escape(r["clicks"]), curve)
        stdout.print(rows)
        if kw.get("output"):
            stdout.print(f"  written to {escape(str(kw['output']))}", highlight=False)

    emit({"masks": results}, as_json, human)


# ---------------------------------------------------------------- terramask train


@click.group("train")
def train_group() -> None:
    """Tune models: LoRA click generators (`train clicks`) and merging them (`train merge`)."""


_TRAINING_FLAGS: list[tuple[str, str, Any, str]] = [
    ("base", "--base", str, "Base model: Qwen3-VL or Qwen2.5-VL alias, hub id or folder"),
    ("rank", "--rank", int, "LoRA rank (paper: 32)"),
    ("alpha", "--alpha", float, "LoRA alpha"),
    ("dropout", "--dropout", float, "LoRA dropout"),
    ("target_modules", "--target-modules", str,
     "Comma-separated language-model layers that get LoRA"),
    ("learning_rate", "--lr", float, "Peak learning rate (warm-up, then cosine)"),
    ("epochs", "--epochs", int, "Epochs (paper: 3)"),
    ("max_steps", "--max-steps", int, "Stop after this many optimizer steps"),
    ("batch_size", "--batch-size", int, "Samples per forward pass"),
    ("grad_accumulation", "--grad-accumulation", int, "Forward passes per optimizer step"),
    ("warmup", "--warmup", float, "Fraction of the steps spent warming up"),
    ("weight_decay", "--weight-decay", float, "AdamW weight decay"),
    ("max_side", "--max-side", int, "Long side of the image the model is shown, pixels"),
    ("clicks", "--clicks", int, "Clicks synthesised per mask (paper: 6)"),
    ("val_fraction", "--val-fraction", float,
     "Share of the images held out for validation (with --segmenter)"),
    ("save_every", "--save-every", int, "Checkpoint every N optimizer steps"),
    ("seed", "--seed", int, "Seed of data order, dropout and LoRA init"),
]  # fmt: skip


def _training_options(func: Callable[..., Any]) -> Callable[..., Any]:
    defaults = ClickTraining()
    for name, flag, kind, text in reversed(_TRAINING_FLAGS):
        shown = getattr(defaults, name)
        shown = ",".join(shown) if isinstance(shown, tuple) else shown
        func = option(f"ClickTraining.{name}", flag, name, type=kind,
                      help=f"{text} [default: {shown}].")(func)  # fmt: skip
    return func


def _training_from(kw: dict[str, Any]) -> ClickTraining:
    values = {name: kw.pop(name) for name, *_ in _TRAINING_FLAGS}
    if values["target_modules"] is not None:
        values["target_modules"] = tuple(
            t.strip() for t in values["target_modules"].split(",") if t.strip())
    return built(ClickTraining, values)


def _training_progress(enabled: bool) -> Any:
    """A bar per stage (clicks, train, validate); the train bar shows the loss and the ETA."""

    def validation_line(entry: dict) -> str | None:
        if not entry.get("validation"):
            return None
        giou = "-" if entry["giou"] is None else f"{entry['giou']:.3f}"
        return (f"validation after epoch {entry['epoch']} (step {entry['step']}): gIoU {giou} "
                f"on {entry['samples']} samples")  # fmt: skip

    return training_bars(enabled, validation_line=validation_line,
                         step_note=lambda e: f"loss {e['loss']:.4f} lr {e['lr']:.2e}")


@train_group.command("clicks")
@click.argument("data", type=click.Path())
@option("layout", "--layout", type=click.Choice(
    ["auto", "rrsis-d", "earthreason", "unigeoseg-bench", "geoseg-bench", "jsonl", "folder"]),
    default="auto", show_default=True, help="How DATA is laid out (auto: from its files).")
@option("split", "--split", help="Benchmark split to train on [default: train].")
@_training_options
@_segmenter_option("SAM-family model that synthesises the clicks [default: sam-vit-large]; "
                   "naming it also turns on validation (gIoU on held-out images).")
@_device_option
@option("output", "-o", "--output", default="terramask-adapter", show_default=True,
        help="Adapter folder (checkpoints/ and train_log.jsonl go there too).")  # fmt: skip
@option("cache", "--cache", type=click.Path(file_okay=False),
        help="Where synthesised clicks are cached [default: .terramask-clicks beside DATA, "
        "else $TERRAMASK_CACHE/clicks].")  # fmt: skip
@option("resume", "--resume", is_flag=True,
        help="Continue a stopped training in OUTPUT from its newest checkpoint.")  # fmt: skip
@option("overwrite", "--overwrite", is_flag=True,
        help="Replace a finished adapter or a stopped training in OUTPUT.")  # fmt: skip
@option("merge", "--merge", is_flag=True,
        help="Also write base + adapter as one model in OUTPUT/merged (vLLM, SGLang).")
@common_options
def train_clicks_command(data: str, as_json: bool, debug: bool, **kw: Any) -> None:
    """LoRA-tune a Qwen-VL to answer with clicks for SAM, on masks with instructions in DATA.

    DATA: a JSONL file of {"image", "mask", "instruction"} lines (optional "value": the mask
    value of the target); a folder with images/, masks/ and instructions/NAME.txt; or an
    RRSIS-D, EarthReason, UniGeoSeg or GeoSeg-Bench folder. Clicks are synthesised once with
    the segmenter and cached; the segmenter is not in memory while the model trains. Ctrl-C
    saves a checkpoint: run the same command with --resume to continue. Writes the adapter
    (peft format), README.md (model card), terramask_training.json and train_log.jsonl.
    """
    from terramask import api

    training = _training_from(kw)
    models = models_from(kw)
    with resumable(kw["output"], as_json), _training_progress(not as_json) as (report, on_step):
        result = api.train_clicks(data, training=training, models=models, progress=report,
                                  on_step=on_step, **kw)  # fmt: skip

    def human() -> None:
        info = result["data"]
        stdout.print(
            f"{info['train_samples']} training and {info['validation_samples']} held-out samples "
            f"({info['layout']}); {result['steps']} steps, loss {result['first_loss']} → "
            f"{result['last_loss']}", highlight=False)
        for v in result["validation"]:
            when = "base model" if v["epoch"] == 0 else f"epoch {v['epoch']}"
            giou = "-" if v["giou"] is None else f"{v['giou']:.4f}"
            stdout.print(f"  validation gIoU ({when}): {giou}", highlight=False)
        stdout.print(f"  adapter  {escape(result['output'])}", highlight=False)
        if result.get("merged"):
            stdout.print(f"  merged   {escape(result['merged'])}", highlight=False)

    emit(result, as_json, human)


@train_group.command("merge")
@click.argument("adapter", type=click.Path(file_okay=False))
@option("output", "-o", "--output", required=True, type=click.Path(),
        help="Folder of the merged model.")  # fmt: skip
@option("base", "--base", help="Base model [default: the one the adapter records].")
@option("overwrite", "--overwrite", is_flag=True, help="Replace OUTPUT.")
@common_options
def train_merge_command(adapter: str, as_json: bool, debug: bool, **kw: Any) -> None:
    """Fold ADAPTER into its base model: one folder for vLLM / SGLang or `--mllm-model`."""
    from terramask import api

    result = api.merge_adapter(adapter, **kw)
    emit(result, as_json, lambda: stdout.print(
        f"merged {escape(result['adapter'])} into {escape(result['base'])}: "
        f"{escape(result['output'])} (ask it in the '{result['frame']}' frame)", highlight=False))


def commands() -> list[click.Command]:
    """The commands this module adds to `terramask`."""
    return [clicks_command, train_group]


__all__ = ["commands"]
