"""UniGeoSeg's instructions: which task a request is, and the conversation its model reads.

The released evaluation code (MiliLab/UniGeoSeg `RS_val_dataset.py`, specs/unigeoseg.md §3)
builds one conversation per sample in Phi's LLaMA-2-style template:

    [INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{prefix}\\n<refer> [/INST] {reply} <|endoftext|>

where `<image>` (inside the prefix) is replaced by the projected image tokens, `<refer>` by the
embeddings of " " + instruction followed by one `[SEG]` id, `<seg>` is dropped, and `<answer>`
by the explanation followed by `[SEG]` (teacher-forced; it comes after the instruction, so
causal attention keeps it from changing the mask). Task-adaptive text enhancement acts on
the text between `<image>` and `<refer>`. `PROMPT_STYLES` holds the two prefix/reply pairs the
released loaders use; the data sets map to them in `DATASET_STYLES`.

The task (`UniGeoSegTask`) picks TATE's branch and the memory's weight. The released code
takes it from the benchmark folder; `route_instruction` decides it for free text (ours): an
instruction naming coordinates the benchmark way is interactive, a question is reasoning,
anything else referring. Interactive coordinates are normalised 0-1 by the image's width and
height (origin top-left), a box `x0,y0=[a,b], x1,y1=[c,d]` or one to three `[x,y]` points, and
reach the model both in the text and as rows of four numbers (a point as [x, y, 0, 0]).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from terramask.errors import InputError

UniGeoSegTask = Literal["interactive", "referring", "reasoning"]
TASKS: tuple[str, ...] = get_args(UniGeoSegTask)

#: The released code's names of the tasks (its `prompt_type`), and the index of each task in
#: its one-hot task code.
RELEASED_TASK_NAMES = {"referring": "ref", "reasoning": "reason", "interactive": "intera"}

#: The fixed system line of the released `llava_phi` conversation template.
SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using "
    "natural language."
)
#: Phi's separator, written after the assistant's reply.
SEPARATOR = "<|endoftext|>"
#: The placeholders the conversation holds, in the released code's spelling.
IMAGE, REFER, SEG, ANSWER = "<image>", "<refer>", "<seg>", "<answer>"
_MARKERS = re.compile("(<image>|<seg>|<refer>|<answer>)")
#: The token whose first id closes the instruction and the explanation.
SEG_TOKEN = "[SEG]"
#: The explanation EarthReason's loader expects when a question has no target.
NO_TARGET_ANSWER = "There is no target object in the image."
#: How many points an interactive instruction may name (the released parser's limit).
MAX_POINTS = 3


@dataclass(frozen=True)
class PromptStyle:
    """The user text before the instruction (holding `<image>`) and the assistant's reply."""

    prefix: str
    reply: str


PROMPT_STYLES: dict[str, PromptStyle] = {
    # GeoSeg-Bench (all three tasks) and EarthReason: the released `RSRSDataset` and
    # `ReasonSegDataset`.
    "benchmark": PromptStyle(
        "This is an image <image>, Please doing Reasoning Segmentation according to the "
        "following instruction:",
        "Sure, It is <seg>. \n<answer>.",
    ),
    # RRSIS-D: the released `RRSISDDataset`.
    "referring": PromptStyle(
        "This is an image <image>, Please doing Referring Segmentation according to the "
        "following instruction:",
        "\nSure.",
    ),
}
#: The prompt style and task each referring benchmark is evaluated with (None: the sample's
#: own task, from its folder).
DATASET_STYLES: dict[str, tuple[str, UniGeoSegTask | None]] = {
    "rrsis-d": ("referring", "referring"),
    "earthreason": ("benchmark", "reasoning"),
    "unigeoseg-bench": ("benchmark", None),
    "geoseg-bench": ("benchmark", "reasoning"),
}

_QUESTION_START = re.compile(
    r"^\s*(which|what|where|who|whom|whose|why|how|is|are|was|were|can|could|would|should|"
    r"does|do|did|has|have|if)\b",
    re.IGNORECASE,
)


def conversation(style: str = "benchmark") -> str:
    """The whole conversation with its placeholders, as the released template writes it."""
    chosen = prompt_style(style)
    user = f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{chosen.prefix}\n{REFER} [/INST]"
    return f"{user} {chosen.reply} {SEPARATOR}"


def prompt_style(style: str) -> PromptStyle:
    """The `PROMPT_STYLES` entry named `style`, or an InputError naming the choices."""
    if style not in PROMPT_STYLES:
        raise InputError(
            f"`UniGeoSegSettings.prompt` must be one of {', '.join(PROMPT_STYLES)}, not "
            f"{style!r}."
        )
    return PROMPT_STYLES[style]


def conversation_parts(style: str = "benchmark", *, with_answer: bool = True) -> list[str]:
    """The conversation cut at its placeholders: text pieces and the placeholders themselves,
    in order, as the released tokenizer wrapper splits it (empty pieces left out).

    Without `with_answer` the parts stop before the explanation (`<answer>`), which is where
    a generated explanation starts.
    """
    parts = [p for p in _MARKERS.split(conversation(style)) if p]
    if not with_answer and ANSWER in parts:
        parts = parts[: parts.index(ANSWER)]
    return parts


