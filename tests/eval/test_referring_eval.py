"""The referring evaluation loop with a scripted predictor: exact scores, failures kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from terramask.errors import InputError, MLLMError, OutputError
from terramask.eval.referring import PUBLISHED, evaluate_referring
from terramask.eval.referring_datasets import letterbox, parse_interactive
from tests.helpers.referring_data import (
    build_earthreason,
    build_geoseg_bench,
    build_rrsisd,
    build_unigeoseg,
    build_unigeoseg_release,
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
        if action == "truth":  # the true mask in the frame of the image shown
            truth = self.truth[question]
            if truth.shape != image.shape[:2]:  # shown on the reference protocol's canvas
                truth = letterbox(truth, image.shape[0])
            return truth.copy(), f"found {question}"
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
    assert report["protocol"] == "reference" and report["judge"] is None
    assert [(row["method"], row.get("iou"), row.get("dice"), row.get("faithfulness"))
            for row in report["published"]] == [
        ("GeoSeg (training-free, Qwen3-VL-32B)", 56.4, 64.2, None),
        ("GeoSeg (training-free, Qwen3-VL-32B)", None, None, 3.64),
    ]  # fmt: skip
    assert all(row["source"] for row in report["published"])
    markdown = (out / "report.md").read_text()
    assert "**gIoU 50.00**" in markdown and "56.4" in markdown and "Level2" in markdown
    assert "water-8" in markdown and "Failed samples (1)" in markdown
    # IoU and Dice of this run beside the published ones; no judge ran
    assert "| this run (geoseg) | - | 50.00 | 50.00 | - |" in markdown
    assert "## How the scores are computed" in markdown and "strictly above" in markdown

    with pytest.raises(OutputError):
        evaluate_referring("geoseg-bench", tmp_path / "data", predict=predict, output_dir=out)
    again = evaluate_referring(
        "geoseg-bench", tmp_path / "data", predict=predict, output_dir=out, overwrite=True, limit=2
    )
    assert again["samples"] == 2 and again["limit"] == 2


def test_earthreason_input_error_from_predict_is_recorded_and_published_numbers(tmp_path):
    """The all-texts protocol on the first four questions (a-0, a-1, b-0, c-0)."""
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
        protocol="all-texts",
        limit=4,
    )
    assert result["giou"] == 75.0 and result["ciou"] == 50.0
    assert result["failures"][0]["reason"].startswith("InputError")
    assert result["groups"] == {} and "binary" not in result
    assert result["protocol"] == "all-texts" and result["score_size"] is None
    # the test split's published rows, each with its source
    assert [row["giou"] for row in result["published"]] == [47.4, 72.7, 70.75, 73.12]
    assert {row["split"] for row in result["published"]} == {"test"}
    assert result["published_metric"] == "giou"
    assert result["per_sample"][0]["expected_answer"] == "the pier"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "all-texts" in markdown and "not comparable" in markdown


def test_unigeoseg_is_scored_after_letterboxing(tmp_path):
    """The all-texts protocol: every text, letterboxed into the top-left corner."""
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
        protocol="all-texts",
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


# --- the reference protocol --------------------------------------------------------------


def _canvas_counts(pred, truth, size=512):
    """Intersection and union on the centred canvas (letterbox is tested on its own); a
    prediction already on the canvas is taken as it is."""
    p = pred if pred.shape == (size, size) else letterbox(pred, size)
    t = letterbox(truth, size)
    return int((p & t).sum()), int((p | t).sum())


def test_earthreason_reference_first_questions_on_the_512_canvas(tmp_path):
    truth = build_earthreason(tmp_path / "data")
    questions = {
        "Where could boats dock?": truth["a"],
        "Which field floods?": truth["b"],
        "Any airport?": truth["c"],
        "Where are the courts?": truth["d"],
    }
    plan = dict.fromkeys(questions, "empty")
    plan["Where could boats dock?"] = "truth"
    predict = ScriptedPredictor(questions, plan)
    result = evaluate_referring(
        "earthreason", tmp_path / "data", predict=predict, output_dir=tmp_path / "out"
    )
    assert predict.calls == 4 and result["samples"] == 4 and result["protocol"] == "reference"
    assert result["giou"] == 75.0  # 1, two rightly empty, the courts missed
    inter, union = _canvas_counts(truth["a"], truth["a"])
    _, missed = _canvas_counts(np.zeros_like(truth["d"]), truth["d"])
    assert result["ciou"] == pytest.approx(100 * inter / (union + missed), abs=0.005)
    # by hand: "a" (8x10, rows 2-4, cols 1-3) -> 409x512 below 51 rows of padding: rows
    # 154-306, cols 52-204 = 153 x 153; "d" (7x9, rows 1-2, cols 2-5) -> 398x512 below 57
    # rows: rows 114-227, cols 114-341 = 114 x 228. 23409 / (23409 + 25992), where the
    # native sizes would give 9 / (9 + 8) = 52.94
    assert (inter, union + missed) == (23409, 23409 + 25992)
    assert result["ciou"] == 47.39
    assert result["pr@0.9"] == 75.0  # the empty pairs count at every threshold
    c = next(r for r in result["per_sample"] if r["id"] == "c-0")
    assert c["expected_answer"] == "There is no target object in the image."


def test_rrsisd_reference_one_sample_per_ref(tmp_path):
    truth = build_rrsisd(tmp_path / "data")
    questions = {"The vehicle": truth["0"], "the dam": truth["1"]}
    predict = ScriptedPredictor(questions, dict.fromkeys(questions, "truth"))
    result = evaluate_referring(
        "rrsis-d", tmp_path / "data", predict=predict, output_dir=tmp_path / "out"
    )
    assert predict.calls == 2 and result["giou"] == 100.0 and result["score_size"] == 512
    assert [row["giou"] for row in result["published"] if row["method"] == "UniGeoSeg"] == [72.23]
    assert [r["question"] for r in result["per_sample"]] == ["The vehicle", "the dam"]


class BoxFiller:
    """Segments a prompt by filling its box (pixel centres inside); points give nothing."""

    def __init__(self):
        self.prompts = []

    def __call__(self, image, prompt):
        self.prompts.append(prompt)
        height, width = image.shape[:2]
        out = np.zeros((height, width), bool)
        if prompt.box is not None:
            yy, xx = np.mgrid[0:height, 0:width] + 0.5
            x1, y1, x2, y2 = prompt.box
            out[(xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)] = True
        return out


def test_unigeoseg_reference_interactive_samples_go_to_the_segmenter(tmp_path):
    expected = build_unigeoseg_release(tmp_path / "data")
    questions = {v["question"]: v["mask"] for v in expected.values() if v["task"] != "interactive"}
    predict = ScriptedPredictor(questions, dict.fromkeys(questions, "truth"))
    segment = BoxFiller()
    result = evaluate_referring(
        "unigeoseg-bench",
        tmp_path / "data",
        predict=predict,
        segment=segment,
        output_dir=tmp_path / "out",
    )
    # the MLLM route saw only the referring and reasoning questions
    assert predict.calls == 2
    # Every image was shown on the 512 canvas, and the normalised coordinates went to it with
    # no letterbox adjustment, as UniGeoSeg's code does: the 16x8 image's box [0.25, 0.75]^2
    # becomes [128, 384]^2 on the canvas, though its content fills rows 128-384 only.
    box_prompt, point_prompt = segment.prompts
    assert box_prompt.box.tolist() == [128.0, 128.0, 384.0, 384.0]
    np.testing.assert_allclose(point_prompt.points, [[51.2, 102.4], [153.6, 204.8]])
    assert point_prompt.labels.tolist() == [1, 1] and point_prompt.box is None
    records = {r["id"]: r for r in result["per_sample"]}
    # the box filled: 256 x 256 canvas pixels; the truth (rows 2-5, cols 4-11 of 8 x 16) is
    # rows 192-319, cols 128-383 there: IoU 128 * 256 / (256 * 256)
    assert records["interactive-0-box"]["iou"] == 50.0
    assert records["interactive-0-box"]["interactive"] == {"box": [0.25, 0.25, 0.75, 0.75]}
    assert records["interactive-1-points"]["iou"] == 0.0
    # four bracketed points are no coordinates the reference reads: failed, with the reason
    four = records["interactive-2-four"]
    assert four["failed"].startswith("InputError") and "no coordinates" in four["failed"]
    assert four["interactive"] is None
    assert [f["id"] for f in result["failures"]] == ["interactive-2-four"]
    groups = result["groups"]
    assert groups["interactive"]["giou"] == pytest.approx(16.67)
    assert groups["referring"]["giou"] == groups["reasoning"]["giou"] == 100.0
    # cIoU on the centred 512 canvas
    counts = [_canvas_counts(_answer(segment, v), v["mask"]) for v in expected.values()]
    ciou = 100 * sum(i for i, _ in counts) / sum(u for _, u in counts)
    assert result["ciou"] == pytest.approx(ciou, abs=0.005)
    saved = np.asarray(Image.open(tmp_path / "out" / "predictions" / "interactive-0-box.png"))
    assert saved.shape == (512, 512)  # masks are saved in the frame the model was shown
    # by task, published: UniGeoSeg's 76.37 / 74.25 / 52.96 gIoU beside ours
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| UniGeoSeg, trained on GeoSeg-1M | test | interactive | 76.37 | 74.44 |" in markdown
    assert "| UniGeoSeg, trained on GeoSeg-1M | test | reasoning | 52.96 | 58.2 |" in markdown
    assert "| this run (ours) | test | referring | 100.00 | 100.00 |" in markdown
    assert "not to the MLLM" in markdown


def _answer(segment, entry):
    """What the run predicted for `entry`: the truth, or the segmenter's mask (none: empty)."""
    if entry["task"] != "interactive":
        return entry["mask"]
    parsed = parse_interactive(entry["question"])
    if parsed is None:
        return np.zeros_like(entry["mask"])
    return segment(np.zeros((512, 512, 3), np.uint8), parsed.in_pixels(512, 512))


