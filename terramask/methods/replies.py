"""Asks a multimodal LLM for boxes or clicks, and reads its reply into the image's pixels.

Pure text → structures (no HTTP, no model): the prompts ask for strict JSON in one coordinate
frame, and this module forgives what models actually write — except the frame.

Coordinate frames (`terramask.protocols.COORDINATE_FRAMES`): "pixel" (pixels of the image as
the model was shown it, `MLLMReply.shown_size`; origin top-left, x right, y down),
"norm1000" (0-1000 on both axes, Qwen3-VL's native grid) and "norm1" (0-1). Each client
has one (`frame`, guessed from the model or chosen with `coords=`). The prompt asks for that
frame in words — in "pixel" it states the image's size, W x H, as GeoSeg's reference does —
and the parser reads the reply in exactly the frame of `MLLMReply.frame`, then maps it to
the caller's image. Nothing is rescaled from one frame into another: a value outside the
frame (below 0, or beyond the width, height, 1000 or 1) is clamped to it and reported in
`ParsedReply.out_of_frame` and `warnings`; values that look written in another frame (all
at most 1 when pixels were asked for, say) are only reported (`suspected_frame`).

The usual request (what `ask` does):

    frame, shown = request_frame(mllm, image.shape[:2])       # or prompt_for(...) in one go
    prompt = box_prompt(question, frame=frame, image_size=shown)
    reply = mllm.ask(image, prompt)
    parsed = parse_reply(reply, image.shape[:2], max_objects=...)

What the prompt writer can rely on (see `box_prompt` and `clicks_prompt`):

- Boxes: `{"bbox": [x1, y1, x2, y2], "prompt": "<entity noun>"}`; `box` and `bbox_2d` (Qwen's
  own key) work too, as do `boxes`/`bboxes` with a list of boxes, a JSON list of such objects,
  or several objects in one reply. The entity comes from `prompt`, else `entity`, `label`,
  `object`, `target`, `noun` or `category`. "Nothing there" is `{"bbox": [], "prompt": ""}`.
- Clicks: `{"points": [[x, y], ...], "labels": [1, 0, ...]}` (1 = on the object, 0 = on
  background to exclude; missing labels count as positive) or
  `{"positive": [[x, y], ...], "negative": [[x, y], ...]}`; Qwen's `point_2d` gives a
  positive click. "Nothing there" is `{"points": [], "labels": []}`.

What is forgiven, each with a warning in `ParsedReply.warnings`:

- JSON in ```json fences or inside prose, single quotes, trailing commas, Python's
  True/False/None, numbers written as strings; `<think>` blocks are ignored.
- A box whose second corner lies left of or above its first (x2 < x1 or y2 < y1) is read as
  [x, y, w, h] when x + w and y + h both stay inside the frame the model was asked for (the
  shown image, 1000 or 1); otherwise its corners are swapped. (An [x, y, w, h] box with
  w > x and h > y cannot be told apart from a corner box and is read as corners.)
- Box coordinates outside the frame are clamped to it (and reported); a box entirely
  outside, and a click outside, are dropped (and reported). If nothing usable remains, the
  reply counts as `no_target`.

`no_target` is True for an explicit empty list, a refusal ("I cannot", "no such",
"not present", "there is no", ...) without coordinates, or a `"found": false` style flag.
Either `no_target` is True or the reply has at least one box or click. A reply with neither
coordinates nor a refusal raises `MLLMError("could not parse the model's reply: ...")`.

Whatever the model writes, reading it takes time linear in the reply's length (no pattern
here can backtrack over more than the text it matches, and each bracket's partner is found
once) and bounded memory:

- At most `max_objects` boxes, and the clicks of at most `max_objects` click groups (a group
  is the clicks of one JSON object), are kept: the first ones as written, with a warning that
  names how many there were (`AskOptions.max_objects`, 20 by default).
- The JSON-like pieces tried are loaded with at most `LOAD_BUDGET` times the reply's length
  (plus 64 KiB) in total: after a large piece fails to load, the pieces inside it are tried
  while they fit the rest of that budget, so only text built to defeat the reader loses parts.
- Structure nested deeper than `MAX_DEPTH` levels is not read (a warning says so).
- At most `MAX_WARNINGS` warnings are kept (the `max_objects` ones always), then a count of
  the rest; likewise at most `MAX_WARNINGS` entries of `out_of_frame`.
"""

from __future__ import annotations

import ast
import bisect
import json
import math
import re
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terramask.errors import InputError, MLLMError
from terramask.options import COORDINATE_FRAMES, AskOptions, check_at_least
from terramask.protocols import MLLMReply, frame_name

#: Characters handed to the JSON readers over one reply, as a multiple of its length.
LOAD_BUDGET = 4
#: Nesting levels of a reply's JSON that are read; deeper structure is ignored.
MAX_DEPTH = 32
#: Warnings kept per reply (the `max_objects` ones always), then a count of the rest.
MAX_WARNINGS = 100