def instruction_text(question: str) -> str:
    """The text whose tokens stand at `<refer>`: the instruction after one space."""
    return f" {question}"


def check_task(task: str) -> str:
    """`task` if it is one of `TASKS`, else an InputError naming them."""
    if task not in TASKS:
        raise InputError(
            f"`UniGeoSegSettings.task` must be one of {', '.join(TASKS)} (or None to decide "
            f"from the text), not {task!r}."
        )
    return task


@dataclass(frozen=True)
class RoutedInstruction:
    """An instruction with its task and, for interactive ones, its coordinate rows."""

    text: str
    task: UniGeoSegTask
    #: (n, 4) float rows normalised 0-1: a box [x0, y0, x1, y1] or points [x, y, 0, 0];
    #: None when the task is not interactive or the text names no coordinates.
    coordinates: np.ndarray | None = None
    #: how the task was decided: "given" or "text"
    decided_by: str = "given"


def coordinate_rows(text: str) -> np.ndarray | None:
    """The coordinates an interactive instruction names, as the released loader reads them
    (`parse_interactive`: a box first, else 1-3 bracketed points), as (n, 4) rows."""
    from terramask.eval.referring_datasets import parse_interactive

    parsed = parse_interactive(text)
    if parsed is None:
        return None
    if parsed.box is not None:
        return np.asarray([parsed.box], dtype=np.float64)
    points = np.asarray(parsed.points, dtype=np.float64).reshape(-1, 2)
    return np.concatenate([points, np.zeros_like(points)], axis=1)


def looks_like_question(text: str) -> bool:
    """A question (reasoning) rather than a description (referring): ends with "?" or opens
    with an interrogative word."""
    return text.rstrip().endswith("?") or bool(_QUESTION_START.match(text))


def route_instruction(text: str, task: str | None = None) -> RoutedInstruction:
    """The task of `text` (given, or decided from it) and its coordinates when interactive.

    Deciding (ours; the released code takes the task from the benchmark folder): coordinates
    written the benchmark way make it interactive, a question reasoning, else referring. A
    given interactive task whose text names no coordinates keeps None coordinates: the model
    then sees one zero row, as the released code gives it.
    """
    if not str(text).strip():
        raise InputError("The instruction is empty: say what to segment.")
    rows = coordinate_rows(text)
    if task is not None:
        check_task(task)
        return RoutedInstruction(text, task, rows if task == "interactive" else None, "given")  # type: ignore[arg-type]
    if rows is not None:
        return RoutedInstruction(text, "interactive", rows, "text")
    decided: UniGeoSegTask = "reasoning" if looks_like_question(text) else "referring"
    return RoutedInstruction(text, decided, None, "text")


def _number(value: float) -> str:
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def interactive_instruction(
    *,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    box: Sequence[float] | np.ndarray | None = None,
) -> RoutedInstruction:
    """The interactive instruction for normalised (0-1) positive points or one box, written
    in the GeoSeg-1M templates the released parser reads (brackets, 3 decimals).

    Raises:
        InputError: Neither or both given, more than `MAX_POINTS` points, or a coordinate
            outside 0-1.
    """
    has_points = points is not None and len(points) > 0
    if has_points == (box is not None):
        raise InputError(
            "UniGeoSeg's interactive instruction names either one box or 1 to 3 positive "
            "clicks, not both and not neither."
        )
    if box is not None:
        values = np.asarray(box, dtype=np.float64).reshape(4)
        _check_unit(values)
        x0, y0, x1, y1 = (_number(v) for v in values)
        text = (
            f"Please segment the target corresponding to the box x0,y0=[{x0},{y0}], "
            f"x1,y1=[{x1},{y1}]."
        )
        rows = values.reshape(1, 4)
    else:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) > MAX_POINTS:
            raise InputError(
                f"UniGeoSeg takes at most {MAX_POINTS} clicks per object (its instructions name "
                f"1 to 3 points); {len(pts)} were given. Give fewer clicks, or a box."
            )
        _check_unit(pts)
        named = ", ".join(f"[{_number(x)},{_number(y)}]" for x, y in pts)
        text = f"Please segment the target corresponding to the points {named}."
        rows = np.concatenate([pts, np.zeros_like(pts)], axis=1)
    rows = np.asarray([[float(_number(v)) for v in row] for row in rows], dtype=np.float64)
    return RoutedInstruction(text, "interactive", rows, "given")


def _check_unit(values: np.ndarray) -> None:
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
        raise InputError(
            "UniGeoSeg's interactive coordinates are fractions of the image's width and "
            f"height (0 to 1); got {np.round(values, 4).tolist()}."
        )


__all__ = [
    "DATASET_STYLES",
    "MAX_POINTS",
    "NO_TARGET_ANSWER",
    "PROMPT_STYLES",
    "RELEASED_TASK_NAMES",
    "SEG_TOKEN",
    "SYSTEM",
    "TASKS",
    "PromptStyle",
    "RoutedInstruction",
    "UniGeoSegTask",
    "conversation",
    "conversation_parts",
    "coordinate_rows",
    "instruction_text",
    "interactive_instruction",
    "looks_like_question",
    "prompt_style",
    "route_instruction",
]
