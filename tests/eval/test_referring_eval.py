"""The referring evaluation loop with a scripted predictor: exact scores, failures kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from terramask.errors import InputError, MLLMError, OutputError
from terramask.eval.referring import evaluate_referring
from tests.helpers.referring_data import (
    build_earthreason,
    build_geoseg_bench,
    build_unigeoseg,
)


class ScriptedPredictor:
    """Answers by question: the true mask, an empty one, or an MLLM failure."""

    def __init__(self, truth: dict[str, np.ndarray], plan: dict[str, str]):
        self.truth, self.plan, self.calls = truth, plan, 0

    def __call__(self, image: np.ndarray, question: str) -> tuple[np.ndarray, str]:
        self.calls += 1
        action = self.plan[question]
        if action == "fail":
            raise MLLMError("The endpoint timed out after 3 retries.")
        if action == "bad-input":
            raise InputError("The reply's box lies outside the image.")
        if action == "truth":
            return self.truth[question].copy(), f"found {question}"
        return np.zeros(image.shape[:2], bool), "no such object"


def test_geoseg_bench_scores_failures_groups_and_outputs(tmp_path):
    truth = build_geoseg_bench(tmp_path / "data")
    by_question = {f"Q {k}?": mask for k, (_, mask) in truth.items()}
    plan = {
        "Q building-1?": "truth",  # IoU 1, ∩24 ∪24
        "Q building-2?": "empty",  # IoU 0, ∪100
        "Q water-7?": "empty",  # empty vs empty: IoU 1
        "Q water-8?": "fail",  # scored as empty: IoU 0, ∪20
    }
    predict = ScriptedPredictor(by_question, plan)
    seen = []
    out = tmp_path / "out"
    result = evaluate_referring(
        "geoseg-bench",
        tmp_path / "data",
        predict=predict,
        output_dir=out,
        progress=lambda *step: seen.append(step),
        method="geoseg",
    )
    assert predict.calls == 4 and seen[0] == ("evaluate", 0, 4) and seen[-1] == ("evaluate", 4, 4)
    assert result["samples"] == 4 and result["failed"] == 1
    assert result["giou"] == 50.0
    assert result["ciou"] == pytest.approx(100 * 24 / 144, abs=0.005)
    assert result["pr@0.5"] == result["pr@0.9"] == 50.0
    assert result["groups"]["Level1"]["giou"] == 100.0
    assert result["groups"]["Level1"]["ciou"] == 100.0
    assert result["groups"]["Level2"]["giou"] == 0.0
    assert result["by_target"]["target"]["giou"] == pytest.approx(33.33)
    assert result["by_target"]["no target"] == {
        **result["by_target"]["no target"],
        "samples": 1,
        "giou": 100.0,
        "ciou": None,
    }
    binary = result["binary"]
    assert binary["iou"] == binary["dice"] == binary["f1"] == binary["boundary_f"] == 50.0
    assert binary["precision"] == binary["recall"] == 50.0
    assert binary["specificity"] == 100.0
    assert binary["accuracy"] == pytest.approx(100 * (1 + 300 / 400 + 1 + 380 / 400) / 4)

    [failure] = result["failures"]
    assert failure["id"] == "water-8" and "timed out" in failure["reason"]
    assert failure["reason"].startswith("MLLMError")
    records = {r["id"]: r for r in result["per_sample"]}
    assert records["water-8"]["failed"] == failure["reason"] and records["water-8"]["iou"] == 0.0
    assert records["building-1"]["answer"] == "found Q building-1?"
    assert records["building-1"]["failed"] is None

    predictions = out / "predictions"
    assert sorted(p.name for p in predictions.iterdir()) == sorted(f"{k}.png" for k in truth)
    saved = np.asarray(Image.open(predictions / "building-1.png"))
    assert set(np.unique(saved)) == {0, 255}
    assert np.array_equal(saved == 255, truth["building-1"][1])
    assert not np.asarray(Image.open(predictions / "water-8.png")).any()

    report = json.loads((out / "report.json").read_text())
    assert report["giou"] == 50.0 and report["failures"][0]["id"] == "water-8"
    assert report["published"] == [
        {"method": "GeoSeg (training-free, Qwen3-VL-32B)", "value": 56.4}
    ]
    markdown = (out / "report.md").read_text()
    assert "**gIoU 50.00**" in markdown and "56.4" in markdown and "Level2" in markdown
    assert "water-8" in markdown and "Failed samples (1)" in markdown
    assert "| this run (geoseg) | 50.00 |" in markdown

    with pytest.raises(OutputError):
        evaluate_referring("geoseg-bench", tmp_path / "data", predict=predict, output_dir=out)
    again = evaluate_referring(
        "geoseg-bench", tmp_path / "data", predict=predict, output_dir=out, overwrite=True, limit=2
    )
    assert again["samples"] == 2 and again["limit"] == 2


def test_earthreason_input_error_from_predict_is_recorded_and_published_numbers(tmp_path):
    truth = build_earthreason(tmp_path / "data")
    questions = {
        "Where could boats dock?": truth["a"],
        "Q2": truth["a"],
        "Which field floods?": truth["b"],
        "Any airport?": truth["c"],
    }
    plan = {
        "Where could boats dock?": "truth",  # IoU 1, ∩9 ∪9
        "Q2": "bad-input",  # IoU 0, ∪9
        "Which field floods?": "empty",  # empty vs empty: 1
        "Any airport?": "empty",  # empty vs empty: 1
    }
    result = evaluate_referring(
        "earthreason",
        tmp_path / "data",
        predict=ScriptedPredictor(questions, plan),
        output_dir=tmp_path / "out",
    )
    assert result["giou"] == 75.0 and result["ciou"] == 50.0
    assert result["failures"][0]["reason"].startswith("InputError")
    assert result["groups"] == {} and "binary" not in result
    assert [row["value"] for row in result["published"]] == [47.4, 72.7, 70.7]
    assert result["published_metric"] == "giou"
    assert result["per_sample"][0]["expected_answer"] == "the pier"


def test_unigeoseg_is_scored_after_letterboxing(tmp_path):
    truth = build_unigeoseg(tmp_path / "data")
    questions = {q: mask for _, q, mask in truth.values()}
    plan = {q: "empty" for q in questions}
    plan["the red roof"] = "truth"  # 16x32 image, 16 pixels: x16 -> 4096 at 512
    # the 8x8 interactive target, 4 pixels, is missed: x64 -> 16384 at 512
    result = evaluate_referring(
        "unigeoseg-bench",
        tmp_path / "data",
        predict=ScriptedPredictor(questions, plan),
        output_dir=tmp_path / "out",
    )
    assert result["score_size"] == 512
    assert result["ciou"] == 20.0  # 4096 / (4096 + 16384); at native size it would be 80
    assert result["giou"] == 75.0  # 1, 0, and two reasoning empties rightly empty
    assert result["groups"]["interactive"]["giou"] == 0.0
    assert result["groups"]["reasoning"]["samples"] == 2
    saved = np.asarray(Image.open(tmp_path / "out" / "predictions" / "0-a.png"))
    assert saved.shape == (16, 32)  # predictions keep the image's size
    assert "letterboxed" in (tmp_path / "out" / "report.md").read_text()


def test_a_bug_in_predict_stops_the_run_and_bad_layouts_fail_before_predicting(tmp_path):
    build_earthreason(tmp_path / "data")

    def broken(image, question):
        return np.zeros((2, 2), bool), ""

    with pytest.raises(ValueError, match="shape"):
        evaluate_referring(
            "earthreason", tmp_path / "data", predict=broken, output_dir=tmp_path / "o"
        )

    def never(image, question):
        raise AssertionError("predict must not run")

    with pytest.raises(InputError):
        evaluate_referring("rrsis-d", tmp_path / "data", predict=never, output_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()