_BOX_KEYS = ("bbox", "box", "bbox_2d", "box_2d")
_BOX_LIST_KEYS = ("bboxes", "boxes")
_ENTITY_KEYS = ("prompt", "entity", "label", "object", "target", "noun", "category")
_ANSWER_KEYS = ("answer", "reason", "reasoning", "explanation")
_ABSENT_FLAGS = ("found", "exists", "present")
_POSITIVE_WORDS = {"1", "true", "pos", "positive", "+", "fg", "foreground"}
_NEGATIVE_WORDS = {"0", "-1", "false", "neg", "negative", "-", "bg", "background"}

_REFUSALS = re.compile(
    r"\b(i cannot|i can't|i can not|i am unable|i'm unable|unable to (?:find|locate|identify)|"
    r"no such|not present|there is no|there are no|there is none|there are none|none found|"
    r"nothing (?:found|matches)|there isn't|there aren't|does not contain|"
    r"doesn't contain|not visible|cannot (?:find|locate|identify)|can't (?:find|locate)|"
    r"could not (?:find|locate)|couldn't (?:find|locate)|no (?:matching|relevant) object)\b",
    re.IGNORECASE,
)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_FENCE_HEAD = re.compile(r"[a-zA-Z]*\s*")  # the language tag and blank after ```


@dataclass
class ParsedReply:
    """What a reply says, in the pixels of the original image.

    boxes:        float64 (N, 4) x1, y1, x2, y2, clamped to the image
    points:       float64 (M, 2) x, y clicks inside the image
    point_labels: int64   (M,)   1 positive, 0 negative
    entity:       the noun the model named ("prompt"), or None
    answer:       the reply's words without the JSON (or its "answer" field)
    no_target:    the model says the object is not in the image
    warnings:     everything that was repaired, guessed or left out, for logs and reports
    frame:        the coordinate frame the reply was read in (the one it was asked for)
    out_of_frame: each coordinate that lay outside that frame, as JSON-ready dicts:
                  {"object": "box"|"click", "index": i, "coordinate": "x1"|"y1"|"x2"|"y2"|
                  "x"|"y", "value": v, "frame": f, "limit": the bound crossed (0, or the
                  frame's width, height, 1000 or 1), "action": "clamped"|"dropped"};
                  values as read (a box's corners ordered), in the frame's units
    suspected_frame: another frame the values look written in (e.g. "norm1000" when pixels
                  were asked for and values pass the image's size but stay within 1000),
                  reported only: the reply is never rescaled into it; None when nothing
                  looks amiss
    """

    boxes: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    entity: str | None
    answer: str
    no_target: bool
    warnings: list[str] = field(default_factory=list)
    frame: str = "pixel"
    out_of_frame: list[dict[str, Any]] = field(default_factory=list)
    suspected_frame: str | None = None


# ---------------------------------------------------------------------------- prompts


def box_prompt(
    question: str, *, frame: str = "pixel", image_size: tuple[int, int] | None = None
) -> str:
    """GeoSeg's instruction: one box around what the question refers to, as strict JSON.

    The structure of GeoSeg's reference prompt (`qwen_api_server.py`), in our words and
    adapted to the frame: JSON only; global coordinate alignment ([0, 0] top-left, [W, H]
    bottom-right with W and H filled in); whole-entity inclusion; execution steps ending in
    a boundary check; the image size restated; the schema `{"bbox": [x1, y1, x2, y2],
    "prompt": "<entity noun>"}` with a warning against x drift; `prompt` a simple English noun
    phrase for SAM 3. We add the "not in the image" answer `{"bbox": [], "prompt": ""}`.

    Args:
        question: What to find.
        frame: The coordinate frame to ask for ("pixel", "norm1000", "norm1"): the client's
            `frame` (see `request_frame`).
        image_size: The (H, W) the model will see the image at (the client's
            `shown_size(...)`), stated in the "pixel" frame; without it the prompt names W
            and H without numbers. Ignored in the normalised frames, whose prompts state the
            frame instead.

    The text depends only on the arguments (it is part of the reply cache's key).
    """
    question = _check_question(question)
    words = _FrameWords(frame, image_size)
    return "\n".join([
        "Look carefully at this overhead (satellite or aerial) image and answer the question "
        "about it. Reply with a single valid JSON object and nothing else.",
        "",
        "GUIDELINES",
        f"1. Global coordinate alignment: before you place the box, {words.alignment} "
        "Keep the horizontal (x) and vertical (y) coordinates on this grid, without any "
        "shift.",
        "2. Whole-entity inclusion: the box must enclose the entire physical structure of "
        "the target. Do not cut off its edges or the parts that stick out (for a bridge, "
        "both of its ramps; for an aircraft, the wingtips).",
        "",
        "STEPS",
        "1. Look over the whole image to understand the scene.",
        f'2. Find the target the question asks about: "{question}"',
        "3. Boundary check: look closely at each edge of the target and make sure that x1, "
        "y1, x2 and y2 reach its outermost pixels.",
        "",
        words.size,
        "",
        "ANSWER FORMAT",
        '{"bbox": [x1, y1, x2, y2], "prompt": "<entity noun>"}',
        f'- "bbox": x1, y1 is the top-left corner and x2, y2 the bottom-right corner, '
        f"{words.units}. IMPORTANT: do not let the coordinates drift; check that the x "
        "values are not shifted to the right, and make the box wide and tall enough to "
        "hold the whole object.",
        '- "prompt": a simple English noun or short noun phrase naming the target, for the '
        'segmentation model SAM 3 (e.g. "bridge", "aircraft", "stadium").',
        '- If the target is not in the image, answer exactly: {"bbox": [], "prompt": ""}',
        "",
        "Answer with the JSON object only.",
    ])


