"""The progress bars of the `train` commands: a bar per stage, the loss beside the train bar,
and one line per validation (nothing with --json)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from terramask.cli import stderr

StageReport = Callable[[str, int, int], None]
StepReport = Callable[[dict], None]


@contextmanager
def training_bars(
    enabled: bool,
    *,
    step_note: Callable[[dict], str],
    validation_line: Callable[[dict], str | None],
) -> Iterator[tuple[StageReport | None, StepReport | None]]:
    """Yield (report, on_step) for a training run: `report(stage, done, total)` drives a bar
    per stage (the validate bar restarts with each validation); `on_step(entry)` prints
    `validation_line(entry)` when it is not None, else shows `step_note(entry)` on the train
    bar."""
    if not enabled:
        yield None, None
        return
    with Progress(
        TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), console=stderr, transient=True,
    ) as bar:  # fmt: skip
        tasks: dict[str, Any] = {}
        notes = {"train": ""}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, completed=done, note="")
            elif stage == "validate" and done == 1:
                bar.reset(tasks[stage], total=total, completed=done)
            bar.update(tasks[stage], completed=done, total=total,
                       note=notes.get(stage, ""))  # fmt: skip

        def on_step(entry: dict) -> None:
            line = validation_line(entry)
            if line is not None:
                stderr.print(line, highlight=False)
                return
            notes["train"] = step_note(entry)
            if "train" in tasks:
                bar.update(tasks["train"], note=notes["train"])

        yield report, on_step


@contextmanager
def resumable(output: str | Path, as_json: bool) -> Iterator[None]:
    """On Ctrl-C, say how to continue: a training that saved a checkpoint in OUTPUT is only
    continued with --resume (the same command without it is refused); one stopped before its
    first checkpoint (e.g. while synthesising clicks) restarts with the same command."""
    try:
        yield
    except KeyboardInterrupt:
        from terramask.train.checkpoints import checkpoint_folders

        saved = checkpoint_folders(Path(output).expanduser())
        if not saved:
            raise
        from terramask.cli import EXIT_INTERRUPTED, _fail

        _fail("KeyboardInterrupt",
              f"training stopped; its finished steps are in {saved[-1]}: run the same command "
              "with --resume to continue (or --overwrite to start again).",
              "interrupted", EXIT_INTERRUPTED, as_json)  # fmt: skip


__all__ = ["resumable", "training_bars"]
