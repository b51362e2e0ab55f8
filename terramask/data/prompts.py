"""The data engine's prompts, interactive templates and judge thresholds, as replaceable files.

The built-in files live in `terramask/data/prompts/`; a folder given as `DataRecipe.prompts`
replaces any of them by name (a file it lacks keeps the built-in one). The published prompts
are only images in the paper (specs/unigeoseg.md §6.1): these are TerraMask's, documented
with the rubric and thresholds in docs/data-engine.md.

Prompts are `string.Template` texts: `${name}` is filled in, everything else (JSON braces
included) is sent as written. Each file may use only the fields its step provides
(`PROMPT_FIELDS`); an unknown field is refused when the files are loaded, before any
request. The interactive templates are checked the same way and must read back through
UniGeoSeg's coordinate parser (`parse_interactive`) to the coordinates written into them.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramask.errors import InputError

#: The built-in prompt folder.
BUILT_IN = Path(__file__).with_name("prompts")

_COMMON = ("class_name", "colour", "categories", "width", "height")
#: The prompt files and the fields each may use.
PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "mask_check": _COMMON,
    "referring": _COMMON,
    "reasoning_attribute": _COMMON,
    "reasoning_cues": (*_COMMON, "count", "others"),
    "reasoning_contextual": (*_COMMON, "count", "cues"),
    "judge_referring": (*_COMMON, "instruction"),
    "judge_reasoning": (*_COMMON, "instruction", "explanation", "kind"),
}
#: Fields of the interactive templates (interactive.json: "box" and "points").
INTERACTIVE_FIELDS: dict[str, tuple[str, ...]] = {
    "box": ("x0", "y0", "x1", "y1"),
    "points": ("points",),
}
#: The judged tasks and the thresholds file's name.
JUDGED_TASKS: tuple[str, ...] = ("referring", "reasoning")
THRESHOLDS_FILE = "thresholds.json"
INTERACTIVE_FILE = "interactive.json"


@dataclass(frozen=True)
class PromptSet:
    """The prompts, interactive templates and per-task judge thresholds of a run.

    `thresholds[task][dimension]` is the lowest 1-5 score that passes; the dimensions are
    those the judge is asked for. `origins` says where each file came from.
    """

    texts: dict[str, str]
    interactive: dict[str, str]
    thresholds: dict[str, dict[str, int]]
    origins: dict[str, str]

    def fill(self, name: str, **fields: Any) -> str:
        """Prompt `name` with its fields filled in."""
        return string.Template(self.texts[name]).substitute(
            {key: str(value) for key, value in fields.items()}
        )

    def interactive_text(self, kind: str, **fields: Any) -> str:
        """The interactive instruction of `kind` ("box" or "points") with its coordinates."""
        return string.Template(self.interactive[kind]).substitute(
            {key: str(value) for key, value in fields.items()}
        )

    def digest(self) -> str:
        """A short fingerprint of every text and threshold (a run's settings record it)."""
        payload = json.dumps(
            [self.texts, self.interactive, self.thresholds], sort_keys=True
        ).encode("utf-8")
        return hashlib.sha256(payload).hexdigest()[:16]


def load_prompts(folder: str | os.PathLike | None = None) -> PromptSet:
    """The built-in prompt files, each replaced by `folder`'s file of the same name.

    Raises:
        InputError: `folder` is not a folder, a file cannot be read, a prompt uses a field
            its step does not provide, an interactive template does not read back, or the
            thresholds are not 1-5 integers per judged task and dimension.
    """
    override = None if folder is None else Path(folder)
    if override is not None and not override.is_dir():
        raise InputError(
            f"`DataRecipe.prompts` {override} is not a folder. Give a folder holding prompt "
            f"files named as the built-in ones ({', '.join(_file_names())})."
        )
    origins: dict[str, str] = {}

    def read(name: str) -> str:
        path = BUILT_IN / name
        if override is not None and (override / name).is_file():
            path = override / name
        origins[name] = "built-in" if path.parent == BUILT_IN else str(path)
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"The prompt file {path} cannot be read ({exc}).") from None

    texts = {}
    for name, allowed in PROMPT_FIELDS.items():
        text = read(f"{name}.txt")
        _check_fields(text, allowed, origins[f"{name}.txt"])
        texts[name] = text
    interactive = _interactive(read(INTERACTIVE_FILE), origins[INTERACTIVE_FILE])
    thresholds = _thresholds(read(THRESHOLDS_FILE), origins[THRESHOLDS_FILE])
    return PromptSet(texts, interactive, thresholds, origins)


def _file_names() -> list[str]:
    return [f"{n}.txt" for n in PROMPT_FIELDS] + [INTERACTIVE_FILE, THRESHOLDS_FILE]


def _check_fields(text: str, allowed: tuple[str, ...], where: str) -> None:
    template = string.Template(text)
    if not template.is_valid():
        raise InputError(
            f"The prompt {where} has a '$' that is not a field: write $$ for a dollar sign, "
            "and ${name} for a field."
        )
    unknown = sorted(set(template.get_identifiers()) - set(allowed))
    if unknown:
        raise InputError(
            f"The prompt {where} uses the field(s) {', '.join(unknown)}, which its step does not "
            f"provide; it may use {', '.join(allowed)}."
        )


def _interactive(text: str, where: str) -> dict[str, str]:
    from terramask.eval.referring_datasets import parse_interactive

    try:
        templates = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{where} is not JSON ({exc}).") from None
    if not isinstance(templates, dict) or set(templates) != set(INTERACTIVE_FIELDS):
        raise InputError(
            f"{where} must be a JSON object with the templates \"box\" and \"points\"."
        )
    for kind, fields in INTERACTIVE_FIELDS.items():
        template = templates[kind]
        if not isinstance(template, str):
            raise InputError(f"{where}: the {kind!r} template must be a text.")
        _check_fields(template, fields, f"{where} ({kind})")
        missing = sorted(set(fields) - set(string.Template(template).get_identifiers()))
        if missing:
            raise InputError(f"{where}: the {kind!r} template lacks ${{{missing[0]}}}.")
    box = string.Template(templates["box"]).substitute(x0=0.125, y0=0.25, x1=0.5, y1=0.75)
    points = string.Template(templates["points"]).substitute(points="[0.125,0.25], [0.5,0.75]")
    read_box, read_points = parse_interactive(box), parse_interactive(points)
    if read_box is None or read_box.box != (0.125, 0.25, 0.5, 0.75):
        raise InputError(
            f"{where}: the 'box' template does not read back through UniGeoSeg's parser; it "
            "must write x0,y0=[${x0},${y0}], x1,y1=[${x1},${y1}] and hold no other [a,b]."
        )
    if read_points is None or read_points.points != ((0.125, 0.25), (0.5, 0.75)):
        raise InputError(
            f"{where}: the 'points' template does not read back through UniGeoSeg's parser; "
            "it must hold ${points} and no other [a,b] or box."
        )
    return dict(templates)


def _thresholds(text: str, where: str) -> dict[str, dict[str, int]]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{where} is not JSON ({exc}).") from None
    good = isinstance(raw, dict) and set(raw) == set(JUDGED_TASKS) and all(
        isinstance(dims, dict) and dims and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            and 1 <= v <= 5 for k, v in dims.items()
        )
        for dims in raw.values()
    )  # fmt: skip
    if not good:
        raise InputError(
            f"{where} must be a JSON object with \"referring\" and \"reasoning\", each mapping "
            'its judged dimensions to the lowest passing score 1-5, e.g. {"clarity": 3}.'
        )
    return {task: dict(raw[task]) for task in JUDGED_TASKS}