def clicks_prompt(
    question: str,
    *,
    max_clicks: int = 6,
    frame: str = "pixel",
    image_size: tuple[int, int] | None = None,
) -> str:
    """The click-prompting instruction: positive and negative points, as strict JSON.

    `frame` and `image_size` as in `box_prompt`: the prompt states the frame, and in "pixel"
    the image's size, the same way. The text depends only on the arguments."""
    question = _check_question(question)
    words = _FrameWords(frame, image_size)
    return "\n".join([
        "You are looking at an overhead (satellite or aerial) image.",
        f"Question: {question}",
        "Mark the target that the question refers to with clicks for a segmentation model. "
        "Answer with strict JSON only, no other text:",
        '{"points": [[x, y], ...], "labels": [1, 0, ...]}',
        f"- Coordinates: {words.alignment}",
        f"- {words.size}",
        f"- Each point is [x, y], {words.units}.",
        "- Label 1 marks a point on the target; label 0 marks a point on background next to "
        "it that must be excluded. The first point is a positive click well inside the "
        f"target. Use 1 to {max_clicks} points.",
        '- If the target is not in the image, answer exactly: {"points": [], "labels": []}',
    ])


def request_frame(mllm: Any, image_size: tuple[int, int]) -> tuple[str, tuple[int, int]]:
    """The frame to ask `mllm` for and the (H, W) it will see an image of `image_size` at.

    The clients of `terramask.models.mllm` have `frame` and `shown_size(image_size)`; any
    other `MLLM` (a test double) is asked for pixels of the image as given."""
    frame = _check_frame(getattr(mllm, "frame", "pixel"), f"the client {mllm!r}")
    size_of = getattr(mllm, "shown_size", None)
    shown = size_of(tuple(image_size)) if callable(size_of) else image_size
    return frame, (int(shown[0]), int(shown[1]))


def prompt_for(
    mllm: Any,
    question: str,
    image_size: tuple[int, int],
    *,
    clicks: bool = False,
    max_clicks: int = 6,
) -> str:
    """`box_prompt` (or `clicks_prompt`) in `mllm`'s frame for an image of `image_size`
    (H, W, before the client shrinks it): `request_frame` then the prompt."""
    frame, shown = request_frame(mllm, image_size)
    if clicks:
        return clicks_prompt(question, max_clicks=max_clicks, frame=frame, image_size=shown)
    return box_prompt(question, frame=frame, image_size=shown)


class _FrameWords:
    """How a prompt states its coordinate frame: the alignment sentence, the size line and
    the units of a coordinate."""

    def __init__(self, frame: str, image_size: tuple[int, int] | None) -> None:
        frame = _check_frame(frame, "the prompt")
        axes = "x grows to the right and y grows downwards"
        if frame == "norm1000":
            self.alignment = (
                "use the relative 0-1000 grid: [0, 0] is the top-left corner of the image "
                "and [1000, 1000] its bottom-right corner, whatever the image's size in "
                f"pixels; {axes}.")
            self.size = ("Coordinate frame: relative coordinates from 0 to 1000 on both axes "
                         "(0-1000, not pixels).")
            self.units = "as relative coordinates from 0 to 1000 (not pixels)"
        elif frame == "norm1":
            self.alignment = (
                "use fractions of the image's size: [0, 0] is the top-left corner of the "
                "image and [1, 1] its bottom-right corner, whatever the image's size in "
                f"pixels; {axes}.")
            self.size = ("Coordinate frame: fractions from 0 to 1 of the image's width and "
                         "height (0-1, not pixels), e.g. 0.25.")
            self.units = "as fractions from 0 to 1 of the image's width and height"
        elif image_size is None:
            self.alignment = (
                "fix the origin [0, 0] at the top-left corner of the image and [W, H] at its "
                "bottom-right corner, where W and H are the image's width and height in "
                f"pixels; {axes}.")
            self.size = "Image size: W x H pixels, the width and height of this image."
            self.units = "in pixels of this image"
        else:
            height, width = _check_size(image_size)
            self.alignment = (
                f"fix the origin [0, 0] at the top-left corner of the image and [{width}, "
                f"{height}] at its bottom-right corner; {axes}, in pixels.")
            self.size = f"Image size: {width} x {height} pixels (width x height)."
            self.units = f"in pixels of this {width} x {height} image"