def test_without_a_segment_function_interactive_samples_go_to_predict(tmp_path):
    expected = build_unigeoseg_release(tmp_path / "data")
    questions = {v["question"]: v["mask"] for v in expected.values()}
    predict = ScriptedPredictor(questions, dict.fromkeys(questions, "truth"))
    result = evaluate_referring(
        "unigeoseg-bench", tmp_path / "data", predict=predict, output_dir=tmp_path / "out"
    )
    assert predict.calls == 5 and result["giou"] == 100.0 and result["failed"] == 0


def test_published_rows_name_a_source_and_a_split_and_are_no_unlabelled_averages():
    for name, table in PUBLISHED.items():
        assert table["rows"], name
        for row in table["rows"]:
            assert row["source"] and "split" in row, row
            assert "value" not in row and "average" not in row["method"].lower()
    uni = {(r["method"], r["group"]): (r["giou"], r["ciou"])
           for r in PUBLISHED["unigeoseg-bench"]["rows"]}  # fmt: skip
    ours = "UniGeoSeg, trained on GeoSeg-1M"
    assert uni[(ours, "interactive")] == (76.37, 74.44)
    assert uni[(ours, "referring")] == (74.25, 72.60)
    assert uni[(ours, "reasoning")] == (52.96, 58.20)
    rrsisd = {r["method"]: r for r in PUBLISHED["rrsis-d"]["rows"]}
    assert (rrsisd["UniGeoSeg"]["giou"], rrsisd["UniGeoSeg"]["ciou"]) == (72.23, 81.35)
    er = {(r["method"], r["split"]): r["giou"] for r in PUBLISHED["earthreason"]["rows"]}
    assert er[("UniGeoSeg", "val")] == 72.65 and er[("UniGeoSeg", "test")] == 73.12
