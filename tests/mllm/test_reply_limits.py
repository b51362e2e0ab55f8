"""The reply parser whatever the model writes: linear time, bounded output, at most
`max_objects` objects, and the same readings as the simple scans it replaced."""

from __future__ import annotations

import inspect
import json
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.methods import replies
from terramask.methods.replies import MAX_DEPTH, MAX_WARNINGS, parse_reply
from terramask.options import AskOptions
from terramask.protocols import MLLMReply

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str, size=(100, 100), **kw):
    return parse_reply(MLLMReply(text, size, "pixel", "test-model"), size, **kw)


def test_adversarial_replies_do_not_hang():
    """Hang guard, not a speed test: every case takes well under a few seconds in all (the
    parser is linear in the reply's length), while the quadratic scans it replaced took
    minutes or hours on some of them ("[" * 512 KiB, a fence left open before a long
    blank, brackets mixed with quotes) and overflowed the stack on deep nesting. They run
    in a subprocess so that a regression is killed at 120 s instead of stalling the suite."""
    script = textwrap.dedent("""
        import json
        from terramask.errors import MLLMError
        from terramask.methods.replies import parse_reply
        from terramask.protocols import MLLMReply

        N = 512 * 1024
        boxes = [[i % 90, 1, i % 90 + 5, 9] for i in range(20000)]
        cases = {
            "brackets": "[" * N, "braces": "{" * N, "closings": "]}" * (N // 2),
            "nested": "[" * (N // 2) + "]" * (N // 2),
            "quotes": '"' * N, "apostrophes": "'" * N, "digits": "7" * N,
            "mixed": "[{'\\"" * (N // 4), "prose apostrophes": "[ it's " * (N // 7),
            "escapes": '["\\\\' * (N // 3), "open fence": "```" + " " * N,
            "fences": "```json\\n[x]\\n```" * (N // 15), "bad lists": "[x]" * (N // 3),
            "bad literals": "[1 2]" * (N // 5), "nested numbers": "[" * 64 + "1," * (N // 2)
            + "x" + "]" * 64, "trailing commas": "[1" + ", " * (N // 2),
            "open think": "<think>" * (N // 7),
            "20000 boxes": json.dumps({"boxes": boxes, "prompt": "car"}),
            "20000 objects": json.dumps([{"bbox_2d": b, "label": "car"} for b in boxes]),
        }
        for name, text in cases.items():
            try:
                parsed = parse_reply(MLLMReply(text, (100, 100), "pixel", "m"), (100, 100))
                outcome = f"parsed {len(parsed.boxes)}"
            except MLLMError as exc:
                outcome = "refused" if "could not parse" in str(exc) else f"MLLMError {exc}"
            print(json.dumps([name, outcome]), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = dict(json.loads(line) for line in done.stdout.splitlines())
    assert outcomes.pop("20000 boxes") == "parsed 20"
    assert outcomes.pop("20000 objects") == "parsed 20"
    assert set(outcomes.values()) == {"refused"}, outcomes
    assert len(outcomes) == 17


def test_max_objects_keeps_the_first_boxes_and_says_how_many_there_were():
    boxes = [[i, i, i + 10, i + 10] for i in range(20000)]
    parsed = parse(json.dumps({"boxes": boxes, "prompt": "car"}), size=(30000, 30000))
    np.testing.assert_array_equal(parsed.boxes, boxes[:20])
    assert parsed.entity == "car"
    assert parsed.warnings == ["the reply gave 20000 boxes; only the first 20 were kept "
                               "(`AskOptions.max_objects`)"]
    three = parse(json.dumps([{"bbox": b} for b in boxes[:5]]), max_objects=3)
    np.testing.assert_array_equal(three.boxes, boxes[:3])
    assert "gave 5 boxes; only the first 3" in three.warnings[0]
    assert parse(json.dumps({"boxes": boxes[:3]}), max_objects=3).warnings == []


def test_max_objects_keeps_the_clicks_of_the_first_click_groups():
    groups = [{"points": [[i, 1], [i, 2]], "labels": [1, 0]} for i in range(1, 6)]
    parsed = parse(json.dumps(groups), max_objects=2)
    np.testing.assert_array_equal(parsed.points, [[1, 1], [1, 2], [2, 1], [2, 2]])
    np.testing.assert_array_equal(parsed.point_labels, [1, 0, 1, 0])
    assert parsed.warnings == ["the reply gave 5 click groups; only the clicks of the first 2 "
                               "were kept (`AskOptions.max_objects`)"]
    one_group = parse(json.dumps({"positive": [[i, 1] for i in range(1, 50)]}), max_objects=1)
    assert len(one_group.points) == 49 and one_group.warnings == []


def test_max_objects_defaults_to_ask_options_and_must_be_positive():
    default = inspect.signature(parse_reply).parameters["max_objects"].default
    assert default == AskOptions().max_objects == 20
    with pytest.raises(InputError, match=r"`AskOptions.max_objects` must be at least 1"):
        parse('{"bbox": [1, 2, 3, 4]}', max_objects=0)


def test_the_max_objects_warning_survives_the_warning_cap():
    bad = [{"bbox": "wide", "points": [[10, 10]], "labels": ["maybe"]} for _ in range(300)]
    parsed = parse(json.dumps(bad))
    assert len(parsed.warnings) == MAX_WARNINGS + 2
    assert parsed.warnings[MAX_WARNINGS] == ("the reply gave 300 click groups; only the "
                                             "clicks of the first 20 were kept "
                                             "(`AskOptions.max_objects`)")
    assert parsed.warnings[-1] == f"{2 * 300 - MAX_WARNINGS} more warnings were left out"


def test_deep_nesting_is_ignored_with_a_warning_not_a_recursion_error():
    deep = "[" * 900 + "]" * 900
    parsed = parse('{"bbox": [10, 20, 30, 40], "objects": ' + deep + "}")
    np.testing.assert_array_equal(parsed.boxes, [[10, 20, 30, 40]])
    assert parsed.warnings == [f"parts of the reply nested deeper than {MAX_DEPTH} levels "
                               "were ignored"]


def test_an_integer_beyond_float_range_is_not_a_number():
    parsed = parse('{"bbox": [1' + "0" * 400 + ', 2, 3, 4]} {"bbox": [5, 6, 7, 8]}')
    np.testing.assert_array_equal(parsed.boxes, [[5, 6, 7, 8]])
    assert parsed.warnings[0].startswith("the value of 'bbox' is not a box of four numbers")
    assert len(parsed.warnings[0]) < 200


def test_a_huge_or_deep_bad_value_is_quoted_briefly():
    deep = "[" * 900 + "]" * 900  # its repr() would overflow the stack
    parsed = parse('{"bbox": ' + deep + ', "points": [' + '"x", ' * 100000 + '"x"]} '
                   '{"bbox": [1, 2, 3, 4]}')
    np.testing.assert_array_equal(parsed.boxes, [[1, 2, 3, 4]])
    assert parsed.warnings == [
        "the value of 'bbox' is not a box of four numbers and was ignored: [[[[...]]]]",
        "'points' is not a list of [x, y] pairs and was ignored: "
        "['x', 'x', 'x', 'x', 'x', 'x', ...]",
    ]


# ------------------------------------------------------------- same readings as before


def _old_matching_close(text: str, opening: int) -> int:
    """The scan `_Closings` replaced: quadratic over many openings, but the definition."""
    depth, quote, escaped = 0, "", False
    for index in range(opening, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return -1


def _old_outside_strings(text: str, change) -> str:
    pieces, start, index, quote = [], 0, 0, ""
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                pieces.append(text[start:index + 1])
                start, quote = index + 1, ""
        elif char in "\"'":
            pieces.append(change(text[start:index]))
            start, quote = index, char
        index += 1
    pieces.append(text[start:] if quote else change(text[start:]))
    return "".join(pieces)


_OLD_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)


def _random_texts(alphabet: str, count: int, longest: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randrange(longest)))


def test_bracket_closings_agree_with_the_simple_scan():
    rng = random.Random(1)
    for text in _random_texts("[]{}\"'\\ax ", 3000, 40, seed=0):
        closings = replies._Closings(text)
        openings = [i for i, c in enumerate(text) if c in "[{"]
        rng.shuffle(openings)  # the memo must not depend on the order of questions
        for opening in openings:
            assert closings.after(opening) == _old_matching_close(text, opening), (text, opening)


def test_strings_and_fences_are_found_as_before():
    upper = str.upper
    for text in _random_texts("\"'\\ab,]", 3000, 30, seed=2):
        assert replies._outside_strings(text, upper) == _old_outside_strings(text, upper), text
    for text in _random_texts("`` \njsonx", 3000, 30, seed=3):
        old = [(m.span(), m.span(1)) for m in _OLD_FENCE.finditer(text)]
        assert list(replies._fences(text)) == old, text