def _check_frame(frame: Any, where: str) -> str:
    name = frame_name(frame)
    if name not in COORDINATE_FRAMES:
        raise InputError(
            f"The coordinate frame '{frame}' of {where} is not one TerraMask can read. Use one "
            f"of: {', '.join(COORDINATE_FRAMES)}."
        )
    return name


def _check_size(image_size: Any) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise InputError(
            f"The image size {image_size!r} stated in the multimodal LLM's prompt must be "
            "(height, width) in whole pixels, each at least 1."
        )
    return height, width


def _check_question(question: str) -> str:
    text = " ".join(str(question).split())
    if not text:
        raise InputError(
            "An empty question was given to the multimodal LLM. Ask about something in the "
            'image, e.g. "the largest building next to the roundabout".'
        )
    return text


# ---------------------------------------------------------------------------- parsing


def parse_reply(
    reply: MLLMReply,
    image_size: tuple[int, int],
    *,
    max_objects: int = AskOptions.max_objects,
) -> ParsedReply:
    """Boxes, clicks and words from a reply, in the pixels of the caller's image.

    The coordinates are read in exactly `reply.frame`, the frame the model was asked for:
    pixels of `reply.shown_size`, 0-1000 or 0-1. Values outside it are clamped (box
    corners) or dropped (clicks, boxes entirely outside) and listed in `out_of_frame`;
    nothing is rescaled into another frame.

    Args:
        reply: What the client returned.
        image_size: The (H, W) the caller passed in, before the client resized it to
            `reply.shown_size`.
        max_objects: Keep at most this many boxes, and the clicks of at most this many
            click groups, the first ones as written (`AskOptions.max_objects`); a warning
            names how many the reply gave.

    Raises:
        MLLMError: The reply holds no box, no clicks and no refusal.
        InputError: `reply.frame` is unknown, or `max_objects` is below 1.
    """
    height, width = int(image_size[0]), int(image_size[1])
    frame = _check_frame(reply.frame, f"the reply from '{reply.model}'")
    check_at_least(max_objects, 1, "AskOptions.max_objects")
    warnings = _Warnings()
    text = _THINK.sub(" ", reply.text or "")
    values, spans = _json_values(text)
    found = _Found()
    for value in values:
        found.collect(value, warnings)
    answer = _without(text, spans) or found.answer
    refusal = bool(_REFUSALS.search(_without(text, spans) or found.answer or ""))
    outside = _OutOfFrame(frame)

    if not found.boxes and not found.points:
        if found.empty_marker or found.absent or refusal:
            return _nothing(found.entity, answer, warnings, outside, None)
        raise MLLMError(
            f"could not parse the model's reply: {reply.text.strip()[:200]!r} (model "
            f"'{reply.model}': it holds no box, no clicks and no refusal). Check that the "
            "prompt asks for the JSON documented in terramask.methods.replies (box_prompt, "
            "clicks_prompt), or try a stronger model."
        )
    if refusal:
        warnings.append("the reply reads like a refusal but also gives coordinates; "
                        "the coordinates were used")
    found.keep_first(max_objects, warnings)

    shown = (max(1, int(reply.shown_size[0])), max(1, int(reply.shown_size[1])))
    limits = _limits(frame, shown)
    suspected = _suspected_frame(frame, found, limits, shown, warnings)
    scale_x, scale_y = width / limits[0], height / limits[1]
    where = _where(frame, shown)

    boxes = []
    for index, raw in enumerate(found.boxes):
        box = _order_box(raw, limits, index, warnings)
        kept = _clamp_box(box, limits, index, where, warnings, outside)
        if kept is not None:
            boxes.append([kept[0] * scale_x, kept[1] * scale_y,
                          kept[2] * scale_x, kept[3] * scale_y])
    points, labels = [], []
    for index, ((x, y), label) in enumerate(zip(found.points, found.labels, strict=True)):
        crossed = outside.check("click", index, (("x", x, limits[0]), ("y", y, limits[1])),
                                "dropped")
        if crossed:
            warnings.append(f"click {index} at ({x:g}, {y:g}) lies outside {where} and was "
                            "dropped")
            continue
        points.append((x * scale_x, y * scale_y))
        labels.append(label)
    if not boxes and not points:
        warnings.append("no box or click lies inside the image; treated as no target")
        return _nothing(found.entity, answer, warnings, outside, suspected)
    outside.finish(warnings)
    return ParsedReply(
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        points=np.asarray(points, dtype=np.float64).reshape(-1, 2),
        point_labels=np.asarray(labels, dtype=np.int64),
        entity=found.entity, answer=answer, no_target=False, warnings=warnings.kept(),
        frame=frame, out_of_frame=outside.entries, suspected_frame=suspected,
    )


