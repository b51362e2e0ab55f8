"""`evaluate_asking` against scripted chat servers: the reference protocol's interactive
samples reach the segmenter and never the MLLM, and the optional judge MLLM's scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.eval.judge import judge_overlay
from terramask.eval.referring import evaluate_asking
from terramask.eval.referring_datasets import letterbox, letterbox_image
from terramask.models.mllm import OpenAIChatMLLM
from terramask.pipeline import engines
from terramask.pipeline.engines import AskModels
from tests.helpers.chat_server import ChatServer, Grounder, Step
from tests.helpers.doubles import ShapeSegmenter
from tests.helpers.referring_data import build_earthreason, build_unigeoseg_release


@pytest.fixture
def segmenter(monkeypatch):
    """The segmenter `evaluate_asking` builds: a double whose box prompts fill the box."""
    double = ShapeSegmenter(radius=1.0)
    built = []

    def build(engine, models):
        built.append(engine)
        return AskModels(double)

    monkeypatch.setattr(engines, "build_ask_models", build)
    double.built = built
    return double


def _client(server):
    return OpenAIChatMLLM(server.url, "test-vlm", max_retries=0, cache=None)


def test_interactive_samples_go_to_the_segmenter_and_never_to_the_mllm(tmp_path, segmenter):
    expected = build_unigeoseg_release(tmp_path / "data")
    with ChatServer(Grounder((0.0, 0.0, 0.5, 0.5), label="roof")) as server:
        result = evaluate_asking(
            "unigeoseg-bench", tmp_path / "data", engine="box", mllm=lambda: _client(server),
            output=tmp_path / "out",
        )  # fmt: skip
        asked = [" ".join(r.texts()) for r in server.requests]
    # only the referring and the reasoning question were put to the MLLM
    assert len(asked) == 2
    assert any("the roof left of the road" in text for text in asked)
    assert any("Where could people swim?" in text for text in asked)
    assert not any("x0,y0=" in text or "[0.1,0.2]" in text for text in asked)
    # the segmenter got the box and the two positive clicks, in pixels of the 512 canvas each
    # image was shown on (normalised coordinates unadjusted, as UniGeoSeg's code)
    boxes = [c["boxes"] for c in segmenter.predict_calls if c["boxes"] is not None]
    assert any(np.allclose(b, [[128.0, 128.0, 384.0, 384.0]]) for b in boxes)
    clicks = [c for c in segmenter.predict_calls if c["boxes"] is None]
    assert np.allclose(clicks[0]["points"], [[[51.2, 102.4], [153.6, 204.8]]])
    assert clicks[0]["labels"].tolist() == [[1, 1]]
    records = {r["id"]: r for r in result["per_sample"]}
    # the 16 x 8 image's target fills half the canvas rows the unadjusted box covers
    assert records["interactive-0-box"]["iou"] == 50.0
    assert records["interactive-0-box"]["answer"] is None
    assert "no coordinates" in records["interactive-2-four"]["failed"]
    assert result["samples"] == len(expected) and result["protocol"] == "reference"
    assert result["models"]["mllm"] == "test-vlm" and "judge" not in result["models"]


def test_an_interactive_only_set_makes_no_mllm(tmp_path, segmenter):
    build_unigeoseg_release(tmp_path / "data")

    def no_mllm():
        raise AssertionError("no MLLM is needed for interactive samples")

    result = evaluate_asking(
        "unigeoseg-bench", tmp_path / "data" / "interactive", engine="geoseg", mllm=no_mllm,
        output=tmp_path / "out",
    )  # fmt: skip
    assert result["samples"] == 3 and set(result["groups"]) == {"interactive"}
    assert result["models"]["mllm"] is None and segmenter.built == ["geoseg"]


def test_all_texts_keeps_sending_every_text_to_the_mllm(tmp_path, segmenter):
    build_unigeoseg_release(tmp_path / "data")
    with ChatServer(Grounder((0.0, 0.0, 0.5, 0.5))) as server:
        result = evaluate_asking(
            "unigeoseg-bench", tmp_path / "data", engine="box", mllm=lambda: _client(server),
            output=tmp_path / "out", protocol="all-texts",
        )  # fmt: skip
        asked = len(server.requests)
    assert result["samples"] == asked == 6 and result["protocol"] == "all-texts"


def test_an_unknown_protocol_is_refused_before_anything_runs(tmp_path):
    build_earthreason(tmp_path / "data")

    def never():
        raise AssertionError("no client before the protocol is checked")

    with pytest.raises(InputError, match="reference, all-texts"):
        evaluate_asking("earthreason", tmp_path / "data", mllm=never, protocol="some",
                        output=tmp_path / "out")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_judge_rates_every_prediction_and_its_means_reach_the_report(tmp_path, segmenter):
    build_earthreason(tmp_path / "data")
    judge_replies = [
        '{"faithfulness": 5, "localization": 4, "robustness": 3, "overlap": 2}',
        "The mask looks fine.",  # no scores: 3 each
        Step(status=500),  # the judge fails on this sample: left out of the means
        '```json\n{"faithfulness": 1, "localization": 2, "robustness": 1}\n```',
    ]
    with (
        ChatServer(Grounder((0.1, 0.2, 0.5, 0.7), label="pier")) as asker,
        ChatServer(judge_replies) as judging,
    ):
        result = evaluate_asking(
            "earthreason", tmp_path / "data", engine="box", mllm=lambda: _client(asker),
            judge=lambda: _client(judging), output=tmp_path / "out",
        )  # fmt: skip
        judged = judging.requests
    assert len(judged) == 4 and result["samples"] == 4
    judge = result["judge"]
    assert judge["model"] == "test-vlm" and (judge["judged"], judge["failed"]) == (3, 1)
    assert judge["faithfulness"] == 3.0  # (5 + 3 + 1) / 3
    assert judge["localization"] == 3.0  # (4 + 3 + 2) / 3
    assert judge["robustness"] == pytest.approx(2.33)  # (3 + 3 + 1) / 3
    records = result["per_sample"]
    assert [r["judge"].get("failed", "").startswith("MLLMError") for r in records] == [
        False, False, True, False
    ]  # fmt: skip
    # the overlap is computed from the IoU, whatever the judge wrote
    for record in (records[0], records[1], records[3]):
        iou = record["judge"]["iou"] / 100
        assert record["judge"]["overlap"] == 1 + sum(iou >= b for b in (0.2, 0.4, 0.6, 0.8))
    assert records[0]["judge"]["judge_overlap"] == 2
    # b has no target: whatever was predicted, the judge's IoU is 0 (overlap 1)
    assert records[1]["judge"]["overlap"] == 1
    # EarthReason names no class: the judge is asked about the question, on the image the
    # model was shown (the reference protocol's 512 canvas)
    prompt = " ".join(judged[0].texts())
    assert "Where could boats dock?" in prompt and "512 x 512 pixels" in prompt
    report = json.loads(Path(result["outputs"]["report_json"]).read_text())
    assert report["judge"]["faithfulness"] == 3.0 and report["models"]["judge"] == "test-vlm"
    markdown = Path(result["outputs"]["report_md"]).read_text()
    assert "## Judged scores (1-5)" in markdown and "3 samples judged, 1 failed" in markdown
    assert "overlap is the IoU binned" in markdown


def test_the_judge_sees_the_overlay_of_truth_and_prediction(tmp_path, segmenter):
    truth = build_earthreason(tmp_path / "data")
    with (
        ChatServer(Grounder((0.1, 0.25, 0.4, 0.625), label="pier")) as asker,
        ChatServer(lambda request: '{"faithfulness": 4}') as judging,
    ):
        result = evaluate_asking(
            "earthreason", tmp_path / "data", engine="box", mllm=lambda: _client(asker),
            judge=_client(judging), output=tmp_path / "out", limit=1,
        )  # fmt: skip
        shown = judging.requests[0].image()
    from PIL import Image

    from terramask.eval.datasets import read_image

    # the image, the truth and the prediction on the canvas the model was shown
    image = letterbox_image(read_image(tmp_path / "data" / "test" / "images" / "a.png"))
    pred = np.asarray(Image.open(f"{result['outputs']['predictions']}/a-0.png"))
    assert pred.shape == (512, 512)
    assert np.array_equal(shown, judge_overlay(image, letterbox(truth["a"]), pred > 0))
    assert result["judge"]["judged"] == 1 and result["judge"]["faithfulness"] == 4.0
