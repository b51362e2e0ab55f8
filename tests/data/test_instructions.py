"""Interactive texts round-trip through UniGeoSeg's parser; MLLM replies (good, refused,
declined, garbage) are read; prompt files are replaceable and checked when loaded."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from terramask.data.instructions import (
    interactive_instruction,
    read_cues,
    read_expression,
    read_keep,
    read_question,
    read_scores,
)
from terramask.data.prompts import load_prompts
from terramask.errors import InputError
from terramask.eval.referring_datasets import parse_interactive
from terramask.options import DataRecipe

PROMPTS = load_prompts()


def blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random connected-ish mask."""
    noise = ndimage.gaussian_filter(rng.random((height, width)), 3)
    mask = noise > np.quantile(noise, rng.uniform(0.5, 0.98))
    return mask


@pytest.mark.parametrize(("height", "width"), [(512, 512), (300, 1000), (64, 2000)])
def test_interactive_text_reads_back_to_its_pixels(height, width):
    rng = np.random.default_rng(width)
    recipe = DataRecipe()
    kinds: Counter = Counter()
    for _ in range(40):
        mask = blob(rng, height, width)
        made = interactive_instruction(mask, recipe, PROMPTS, rng)
        kinds[made.kind] += 1
        read = parse_interactive(made.text)
        assert read is not None
        assert "-" not in made.text and "e" not in made.text.split("[", 1)[1]
        if made.kind == "box":
            assert read.box == made.box and not read.points
            rows, cols = np.nonzero(mask)
            edges = [cols.min() / width, rows.min() / height, (cols.max() + 1) / width,
                     (rows.max() + 1) / height]  # fmt: skip
            assert np.allclose(read.box, edges, atol=0.5 / max(width, height))
        else:
            assert read.points == made.points and 1 <= len(read.points) <= 3
            for x, y in read.points:  # every written point lies in a mask pixel
                assert mask[int(y * height), int(x * width)]
    assert kinds["box"] and kinds["points"]


def test_small_masks_get_one_point_and_larger_ones_one_to_three_with_the_weights():
    rng = np.random.default_rng(0)
    recipe = DataRecipe(box_share=0.0)
    small = np.zeros((100, 100), dtype=bool)
    small[10:19, 10:31] = True  # 189 px < 200
    assert {len(interactive_instruction(small, recipe, PROMPTS, rng).points)
            for _ in range(50)} == {1}  # fmt: skip
    large = np.zeros((100, 100), dtype=bool)
    large[10:30, 10:30] = True
    counts = Counter(len(interactive_instruction(large, recipe, PROMPTS, rng).points)
                     for _ in range(2000))  # fmt: skip
    assert abs(counts[1] / 2000 - 0.6) < 0.05 and abs(counts[3] / 2000 - 0.2) < 0.04


def test_the_same_generator_state_writes_the_same_text():
    mask = blob(np.random.default_rng(1), 64, 64)
    one = interactive_instruction(mask, DataRecipe(), PROMPTS, np.random.default_rng(5))
    two = interactive_instruction(mask, DataRecipe(), PROMPTS, np.random.default_rng(5))
    assert one == two


@pytest.mark.parametrize(
    ("reply", "value", "problem"),
    [
        ('{"expression": "the pond north of the road"}', "the pond north of the road", None),
        ('```json\n{"expression": "Expression: \\"the pond\\""}\n```', "the pond", None),
        ("<think>the pond? {\"expression\": \"x\"}</think>Expression: the small pond",
         "the small pond", None),
        ('{"expression": null, "reason": "two identical ponds"}', None, "declined: two identical"),
        ("I'm sorry, but I can't help with that.", None, "refused"),
        ("}}}{{{ 42 [[[", None, "unreadable reply"),
        ('{"expression": "' + "word " * 100 + '"}', None, "over 80 words"),
    ],
)
def test_expressions_are_read_or_rejected_with_the_reason(reply, value, problem):
    reading = read_expression(reply)
    assert reading.value == value
    assert (reading.problem is None) if problem is None else problem in reading.problem


def test_questions_cues_decisions_and_scores():
    assert read_question('{"question": "Where do cars park?", "explanation": "It is the lot."}'
                         ).value == ("Where do cars park?", "It is the lot.")  # fmt: skip
    assert read_question("Question: Where do cars park?\nExplanation: The lot.").value == (
        "Where do cars park?", "The lot.")  # fmt: skip
    assert "without an explanation" in read_question('{"question": "Where?"}').problem
    assert "declined" in read_question('{"question": null, "reason": "none"}').problem
    assert read_cues('{"cues": ["north of the others", "longest"]}').value == [
        "north of the others", "longest"]  # fmt: skip
    assert "declined" in read_cues('{"cues": [], "reason": "all alike"}').problem
    assert read_keep('{"keep": false, "reason": "a fragment"}').value == (False, "a fragment")
    assert read_keep("Keep. It is a whole building.").value[0] is True
    assert "unreadable" in read_keep("perhaps").problem
    dims = ("clarity", "uniqueness")
    assert read_scores('{"clarity": 4, "uniqueness": 5}', dims).value == {"clarity": 4,
                                                                           "uniqueness": 5}
    assert read_scores("clarity: 3\nuniqueness = 2", dims).value == {"clarity": 3, "uniqueness": 2}
    assert "uniqueness" in read_scores('{"clarity": 4, "uniqueness": 7}', dims).problem
    assert "uniqueness" in read_scores('{"clarity": 4, "uniqueness": 4.5}', dims).problem
    assert "refused" in read_scores("I cannot rate this image.", dims).problem


def test_a_prompt_folder_replaces_files_by_name(tmp_path):
    (tmp_path / "referring.txt").write_text("Describe the ${class_name} in ${colour}. {json}")
    (tmp_path / "thresholds.json").write_text(json.dumps(
        {"referring": {"clarity": 2}, "reasoning": {"soundness": 5}}))  # fmt: skip
    prompts = load_prompts(tmp_path)
    assert prompts.fill("referring", class_name="pond", colour="red") == (
        "Describe the pond in red. {json}")  # fmt: skip
    assert prompts.thresholds["referring"] == {"clarity": 2}
    assert prompts.origins["referring.txt"] == str(tmp_path / "referring.txt")
    assert prompts.origins["mask_check.txt"] == "built-in"
    assert prompts.digest() != PROMPTS.digest()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("referring.txt", "Describe ${instruction}", "does not provide"),
        ("referring.txt", "It costs $5", "not a field"),
        ("thresholds.json", '{"referring": {"clarity": 6}, "reasoning": {"x": 3}}', "1-5"),
        ("interactive.json", '{"box": "box ${x0} ${y0} ${x1} ${y1}", "points": "${points}"}',
         "does not read back"),
        ("interactive.json", '{"box": "x0,y0=[${x0},${y0}], x1,y1=[${x1},${y1}]"}', "\"points\""),
    ],
)
def test_bad_prompt_files_are_refused_when_loaded(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        load_prompts(tmp_path)