def _nothing(entity: str | None, answer: str, warnings: _Warnings, outside: _OutOfFrame,
             suspected: str | None) -> ParsedReply:
    outside.finish(warnings)
    return ParsedReply(
        boxes=np.zeros((0, 4)), points=np.zeros((0, 2)),
        point_labels=np.zeros((0,), dtype=np.int64), entity=entity, answer=answer,
        no_target=True, warnings=warnings.kept(), frame=outside.frame,
        out_of_frame=outside.entries, suspected_frame=suspected,
    )


class _OutOfFrame:
    """The coordinates of one reply that lay outside its frame (`ParsedReply.out_of_frame`):
    the first `MAX_WARNINGS` of them, then a warning counting the rest."""

    def __init__(self, frame: str) -> None:
        self.frame = frame
        self.entries: list[dict[str, Any]] = []
        self.left_out = 0

    def check(self, kind: str, index: int,
              coordinates: tuple[tuple[str, float, float], ...], action: str) -> bool:
        """Record each (name, value, upper limit) outside [0, limit]; whether any was."""
        crossed = False
        for name, value, limit in coordinates:
            bound = 0.0 if value < 0 else limit if value > limit else None
            if bound is None:
                continue
            crossed = True
            if len(self.entries) >= MAX_WARNINGS:
                self.left_out += 1
                continue
            self.entries.append({
                "object": kind, "index": index, "coordinate": name, "value": _plain(value),
                "frame": self.frame, "limit": _plain(bound), "action": action,
            })
        return crossed

    def finish(self, warnings: _Warnings) -> None:
        if self.left_out:
            warnings.append(f"{self.left_out} more coordinates outside the '{self.frame}' "
                            "frame were not listed", always=True)
            self.left_out = 0


def _plain(value: float) -> int | float:
    """A JSON-friendly number: an int when it is whole."""
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


class _Warnings(list):
    """The warnings of one reply: `MAX_WARNINGS` at most, then a count of those left out;
    `always` ones (what `max_objects` left out) are kept regardless."""

    def __init__(self) -> None:
        super().__init__()
        self.left_out = 0

    def append(self, message: str, *, always: bool = False) -> None:
        if always or len(self) < MAX_WARNINGS:
            super().append(message)
        else:
            self.left_out += 1

    def kept(self) -> list[str]:
        more = [f"{self.left_out} more warnings were left out"] if self.left_out else []
        return list(self) + more


# ---------------------------------------------------------------------------- JSON finding


def _json_values(text: str) -> tuple[list[Any], list[tuple[int, int]]]:
    """Every JSON-like value in the text (fenced first, then bare) and the spans it took."""
    values: list[Any] = []
    spans: list[tuple[int, int]] = []
    budget = _Budget(LOAD_BUDGET * len(text) + 65536)
    for span, (start, end) in _fences(text):
        inner = text[start:end]
        value = _loads(inner) if budget.take(len(inner)) else _FAIL
        if value is not _FAIL:
            values.append(value)
            spans.append(span)
        else:
            found, _ = _bare_values(inner, start, budget)
            if found:
                values.extend(found)
                spans.append(span)
    masked = _without_spans(text, spans, keep_length=True)
    bare, bare_spans = _bare_values(masked, 0, budget)
    return values + bare, spans + bare_spans


def _fences(text: str) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """The span of each ```fenced``` block and of its content, after the language tag.

    What the regex ```[a-zA-Z]*\\s*\\n?(.*?)``` (DOTALL) finds, without its backtracking: a
    fence left open followed by a long blank took time quadratic in the blank's length."""
    position = 0
    while True:
        start = text.find("```", position)
        if start < 0:
            return
        inner = _FENCE_HEAD.match(text, start + 3).end()  # type: ignore[union-attr]
        end = text.find("```", inner)
        if end < 0:
            return
        yield (start, end + 3), (inner, end)
        position = end + 3


class _Budget:
    """Characters the JSON readers may still be handed (see `LOAD_BUDGET`)."""

    def __init__(self, characters: int) -> None:
        self.left = characters

    def take(self, characters: int) -> bool:
        if characters > self.left:
            return False
        self.left -= characters
        return True


_OPENING = re.compile(r"[{\[]")


