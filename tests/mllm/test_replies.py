"""The reply parser: exact numbers for every repair it makes, and its two ways to say no."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.errors import InputError, MLLMError
from terramask.methods.replies import box_prompt, clicks_prompt, parse_reply
from terramask.protocols import MLLMReply

# The caller's image is 1000x2000 (H, W); the client showed it at 500x1000, a factor of 2.
ORIGINAL = (1000, 2000)
SHOWN = (500, 1000)


def parse(text: str, frame: str = "pixel", shown=SHOWN, size=ORIGINAL):
    return parse_reply(MLLMReply(text, shown, frame, "test-model"), size)


def test_strict_json_box_scaled_from_shown_to_original_pixels():
    parsed = parse('{"bbox": [10, 20, 110, 220], "prompt": "roof"}')
    np.testing.assert_array_equal(parsed.boxes, [[20, 40, 220, 440]])
    assert parsed.entity == "roof" and parsed.answer == ""
    assert not parsed.no_target and parsed.warnings == []
    assert parsed.points.shape == (0, 2) and parsed.point_labels.shape == (0,)


def test_fenced_json_inside_prose_keeps_the_prose_as_answer():
    text = ('Sure! The pool is here:\n```json\n{"bbox": [10, 20, 110, 220], "prompt": "pool"}'
            "\n```\nIt is the blue one.")
    parsed = parse(text)
    np.testing.assert_array_equal(parsed.boxes, [[20, 40, 220, 440]])
    assert parsed.entity == "pool"
    assert parsed.answer == "Sure! The pool is here: It is the blue one."


def test_bare_json_in_prose_single_quotes_and_trailing_commas():
    parsed = parse("I think {'box': [10, 20, 110, 220,], 'label': 'pool',} is it.")
    np.testing.assert_array_equal(parsed.boxes, [[20, 40, 220, 440]])
    assert parsed.entity == "pool" and parsed.answer == "I think is it."


def test_list_of_objects_with_qwen_bbox_2d_and_numbers_as_strings():
    text = ('[{"bbox_2d": [10, 20, 110, 220], "label": "car"}, '
            '{"bbox_2d": ["300", "20", "310", "40"], "label": "car"}]')
    parsed = parse(text)
    np.testing.assert_array_equal(parsed.boxes, [[20, 40, 220, 440], [600, 40, 620, 80]])
    assert parsed.entity == "car"


def test_several_json_objects_in_one_reply():
    parsed = parse('first {"bbox": [0, 0, 10, 10]} then {"box": [20, 20, 30, 30], '
                   '"prompt": "tank"}')
    np.testing.assert_array_equal(parsed.boxes, [[0, 0, 20, 20], [40, 40, 60, 60]])
    assert parsed.entity == "tank"


def test_think_blocks_are_ignored():
    parsed = parse('<think>maybe {"bbox": [1, 2, 3, 4]}</think>{"bbox": [10, 20, 110, 220]}')
    np.testing.assert_array_equal(parsed.boxes, [[20, 40, 220, 440]])


def test_zero_to_thousand_frame():
    parsed = parse('{"bbox": [100, 250, 500, 750], "prompt": "x"}', frame="norm1000")
    np.testing.assert_array_equal(parsed.boxes, [[200, 250, 1000, 750]])
    assert parsed.warnings == [] and parsed.frame == "norm1000"
    assert parsed.out_of_frame == [] and parsed.suspected_frame is None


def test_zero_to_one_frame():
    parsed = parse('{"bbox": [0.1, 0.2, 0.5, 0.6]}', frame="norm1")
    np.testing.assert_allclose(parsed.boxes, [[200, 200, 1000, 600]])


def test_earlier_frame_names_still_read():
    assert MLLMReply("", (1, 1), "pixels", "m").frame == "pixel"
    assert MLLMReply("", (1, 1), "0-1000", "m").convention == "norm1000"
    old = parse('{"bbox": [100, 250, 500, 750]}', frame="0-1000")
    np.testing.assert_array_equal(old.boxes, [[200, 250, 1000, 750]])


def test_xywh_box_is_read_as_such_when_it_fits():
    # x2 < x1: [100, 200, 50, 60] is x=100, y=200, w=50, h=60 in the 1000x500 shown frame.
    parsed = parse('{"bbox": [100, 200, 50, 60]}')
    np.testing.assert_array_equal(parsed.boxes, [[200, 400, 300, 520]])
    assert "width, height" in parsed.warnings[0]


def test_swapped_corners_that_cannot_be_xywh_are_reordered():
    # 900 + 100 ≤ 1000 but 400 + 300 > 500: not a box that fits as xywh, so corners swap.
    parsed = parse('{"bbox": [900, 400, 100, 300]}')
    np.testing.assert_array_equal(parsed.boxes, [[200, 600, 1800, 800]])
    assert "swapped" in parsed.warnings[0]


# The three tests below replace ones that expected the parser to rescale values that did
# not fit the declared convention into another one (0-1, 0-1000, pixels): the reply is now
# read in the frame it was asked for, clamped, and the other frame only reported.


def test_pixels_asked_but_all_values_below_one_stay_pixels_and_are_suspected():
    parsed = parse('{"bbox": [0.1, 0.2, 0.3, 0.4]}')
    np.testing.assert_allclose(parsed.boxes, [[0.2, 0.4, 0.6, 0.8]])
    assert parsed.suspected_frame == "norm1" and parsed.out_of_frame == []
    assert "'norm1'" in parsed.warnings[0] and "not rescaled" in parsed.warnings[0]


def test_pixels_asked_but_values_past_the_shown_size_are_clamped_and_reported():
    parsed = parse('{"bbox": [100, 200, 900, 800]}', shown=(500, 700))
    np.testing.assert_allclose(parsed.boxes, [[100 * 2000 / 700, 400, 2000, 1000]])
    assert parsed.suspected_frame == "norm1000"
    assert parsed.out_of_frame == [
        {"object": "box", "index": 0, "coordinate": "x2", "value": 900, "frame": "pixel",
         "limit": 700, "action": "clamped"},
        {"object": "box", "index": 0, "coordinate": "y2", "value": 800, "frame": "pixel",
         "limit": 500, "action": "clamped"},
    ]
    assert any("clamped to [100, 200, 700, 500]" in w for w in parsed.warnings)


def test_thousandths_asked_but_values_past_1000_are_clamped_and_reported():
    parsed = parse('{"bbox": [100, 200, 1200, 400]}', frame="norm1000", shown=(1000, 2000))
    np.testing.assert_array_equal(parsed.boxes, [[200, 200, 2000, 400]])
    assert parsed.suspected_frame == "pixel"
    assert parsed.out_of_frame == [{"object": "box", "index": 0, "coordinate": "x2",
                                    "value": 1200, "frame": "norm1000", "limit": 1000,
                                    "action": "clamped"}]


def test_box_partly_outside_is_clamped_with_a_warning():
    parsed = parse('{"bbox": [-10, 20, 1100, 220]}')
    np.testing.assert_array_equal(parsed.boxes, [[0, 40, 2000, 440]])
    assert "clamped" in parsed.warnings[0]


def test_box_entirely_outside_is_dropped_and_means_no_target():
    parsed = parse('{"bbox": [10, 20, 110, 220]} {"bbox": [1200, 600, 1300, 700]}',
                   shown=(500, 1000))
    np.testing.assert_array_equal(parsed.boxes, [[20, 40, 220, 440]])
    assert "dropped" in parsed.warnings[0] and not parsed.no_target
    only_outside = parse('{"bbox": [1200, 600, 1300, 700]}')
    assert only_outside.no_target and only_outside.boxes.shape == (0, 4)
    assert "treated as no target" in only_outside.warnings[-1]


def test_empty_bbox_means_no_target():
    parsed = parse('{"bbox": [], "prompt": ""}')
    assert parsed.no_target and parsed.boxes.shape == (0, 4) and parsed.entity is None


@pytest.mark.parametrize("text", [
    "I cannot find any stadium in this image.",
    "There is no such object here.",
    "The harbour is not present in this scene.",
    "there is no river",
    "There is none.",
])
def test_refusals_mean_no_target(text):
    parsed = parse(text)
    assert parsed.no_target and parsed.answer == text


def test_refusal_with_coordinates_keeps_the_coordinates():
    parsed = parse('There is no other pool, but this one: {"bbox": [10, 20, 110, 220]}')
    assert not parsed.no_target and len(parsed.boxes) == 1
    assert "refusal" in parsed.warnings[0]


@pytest.mark.parametrize("text", ["The answer is 42.", '{"answer": "yes"}', "", "{broken"])
def test_unparseable_reply_raises_could_not_parse(text):
    with pytest.raises(MLLMError, match="could not parse the model's reply"):
        parse(text)


def test_clicks_with_points_and_labels():
    parsed = parse('{"points": [[10, 20], [30, 40], [50, 60]], "labels": [1, 0]}')
    np.testing.assert_array_equal(parsed.points, [[20, 40], [60, 80], [100, 120]])
    np.testing.assert_array_equal(parsed.point_labels, [1, 0, 1])
    assert parsed.boxes.shape == (0, 4) and "labels" in parsed.warnings[0]


def test_clicks_as_positive_and_negative_lists():
    parsed = parse('{"positive": [[10, 20]], "negative": [[30, 40], [999, 499]]}')
    np.testing.assert_array_equal(parsed.points, [[20, 40], [60, 80], [1998, 998]])
    np.testing.assert_array_equal(parsed.point_labels, [1, 0, 0])
    assert parsed.point_labels.dtype == np.int64


def test_clicks_outside_the_image_are_dropped_and_empty_points_mean_no_target():
    parsed = parse('{"points": [[10, 20], [2100, 20]], "labels": [1, 1]}', shown=(1000, 2000))
    np.testing.assert_array_equal(parsed.points, [[10, 20]])
    assert "outside" in parsed.warnings[0]
    assert parse('{"points": [], "labels": []}').no_target


def test_unknown_frame_is_an_input_error():
    with pytest.raises(InputError, match="coordinate frame 'percent'"):
        parse('{"bbox": [1, 2, 3, 4]}', frame="percent")


def test_prompts_ask_for_the_parsed_json_and_refuse_empty_questions():
    assert '{"bbox": [x1, y1, x2, y2], "prompt": "<entity noun>"}' in box_prompt("the pool")
    assert '{"bbox": [], "prompt": ""}' in box_prompt("the pool")
    assert '{"points": [[x, y], ...], "labels": [1, 0, ...]}' in clicks_prompt("the pool")
    assert "Question: the largest field" in clicks_prompt("  the largest\nfield ")
    with pytest.raises(InputError, match="empty question"):
        box_prompt("   ")
