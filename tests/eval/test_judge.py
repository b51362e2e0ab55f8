"""GeoSeg-Bench's judged scores: overlay, overlap bins, prompt and reply parsing, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.eval.judge import (
    JudgeScores,
    judge_overlay,
    judge_prompt,
    judge_sample,
    overlap_score,
    overlay_iou,
    parse_score,
)
from terramask.protocols import MLLMReply


@pytest.mark.parametrize(
    ("iou", "score"),
    [(0.0, 1), (0.1999, 1), (0.2, 2), (0.3999, 2), (0.4, 3), (0.5999, 3), (0.6, 4),
     (0.7999, 4), (0.8, 5), (1.0, 5)],
)  # fmt: skip
def test_overlap_is_the_iou_binned(iou, score):
    assert overlap_score(iou) == score


def test_the_judges_iou_is_zero_when_both_masks_are_empty():
    empty = np.zeros((3, 3), bool)
    assert overlay_iou(empty, empty) == 0.0  # GeoSeg's compute_iou; gIoU would count 1
    one = empty.copy()
    one[0, :2] = True
    two = empty.copy()
    two[0, 1:] = True
    assert overlay_iou(one, two) == pytest.approx(1 / 3)


def test_overlay_moves_green_in_the_truth_and_red_in_the_prediction_halfway_to_255():
    image = np.full((1, 4, 3), 100, np.uint8)
    image[0, 3] = (11, 21, 31)
    gt = np.array([[True, True, False, False]])
    pred = np.array([[False, True, True, False]])
    out = judge_overlay(image, gt, pred)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [100, 177, 100]  # truth: G = 127.5 + 50, truncated
    assert out[0, 1].tolist() == [177, 177, 100]  # both: yellowish
    assert out[0, 2].tolist() == [177, 100, 100]  # prediction only
    assert out[0, 3].tolist() == [11, 21, 31]  # neither: the image


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"faithfulness": 4, "localization": 2}', 4),
        ("Faithfulness = 5", 5),
        ('{"faithfulness": 4.5}', 4),  # the first digit 1-5, as the reference's patterns read
        ('{"faithfulness": 0.4}', 1),  # no digit 1-5 first: the number, rounded and clamped
        ('{"faithfulness": 7}', 5),
        ('{"faithfulness": 10}', 1),  # "1" is read first, as in the reference
        ("I would say four.", 3),
        ("", 3),
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply, "faithfulness") == expected


def test_prompt_names_the_class_the_size_the_iou_and_its_bin():
    prompt = judge_prompt("storage tank", 640, 480, 0.43219)
    assert "storage tank" in prompt and "640 x 480 pixels" in prompt
    assert "0.4322" in prompt and "overlap score of 3" in prompt
    for name in ("faithfulness", "localization", "robustness", "overlap"):
        assert f'"{name}"' in prompt
    assert "green" in prompt and "red" in prompt


class ScriptedJudge:
    name = "scripted-judge"

    def __init__(self, text: str):
        self.text, self.seen = text, []

    def ask(self, image, prompt, *, system=None):
        self.seen.append((image, prompt))
        return MLLMReply(self.text, image.shape[:2], "pixel", self.name)


def test_judge_sample_keeps_the_computed_overlap_and_logs_the_judges():
    image = np.zeros((4, 5, 3), np.uint8)
    gt = np.zeros((4, 5), bool)
    gt[:2] = True  # 10 pixels
    pred = np.zeros((4, 5), bool)
    pred[:1] = True  # 5 inside: IoU 0.5
    judge = ScriptedJudge('{"faithfulness": 5, "localization": 4, "robustness": 2, "overlap": 5}')
    judged = judge_sample(judge, image, gt, pred, "roof")
    assert judged.scores() == {"faithfulness": 5, "localization": 4, "robustness": 2, "overlap": 3}
    assert judged.iou == 0.5 and judged.judge_overlap == 5
    shown, prompt = judge.seen[0]
    assert np.array_equal(shown, judge_overlay(image, gt, pred))
    assert "5 x 4 pixels" in prompt and "0.5000" in prompt


def test_judge_scores_average_judged_samples_and_count_failures():
    scores = JudgeScores("j")
    judge = ScriptedJudge('{"faithfulness": 4, "localization": 2, "robustness": 5}')
    image, mask = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), bool)
    scores.add(judge_sample(judge, image, mask, mask, "x"), "a")  # overlap 5
    judge.text = "no scores"
    scores.add(judge_sample(judge, image, mask, ~mask, "x"), "b")  # 3, 3, 3; overlap 1
    scores.add(None, "b")
    result = scores.result()
    assert result["model"] == "j" and (result["judged"], result["failed"]) == (2, 1)
    assert (result["faithfulness"], result["localization"], result["robustness"]) == (
        3.5, 2.5, 4.0
    )  # fmt: skip
    assert result["overlap"] == 3.0
    assert result["groups"]["b"] == {
        "judged": 1, "failed": 1, "faithfulness": 3.0, "localization": 3.0,
        "robustness": 3.0, "overlap": 1.0,
    }  # fmt: skip
    assert JudgeScores("j").result()["faithfulness"] is None
