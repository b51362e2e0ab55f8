"""Instruction texts: interactive ones straight from the mask, and the MLLMs' replies read.

Interactive (specs/unigeoseg.md §2): per instance one prompt, a box with probability
`DataRecipe.box_share`, else points. The box is the mask's tight box at pixel edges (x0 =
left column / width, x1 = (right column + 1) / width; y likewise by height). Points are the
centres of distinct mask pixels drawn at random: one for a mask under
`DataRecipe.point_split_px` pixels, else one, two or three with `DataRecipe.point_weights`.
Coordinates are normalised 0-1, origin top-left, written with at least `DataRecipe.decimals`
decimals — more when the patch is wider than 10^decimals pixels — so that a point always
reads back inside its pixel. Trailing zeros are dropped ("0.5", "1"), never a sign or an
exponent: UniGeoSeg's parser reads only digits and dots.

Replies (`read_*`): JSON objects are found in code fences or prose (the tolerant reader of
`terramask.methods.replies`), `<think>` blocks are skipped, and a few plain-text forms are
accepted ("Question: ...", "Explanation: ..."). Each reader returns the value, or None and
the problem: "refused" (the model apologised or declined to help), "declined" (the JSON says
no, with the model's reason), or "unreadable reply" (nothing usable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from terramask.data.prompts import PromptSet
from terramask.options import DataRecipe

#: The most words an expression, question or explanation may have.
MAX_WORDS = 80
#: Replies longer than this (characters) are not searched for text forms.
_TEXT_SCAN = 20000

_REFUSALS = (
    "i'm sorry", "i am sorry", "i cannot", "i can't", "i can not", "i'm unable", "i am unable",
    "unable to assist", "unable to help", "as an ai", "i won't", "i will not",
)  # fmt: skip
_PREFIX = re.compile(r"^\s*(?:referring\s+)?(?:expression|question)\s*[:：]\s*", re.IGNORECASE)


# ----------------------------------------------------------------------------- interactive


@dataclass(frozen=True)
class Interactive:
    """One interactive instruction: its text, kind ("box" or "points") and coordinates."""

    text: str
    kind: str
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()


def coordinate_decimals(recipe: DataRecipe, width: int, height: int) -> int:
    """Decimals that keep a written point inside its pixel (see the module notes)."""
    return max(recipe.decimals, len(str(max(int(width), int(height)))))


def number(value: float, decimals: int) -> str:
    """`value` (0-1) rounded to `decimals`, without trailing zeros, sign or exponent."""
    text = f"{min(max(float(value), 0.0), 1.0):.{decimals}f}".rstrip("0").rstrip(".")
    return text or "0"


def interactive_instruction(
    mask: np.ndarray, recipe: DataRecipe, prompts: PromptSet, rng: np.random.Generator
) -> Interactive:
    """A box or 1-3 points of `mask` (H, W) as text, drawn with `rng` (module notes)."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    decimals = coordinate_decimals(recipe, width, height)
    rows, cols = np.nonzero(mask)
    if rng.random() < recipe.box_share:
        values = (
            cols.min() / width, rows.min() / height,
            (cols.max() + 1) / width, (rows.max() + 1) / height,
        )  # fmt: skip
        written = [number(v, decimals) for v in values]
        text = prompts.interactive_text(
            "box", x0=written[0], y0=written[1], x1=written[2], y1=written[3]
        )
        box = tuple(float(w) for w in written)
        return Interactive(text, "box", box=box)  # type: ignore[arg-type]
    if len(rows) < recipe.point_split_px:
        count = 1
    else:
        weights = np.asarray(recipe.point_weights, dtype=float)
        count = int(rng.choice([1, 2, 3], p=weights / weights.sum()))
    count = min(count, len(rows))
    picked = np.sort(rng.choice(len(rows), size=count, replace=False))
    points = [
        (number((cols[i] + 0.5) / width, decimals), number((rows[i] + 0.5) / height, decimals))
        for i in picked
    ]
    text = prompts.interactive_text("points", points=", ".join(f"[{x},{y}]" for x, y in points))
    return Interactive(
        text, "points", points=tuple((float(x), float(y)) for x, y in points)
    )