def _bare_values(
    text: str, offset: int, budget: _Budget
) -> tuple[list[Any], list[tuple[int, int]]]:
    """Balanced {...} / [...] segments that load, scanning left to right."""
    values, spans = [], []
    closing = _Closings(text)
    start = 0
    while True:
        match = _OPENING.search(text, start)
        if match is None:
            return values, spans
        opening = match.start()
        end = closing.after(opening)
        value = _FAIL
        if end > 0 and budget.take(end - opening):
            value = _loads(text[opening:end])
        if value is not _FAIL and isinstance(value, dict | list) and value != []:
            values.append(value)
            spans.append((offset + opening, offset + end))
            start = end
        else:
            start = opening + 1


_OUTSIDE_QUOTES = re.compile(r"[\"'{}\[\]]")
_QUOTE_END = {'"': re.compile(r'["\\]'), "'": re.compile(r"['\\]")}


class _Closings:
    """Where the bracket opened at a position closes: the first `}` or `]` at which the
    brackets counted from it balance, outside quoted strings that begin after it (a
    backslash escapes the next character inside them); -1 when they never balance.

    Each walk stops at a bracket opened inside it whose closing is already known and jumps
    past it (or fails with it), and remembers every closing it finds, so that asking for
    every opening of a text costs time linear in its length, not quadratic."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.known: dict[int, int] = {}
        self.quote_ends: dict[int, int] = {}

    def after(self, opening: int) -> int:
        """Index after the bracket closing the one at `opening`, or -1."""
        text, known = self.text, self.known
        if opening in known:
            return known[opening]
        walks = [opening]  # openings whose closing is sought, innermost last
        index = opening + 1
        while walks:
            result = -1
            while True:
                match = _OUTSIDE_QUOTES.search(text, index)
                if match is None:
                    break
                char, index = match.group(), match.start()
                if char in "\"'":
                    index = self._quote_end(index)
                elif char in "}]":
                    result = index + 1
                    break
                elif index in known:
                    if known[index] < 0:
                        break
                    index = known[index]
                else:
                    walks.append(index)
                    index += 1
            if result < 0:
                for walk in walks:
                    known[walk] = -1
                break
            known[walks.pop()] = index = result
        return known[opening]

    def _quote_end(self, quote: int) -> int:
        """Index after the string opened at `quote` (the text's end when it never closes)."""
        if quote not in self.quote_ends:
            text, finder, index = self.text, _QUOTE_END[self.text[quote]], quote + 1
            while True:
                match = finder.search(text, index)
                if match is None:
                    index = len(text)
                    break
                if match.group() == "\\":
                    index = match.start() + 2
                else:
                    index = match.start() + 1
                    break
            self.quote_ends[quote] = index
        return self.quote_ends[quote]


_FAIL = object()
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_WORDS = {"true": "True", "false": "False", "null": "None"}
_JSON_WORDS = re.compile(r"\b(true|false|null)\b")
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")  # a word that is not part of a number (1e5, 0x1f)
_LITERAL_NAMES = {"true", "false", "null", "True", "False", "None"}


def _loads(candidate: str) -> Any:
    """JSON, else JSON without trailing commas, else a Python literal (single quotes)."""
    candidate = candidate.strip()
    if not candidate or candidate[0] not in "{[":
        return _FAIL
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):
        pass
    if _TRAILING_COMMA.search(candidate):
        relaxed = _outside_strings(candidate, lambda part: _TRAILING_COMMA.sub(r"\1", part))
        try:
            return json.loads(relaxed)
        except (ValueError, RecursionError):
            pass
    names: set[str] = set()

    def python_words(part: str) -> str:
        names.update(_NAME.findall(part))
        return _JSON_WORDS.sub(lambda m: _PY_WORDS[m.group(1)], part)

    python = _outside_strings(candidate, python_words)
    if not names <= _LITERAL_NAMES:  # a Python literal names nothing else: not worth parsing
        return _FAIL
    try:
        return ast.literal_eval(python)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _FAIL


# A quoted string up to its closing quote or the end: unrolled so that it never backtracks.
_STRING = re.compile(
    r""""[^"\\]*(?:\\[\s\S]?[^"\\]*)*(?:"|\Z)"""
    r"""|'[^'\\]*(?:\\[\s\S]?[^'\\]*)*(?:'|\Z)"""
)


def _outside_strings(text: str, change: Callable[[str], str]) -> str:
    """Apply `change` to the parts of `text` that are not inside quoted strings."""
    pieces, last = [], 0
    for string in _STRING.finditer(text):
        pieces.append(change(text[last:string.start()]))
        pieces.append(string.group())
        last = string.end()
    pieces.append(change(text[last:]))
    return "".join(pieces)


def _without_spans(text: str, spans: list[tuple[int, int]], *, keep_length: bool) -> str:
    out, last = [], 0
    for start, end in sorted(spans):
        out.append(text[last:start])
        out.append(" " * (end - start) if keep_length else " ")
        last = max(last, end)
    out.append(text[last:])
    return "".join(out)


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    """The reply's prose: the text without its JSON, fences and surplus whitespace."""
    prose = _without_spans(text, spans, keep_length=False).replace("```", " ")
    return " ".join(prose.split())


