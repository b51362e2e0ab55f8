"""`ask` end to end: a scripted OpenAI-compatible server on 127.0.0.1, tiny random SAM and
CLIP, a georeferenced scene; every engine, refusals and endpoint failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from terramask.cli import cli
from terramask.options import ModelOptions
from terramask.testing.scenes import write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam
from tests.helpers.chat_server import ChatServer, Step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"sam": save_tiny_sam(root / "sam"), "clip": save_tiny_clip(root / "clip")}


@pytest.fixture
def scene(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    return write_synthetic_scene(tmp_path / "scene.tif", width=400, height=300, nodata_border=0)


def ask(scene, server, tiny, out, *extra):
    """The CLI's ask; CLIP only for geoseg (the other engines refuse it: they use none)."""
    clip = [] if "--engine" in extra else ["--clip", tiny["clip"]]
    args = [
        "ask", scene, "which building is the largest?", "--mllm-url", server.url,
        "--mllm-model", "test-vlm", "--segmenter", tiny["sam"], *clip,
        "-o", out, "--json", "--mllm-retries", "1", "--mllm-timeout", "5", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


def test_geoseg_segments_inside_the_refined_box(scene, tiny, tmp_path):
    reply = 'Sure.\n```json\n{"bbox": [100, 120, 220, 260], "prompt": "building"}\n```'
    with ChatServer([reply]) as server:
        result = ask(scene, server, tiny, tmp_path / "out")
        shown = server.requests[0].image()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert shown.shape[:2] == (300, 400)  # the whole scene fits the overview
    [box] = data["boxes"]
    assert box["mllm_px"] == [100, 120, 220, 260]
    # GeoSeg's published correction: -0.2w, -0.2h, +0.1w, +0.1h with w=120, h=140
    assert box["refined_px"] == [76, 92, 232, 274]
    assert data["entity"] == "building" and data["reply"] == reply
    with rasterio.open(scene) as src, rasterio.open(data["outputs"]["mask"]) as mask:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
        ids = mask.read(1)
        x0, y0 = src.transform @ (76, 92)
        x1, y1 = src.transform @ (232, 274)
    # [minx, miny, maxx, maxy] in map units: on a north-up grid the top-left corner is
    # (minx, maxy)
    assert box["refined_map"] == pytest.approx([x0, y1, x1, y0], abs=1e-3)
    outside = np.ones(ids.shape, bool)
    outside[92:274, 76:232] = False
    assert not (ids[outside] == 1).any()
    assert data["found"] == bool((ids == 1).any())


def test_a_refusal_is_an_empty_answer_not_an_error(scene, tiny, tmp_path):
    with ChatServer(["There is no such building in this image."]) as server:
        result = ask(scene, server, tiny, tmp_path / "out")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["found"] is False
    assert data["answer"] == "There is no such building in this image."  # the model's words
    with rasterio.open(data["outputs"]["mask"]) as mask:
        assert not (mask.read(1) == 1).any()


@pytest.mark.parametrize(
    "engine, reply",
    [
        ("box", '{"bbox": [50, 40, 150, 120], "prompt": "roof"}'),
        ("clicks", '{"points": [[120, 80], [200, 200]], "labels": [1, 0]}'),
    ],
)
def test_box_and_clicks_engines(scene, tiny, tmp_path, engine, reply):
    with ChatServer([reply]) as server:
        result = ask(scene, server, tiny, tmp_path / engine, "--engine", engine)
        prompt = server.requests[0].texts()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["engine"] == engine
    if engine == "clicks":
        assert "points" in " ".join(prompt)
        assert [p["label"] for p in data["points"]] == [1, 0]
    else:
        assert data["boxes"][0]["mllm_px"] == [50, 40, 150, 120]
        assert "refined_px" not in data["boxes"][0]  # the ablation uses the raw box


def test_endpoint_failures_are_one_paragraph_and_write_nothing(scene, tiny, tmp_path):
    with ChatServer([Step(status=500), Step(status=500)]) as server:
        result = ask(scene, server, tiny, tmp_path / "out")
        attempts = len(server.requests)
    assert result.exit_code == 2
    assert attempts == 2  # the first try and one retry
    text = result.output.strip()
    assert text.startswith("error:") and server.url in text and "Traceback" not in text
    assert not list((tmp_path / "out").glob("*.tif"))


def test_unparseable_replies_say_so(scene, tiny, tmp_path):
    with ChatServer(["banana"]) as server:
        result = ask(scene, server, tiny, tmp_path / "out")
    assert result.exit_code == 2
    assert "could not parse" in result.output


def test_a_second_run_is_served_from_the_cache(scene, tiny, tmp_path):
    reply = '{"bbox": [10, 10, 60, 60], "prompt": "pool"}'
    with ChatServer([reply]) as server:
        first = ask(scene, server, tiny, tmp_path / "a")
        second = ask(scene, server, tiny, tmp_path / "b")
        assert len(server.requests) == 1
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert json.loads(second.stdout)["boxes"] == json.loads(first.stdout)["boxes"]


def test_a_reasoning_benchmark_runs_through_the_ask_engines(tiny, tmp_path, monkeypatch):
    from terramask import api
    from terramask.models.mllm import OpenAIChatMLLM
    from tests.helpers.referring_data import build_earthreason

    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    build_earthreason(tmp_path / "er")
    replies = [
        '{"bbox": [1, 2, 4, 5], "prompt": "pier"}',
        "There is no such thing here.",
        '{"bbox": [], "prompt": ""}',
        Step(status=500),
    ]
    with ChatServer(replies) as server:
        client = OpenAIChatMLLM(server.url, "test-vlm", max_retries=0, cache=None)
        report = api.evaluate(
            "earthreason",
            tmp_path / "er",
            split="test",
            mllm=client,
            output=tmp_path / "out",
            models=ModelOptions(segmenter=str(tiny["sam"]), clip=str(tiny["clip"])),
        )  # fmt: skip
    assert report["samples"] == 4 and report["failed"] == 1
    # GeoSeg without SAM 3 is not its published configuration, and the report says so
    assert report["published_configuration"]["matches"] is False
    markdown = (tmp_path / "out" / "earthreason_test" / "report.md").read_text()
    assert "**Not the published configuration** (GeoSeg)" in markdown
    assert 0 <= report["giou"] <= 100
    assert "MLLMError" in report["failures"][0]["reason"]
    assert len(list((tmp_path / "out").rglob("predictions/*.png"))) == 4


def test_a_large_scene_is_shown_as_an_overview_and_segmented_at_full_resolution(
    tiny, tmp_path, monkeypatch
):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    scene = write_synthetic_scene(tmp_path / "wide.tif", width=3000, height=600)
    with ChatServer(['{"bbox": [100, 50, 200, 150], "prompt": "field"}']) as server:
        result = ask(scene, server, tiny, tmp_path / "out", "--overview-size", "1000",
                     "--engine", "box")  # fmt: skip
        shown = server.requests[0].image()
    assert result.exit_code == 0, result.output
    assert shown.shape[:2] == (200, 1000)
    data = json.loads(result.stdout)
    assert data["boxes"][0]["mllm_px"] == [300, 150, 600, 450]  # back in scene pixels
    with rasterio.open(data["outputs"]["mask"]) as mask:
        assert mask.shape == (600, 3000)
        ids = mask.read(1)
    rows, cols = np.nonzero(ids == 1)
    if len(rows):  # a random SAM may find nothing; what it finds lies near the box
        assert cols.min() >= 300 - 75 and cols.max() < 600 + 75


def test_benchmark_replies_are_fetched_concurrently_then_met_in_the_cache(tiny, tmp_path):
    from terramask import api
    from terramask.models.mllm import OpenAIChatMLLM, ReplyCache
    from tests.helpers.referring_data import build_earthreason

    build_earthreason(tmp_path / "er")

    def answer(request):
        prompt = " ".join(request.texts())
        return "There is none." if "airport" in prompt else '{"bbox": [1, 1, 4, 4], "prompt": "x"}'

    with ChatServer(answer) as server:
        client = OpenAIChatMLLM(server.url, "test-vlm", max_retries=0, max_concurrency=3,
                                cache=ReplyCache(tmp_path / "cache"))  # fmt: skip
        report = api.evaluate(
            "earthreason",
            tmp_path / "er",
            split="test",
            mllm=client,
            output=tmp_path / "out",
            models=ModelOptions(segmenter=str(tiny["sam"]), clip=str(tiny["clip"])),
        )  # fmt: skip
        asked = len(server.requests)
    assert report["samples"] == 4 and report["failed"] == 0, report["failures"]
    assert asked == 4  # one request per sample: the evaluation itself only met the cache