# ----------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reading:
    """What a reply said: `value` when usable, else None and `problem` (module notes)."""

    value: Any = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _without_thinking(text: str) -> str:
    """The reply without `<think>...</think>` blocks (an unclosed one runs to the end)."""
    out, position = [], 0
    while True:
        start = text.find("<think>", position)
        if start < 0:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position:start])
        end = text.find("</think>", start)
        if end < 0:
            return "".join(out)
        position = end + len("</think>")


def _objects(text: str) -> list[dict]:
    """Every JSON object in the reply, in order (objects inside lists too)."""
    from terramask.methods.replies import _json_values  # the bounded, tolerant JSON finder

    values, _ = _json_values(text)
    found: list[dict] = []
    for value in values:
        if isinstance(value, dict):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, dict))
    return found


def _refusal(text: str) -> Reading | None:
    head = text.strip()[:300].lower().replace("’", "'")
    if any(phrase in head for phrase in _REFUSALS):
        return Reading(problem=f"refused: {_short(text)}")
    return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str) -> str | None:
    """A sentence as written into the data: one line, no "Question:" prefix, no quotes."""
    text = " ".join(str(text).split())
    text = _PREFIX.sub("", text).strip().strip('"“”').strip()
    return text or None


def _too_long(*texts: str) -> Reading | None:
    for text in texts:
        if len(text.split()) > MAX_WORDS:
            return Reading(problem=f"unreadable reply (over {MAX_WORDS} words)")
    return None


def _declined(obj: dict, key: str) -> Reading:
    reason = obj.get("reason") or obj.get("why") or "no reason given"
    return Reading(problem=f"declined: {_short(reason)}")


def _text_field(text: str, names: tuple[str, ...]) -> str | None:
    """The rest of the first line starting with one of `names` and a colon."""
    pattern = re.compile(
        r"^\s*[*#>-]*\s*(?:" + "|".join(names) + r")\s*[*]*\s*[:：]\s*(.+)$",
        re.IGNORECASE | re.MULTILINE,
    )
    match = pattern.search(text[:_TEXT_SCAN])
    return _clean(match.group(1)) if match else None


def read_expression(reply: str) -> Reading:
    """A referring expression: {"expression": "..."} (or "question"/"text"), or a line
    "Expression: ..." / "Question: ..."; {"expression": null, "reason": ...} declines."""
    text = _without_thinking(reply)
    for obj in _objects(text):
        for key in ("expression", "referring_expression", "question", "text", "instruction"):
            if key in obj:
                value = obj[key]
                if not isinstance(value, str) or not value.strip():
                    return _declined(obj, key)
                cleaned = _clean(value)
                if cleaned is None:
                    return _declined(obj, key)
                return _too_long(cleaned) or Reading(cleaned)
    line = _text_field(text, ("referring expression", "expression", "question"))
    if line:
        return _too_long(line) or Reading(line)
    return _refusal(text) or Reading(problem=f"unreadable reply: {_short(text, 80)!r}")


def read_question(reply: str) -> Reading:
    """A reasoning question and its explanation: {"question", "explanation"} (or "reason"/
    "answer" for the explanation), or lines "Question: ..." and "Explanation: ..."; a null
    question declines. The value is (question, explanation)."""
    text = _without_thinking(reply)
    for obj in _objects(text):
        if "question" in obj:
            question = obj["question"]
            if not isinstance(question, str) or _clean(question) is None:
                return _declined(obj, "question")
            explanation = next(
                (obj[k] for k in ("explanation", "reason", "answer", "rationale")
                 if isinstance(obj.get(k), str) and obj[k].strip()),
                None,
            )  # fmt: skip
            if explanation is None:
                return Reading(problem="unreadable reply (a question without an explanation)")
            pair = (_clean(question), _clean(explanation))
            return _too_long(*pair) or Reading(pair)  # type: ignore[arg-type]
    question = _text_field(text, ("question",))
    explanation = _text_field(text, ("explanation", "reason", "answer", "rationale"))
    if question and explanation:
        return _too_long(question, explanation) or Reading((question, explanation))
    return _refusal(text) or Reading(problem=f"unreadable reply: {_short(text, 80)!r}")