# ---------------------------------------------------------------------------- structures


class _Found:
    """Boxes, clicks and words gathered from every JSON value in a reply, as written."""

    def __init__(self) -> None:
        self.boxes: list[list[float]] = []
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self.groups: list[int] = []  # the click group of each point, in order
        self.click_groups = 0
        self.entity: str | None = None
        self.answer = ""
        self.empty_marker = False
        self.absent = False
        self.too_deep = False

    def collect(self, value: Any, warnings: list[str], depth: int = 0) -> None:
        if depth >= MAX_DEPTH and isinstance(value, dict | list):
            if not self.too_deep:
                self.too_deep = True
                warnings.append(f"parts of the reply nested deeper than {MAX_DEPTH} levels "
                                "were ignored")
            return
        if isinstance(value, list):
            if _is_box(value):
                self.boxes.append(_numbers(value))
            elif value and all(_is_box(item) for item in value):
                self.boxes.extend(_numbers(item) for item in value)
            else:
                for item in value:
                    if isinstance(item, dict | list):
                        self.collect(item, warnings, depth + 1)
            return
        if not isinstance(value, dict):
            return
        keys = {str(k).lower(): v for k, v in value.items()}
        for key in _BOX_KEYS + _BOX_LIST_KEYS:
            if key in keys:
                self._boxes(keys[key], key, warnings)
        clicks = len(self.points)
        self._clicks(keys, warnings)
        if len(self.points) > clicks:
            self.groups.extend([self.click_groups] * (len(self.points) - clicks))
            self.click_groups += 1
        if self.entity is None:
            for key in _ENTITY_KEYS:
                if isinstance(keys.get(key), str) and keys[key].strip():
                    self.entity = keys[key].strip()
                    break
        if not self.answer:
            for key in _ANSWER_KEYS:
                if isinstance(keys.get(key), str) and keys[key].strip():
                    self.answer = " ".join(keys[key].split())
                    break
        if keys.get("no_target") is True or any(keys.get(k) is False for k in _ABSENT_FLAGS):
            self.absent = True
        for key in ("objects", "results", "detections", "targets"):
            if isinstance(keys.get(key), list):
                self.collect(keys[key], warnings, depth + 1)

    def keep_first(self, limit: int, warnings: _Warnings) -> None:
        """At most `limit` boxes and click groups, the first ones as written."""
        if len(self.boxes) > limit:
            warnings.append(f"the reply gave {len(self.boxes)} boxes; only the first {limit} "
                            "were kept (`AskOptions.max_objects`)", always=True)
            del self.boxes[limit:]
        if self.click_groups > limit:
            warnings.append(f"the reply gave {self.click_groups} click groups; only the clicks "
                            f"of the first {limit} were kept (`AskOptions.max_objects`)",
                            always=True)
            cut = bisect.bisect_left(self.groups, limit)
            for kept in (self.points, self.labels, self.groups):
                del kept[cut:]
            self.click_groups = limit

    def _boxes(self, raw: Any, key: str, warnings: list[str]) -> None:
        if raw in ([], None, ""):
            self.empty_marker = True
        elif _is_box(raw):
            self.boxes.append(_numbers(raw))
        elif isinstance(raw, list) and all(_is_box(item) for item in raw):
            self.boxes.extend(_numbers(item) for item in raw)
        else:
            warnings.append(f"the value of '{key}' is not a box of four numbers and was "
                            f"ignored: {_short(raw)}")

    def _clicks(self, keys: dict[str, Any], warnings: list[str]) -> None:
        if "points" in keys:
            points = keys["points"]
            if points in ([], None):
                self.empty_marker = True
                return
            if not isinstance(points, list) or not all(_is_point(p) for p in points):
                warnings.append(f"'points' is not a list of [x, y] pairs and was ignored: "
                                f"{_short(points)}")
                return
            labels = keys.get("labels", keys.get("point_labels"))
            labels = labels if isinstance(labels, list) else []
            if len(labels) != len(points):
                warnings.append(f"{len(points)} points came with {len(labels)} labels; "
                                "missing labels count as positive, extra ones are ignored")
            for index, point in enumerate(points):
                label = _label(labels[index], warnings) if index < len(labels) else 1
                self._add_point(point, label)
        for key, label in (("positive", 1), ("positive_points", 1), ("negative", 0),
                           ("negative_points", 0)):
            group = keys.get(key)
            if isinstance(group, list):
                if _is_point(group):
                    group = [group]
                for point in group:
                    if _is_point(point):
                        self._add_point(point, label)
                    else:
                        warnings.append(f"an entry of '{key}' is not an [x, y] pair and was "
                                        f"ignored: {_short(point)}")
        if "positive" in keys and "negative" in keys and not keys["positive"]:
            self.empty_marker = True
        for key in ("point_2d", "point"):
            if _is_point(keys.get(key)):
                self._add_point(keys[key], 1)

    def _add_point(self, point: Any, label: int) -> None:
        x, y = _numbers(point)
        self.points.append((x, y))
        self.labels.append(label)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple = 3, 6, 6, 6
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 80


