"""`build_instruction_data`'s checks and settings: everything is checked before any work."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from terramask.errors import InputError
from terramask.options import INSTRUCTION_TASKS, DataRecipe, RasterOptions
from terramask.protocols import MLLM, Progress


def resolve_tasks(recipe: DataRecipe, has_generator: bool) -> tuple[str, ...]:
    """The tasks to write: `DataRecipe.tasks`, else all three with a generator, else
    interactive alone.

    Raises:
        InputError: Referring or reasoning asked for without a generator.
    """
    if recipe.tasks is None:
        return INSTRUCTION_TASKS if has_generator else ("interactive",)
    asked = [t for t in recipe.tasks if t != "interactive"]
    if asked and not has_generator:
        raise InputError(
            f"{' and '.join(asked).capitalize()} instructions are written by a generator MLLM, "
            "and none was given: give one (`MLLMOptions.url` and `MLLMOptions.model`), or ask "
            "only for interactive instructions (`DataRecipe.tasks`)."
        )
    return tuple(t for t in INSTRUCTION_TASKS if t in recipe.tasks)


def build(
    images: str | os.PathLike,
    labels: str | os.PathLike,
    classes: Sequence[str],
    *,
    recipe: DataRecipe,
    class_map: str | os.PathLike | Mapping[str, str | None] | None,
    generator: MLLM | None,
    judges: Sequence[MLLM],
    raster: RasterOptions,
    output: str | os.PathLike,
    overwrite: bool,
    progress: Progress | None,
    tasks: Sequence[str],
) -> dict[str, Any]:
    """Check the inputs, then run the engine (`terramask.data.engine`)."""
    from terramask.data.engine import run_engine
    from terramask.data.labels import ClassTable, find_pairs
    from terramask.data.prompts import load_prompts

    table = ClassTable.parse(classes, class_map=class_map, ignore=recipe.ignore)
    prompts = load_prompts(recipe.prompts)
    pairs, lonely_images, lonely_labels = find_pairs(images, labels, recipe.label_suffix)
    recipe_fields = dataclasses.asdict(recipe)
    recipe_fields.pop("prompts")  # their content is in the digest, not their folder's name
    settings: dict[str, Any] = {
        "verb": "data build",
        "recipe": recipe_fields,
        "tasks": list(tasks),
        "classes": table.describe(),
        "prompts": {"digest": prompts.digest(), "files": prompts.origins},
        "generator": _describe(generator),
        "judges": [_describe(j) for j in judges],
        "raster": {"bands": raster.bands, "stretch": raster.stretch},
    }
    settings = json.loads(json.dumps(settings, default=str))
    settings["digest"] = hashlib.sha256(
        json.dumps(settings, sort_keys=True).encode("utf-8")
    ).hexdigest()[:16]
    return run_engine(
        pairs, table, recipe, prompts, tasks, generator=generator, judges=judges,
        raster=raster, output=Path(output), settings=settings, overwrite=overwrite,
        progress=progress, unpaired={"images": lonely_images, "labels": lonely_labels},
    )  # fmt: skip


def _describe(client: MLLM | None) -> str | None:
    """The model's name (not its endpoint: the same model behind another address gives the
    same data, and the reply cache is keyed by the model too)."""
    return None if client is None else str(getattr(client, "name", client))
