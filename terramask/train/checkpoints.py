"""Training checkpoints shared by `train clicks` and `train unigeoseg`.

A checkpoint is a folder `OUT/checkpoints/step-NNNNNNN/` holding the model's own files, the
optimizer/schedule/random state (`trainer_state.pt`) and `state.json`. It is written into a
temporary sibling and renamed, so a killed run never leaves a half checkpoint that `--resume`
would trust; only the newest `KEEP_CHECKPOINTS` are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from terramask.atomic import temp_sibling

#: How many checkpoints a run keeps (the newest); older ones are removed after each save.
KEEP_CHECKPOINTS = 2

_STEP_FOLDER = re.compile(r"step-\d+")


def checkpoint_folders(output: Path) -> list[Path]:
    """The complete checkpoints of a run folder, oldest first."""
    folder = output / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_FOLDER.fullmatch(p.name)
             and (p / "state.json").is_file()]  # fmt: skip
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(
    output: Path,
    step: int,
    state: Mapping[str, Any],
    trainer: Mapping[str, Any],
    write_model: Callable[[Path], None] | None = None,
) -> Path:
    """Write the checkpoint of `step`: `write_model(folder)` for the model's files, then the
    trainer state (with the random state added) and `state.json`, all renamed into place."""
    folder = output / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:07d}"
    staging = temp_sibling(final, "work")
    try:
        staging.mkdir(parents=True)
        if write_model is not None:
            write_model(staging)
        torch.save({
            **trainer, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }, staging / "trainer_state.pt")  # fmt: skip
        (staging / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    for old in checkpoint_folders(output)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint, with the random state already restored."""
    saved = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved


def setting_differences(
    saved: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    values: bool = False,
    prefix: str = "",
) -> list[str]:
    """The dotted names of the settings that differ (nested dicts compared key by key),
    skipping `ignore`; with `values`, each name says what it was then and is now."""
    ignore = frozenset(ignore)
    names: list[str] = []
    for key in sorted(set(saved) | set(now)):
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += setting_differences(a, b, ignore=ignore, values=values, prefix=f"{name}.")
        elif a != b:
            names.append(f"{name} ({a!r} then, {b!r} now)" if values else name)
    return names


__all__ = [
    "KEEP_CHECKPOINTS",
    "checkpoint_folders",
    "load_trainer_state",
    "save_checkpoint",
    "setting_differences",
]