def _short(value: Any) -> str:
    """At most 80 characters of a value of any size or depth, for a warning."""
    return _SHORT.repr(value)[:80]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # not a number, or an integer beyond float's range
        return None
    return number if math.isfinite(number) else None


def _is_box(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 4 and all(
        _number(v) is not None for v in value)


def _is_point(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(
        _number(v) is not None for v in value)


def _numbers(values: Any) -> list[float]:
    return [float(_number(v)) for v in values]  # type: ignore[arg-type]


def _label(value: Any, warnings: list[str]) -> int:
    word = str(value).strip().lower() if isinstance(value, str | int | float) else ""
    if word in _POSITIVE_WORDS:
        return 1
    if word in _NEGATIVE_WORDS:
        return 0
    warnings.append(f"the click label {_short(value)} is neither 1 nor 0; read as positive")
    return 1


# ---------------------------------------------------------------------------- geometry


def _limits(frame: str, shown: tuple[int, int]) -> tuple[float, float]:
    """(width, height) of the frame the coordinates were asked for."""
    if frame == "norm1000":
        return 1000.0, 1000.0
    if frame == "norm1":
        return 1.0, 1.0
    return float(shown[1]), float(shown[0])


def _where(frame: str, shown: tuple[int, int]) -> str:
    """The frame in words, for warnings."""
    if frame == "norm1000":
        return "the 'norm1000' frame (0-1000)"
    if frame == "norm1":
        return "the 'norm1' frame (0-1)"
    return f"the 'pixel' frame of the {shown[1]}x{shown[0]} image shown"


def _suspected_frame(frame: str, found: _Found, limits: tuple[float, float],
                     shown: tuple[int, int], warnings: _Warnings) -> str | None:
    """Another frame the values look written in, reported with a warning; never applied."""
    xs = [v for box in found.boxes for v in (box[0], box[2])] + [p[0] for p in found.points]
    ys = [v for box in found.boxes for v in (box[1], box[3])] + [p[1] for p in found.points]
    if not xs:
        return None
    largest = max(xs + ys)
    past = max(xs) > limits[0] or max(ys) > limits[1]
    fits_shown = max(xs) <= shown[1] and max(ys) <= shown[0]
    suspected = None
    if frame == "pixel":
        if 0 < largest <= 1.0 and max(shown) > 2:
            suspected = "norm1"
        elif past and largest <= 1000:
            suspected = "norm1000"
    elif frame == "norm1000":
        if 0 < largest <= 1.0:
            suspected = "norm1"
        elif past and fits_shown:
            suspected = "pixel"
    elif past:
        suspected = "pixel" if fits_shown else "norm1000" if largest <= 1000 else None
    if suspected is not None:
        warnings.append(f"coordinates up to {largest:g} look written in the '{suspected}' "
                        f"frame, but the model was asked for {_where(frame, shown)}; they "
                        f"were read in the '{frame}' frame as asked, not rescaled")
    return suspected


def _order_box(box: list[float], limits: tuple[float, float], index: int,
               warnings: list[str]) -> list[float]:
    """Corners in order; an [x, y, w, h] box read as such when it fits the frame's (width,
    height) `limits` (see the module doc)."""
    x1, y1, x2, y2 = box
    if x2 >= x1 and y2 >= y1:
        return box
    if x1 + x2 <= limits[0] and y1 + y2 <= limits[1]:
        warnings.append(f"box {index} {_fmt(box)} has its second corner before its first; "
                        "read as [x, y, width, height]")
        return [x1, y1, x1 + x2, y1 + y2]
    warnings.append(f"box {index} {_fmt(box)} has its corners swapped; reordered")
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def _clamp_box(box: list[float], limits: tuple[float, float], index: int, where: str,
               warnings: list[str], outside: _OutOfFrame) -> list[float] | None:
    """The box clamped to the frame (its out-of-frame values recorded), or None when it
    lies entirely outside."""
    width, height = limits
    x1, y1, x2, y2 = box
    gone = x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0
    coordinates = (("x1", x1, width), ("y1", y1, height), ("x2", x2, width), ("y2", y2, height))
    outside.check("box", index, coordinates, "dropped" if gone else "clamped")
    if gone:
        warnings.append(f"box {index} {_fmt(box)} lies entirely outside {where} and was "
                        "dropped")
        return None
    clamped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height),
               min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clamped != box:
        warnings.append(f"box {index} {_fmt(box)} reaches outside {where} and was clamped "
                        f"to {_fmt(clamped)}")
    return clamped


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