def read_cues(reply: str) -> Reading:
    """The distinguishing cues: {"cues": ["...", ...]} (or a bare JSON list of texts); an
    empty list declines. The value is a list of 1-5 cue texts."""
    from terramask.methods.replies import _json_values

    text = _without_thinking(reply)
    values, _ = _json_values(text)
    for value in values:
        cues = value.get("cues") if isinstance(value, dict) else value
        if isinstance(value, dict) and "cues" not in value:
            continue
        if isinstance(cues, list) and all(isinstance(c, str) for c in cues):
            cleaned = [c for c in (_clean(c) for c in cues) if c]
            if not cleaned:
                return _declined(value if isinstance(value, dict) else {}, "cues")
            return _too_long(*cleaned) or Reading(cleaned[:5])
    return _refusal(text) or Reading(problem=f"unreadable reply: {_short(text, 80)!r}")


_YES = {"true", "yes", "keep", "accept", "accepted", "valid", "pass"}
_NO = {"false", "no", "reject", "rejected", "invalid", "fail", "discard"}


def read_keep(reply: str) -> Reading:
    """The mask check's decision: {"keep": true|false, "reason": "..."} ("decision":
    "keep"/"reject" too), or a reply whose first word is keep/reject/yes/no. The value is
    (keep, reason)."""
    text = _without_thinking(reply)
    for obj in _objects(text):
        for key in ("keep", "decision", "valid", "accept"):
            if key in obj:
                decision = _decision(obj[key])
                if decision is not None:
                    reason = obj.get("reason") or obj.get("why") or ""
                    return Reading((decision, _short(reason)))
    words = re.findall(r"[A-Za-z]+", text[:200])
    decision = _decision(words[0]) if words else None
    if decision is not None:
        return Reading((decision, _short(text)))
    return _refusal(text) or Reading(problem=f"unreadable reply: {_short(text, 80)!r}")


def _decision(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    return True if word in _YES else False if word in _NO else None


def read_scores(reply: str, dimensions: tuple[str, ...]) -> Reading:
    """A judge's integer 1-5 score for every dimension: from a JSON object, else from
    "dimension: N" text. A missing or out-of-range score makes the reply unreadable. The
    value is {dimension: score}."""
    text = _without_thinking(reply)
    scores: dict[str, int] = {}
    for obj in _objects(text):
        folded = {str(k).strip().lower(): v for k, v in obj.items()}
        for dimension in dimensions:
            if dimension in scores or dimension.lower() not in folded:
                continue
            score = _score(folded[dimension.lower()])
            if score is not None:
                scores[dimension] = score
    for dimension in dimensions:
        if dimension not in scores:
            key = re.escape(dimension).replace("_", "[ _]")
            match = re.search(
                rf'"?{key}"?\s*[:=]\s*"?([0-9]+(?:\.[0-9]+)?)', text[:_TEXT_SCAN], re.IGNORECASE
            )
            score = _score(match.group(1)) if match else None
            if score is not None:
                scores[dimension] = score
    missing = [d for d in dimensions if d not in scores]
    if missing:
        refused = _refusal(text) if not scores else None
        problem = f"unreadable reply (no 1-5 score for {', '.join(missing)})"
        return refused or Reading(problem=problem)
    return Reading(scores)


def _score(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number_ = float(value)
    except (TypeError, ValueError):
        return None
    if not 1 <= number_ <= 5 or number_ != int(number_):
        return None
    return int(number_)
