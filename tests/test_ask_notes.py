"""`ask` says what the model returned when nothing of it could be used, instead of a bare
"nothing was found"."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from terramask.cli import cli
from terramask.testing.scenes import write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_sam
from tests.helpers.chat_server import ChatServer


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("tiny") / "sam")


@pytest.mark.parametrize(
    ("engine", "reply", "said"),
    [
        ("clicks", '{"bbox": [50, 40, 150, 120], "prompt": "building"}', "1 box and 0 clicks"),
        ("clicks", '{"points": [[120, 80]], "labels": [0]}', "only negative clicks"),
        ("box", '{"points": [[120, 80]], "labels": [1]}', "0 boxes and 1 click"),
    ],
)
def test_a_reply_the_engine_cannot_use_is_explained(tmp_path, monkeypatch, sam, engine, reply,
                                                    said):  # fmt: skip
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    scene = write_synthetic_scene(tmp_path / "scene.tif", width=300, height=200)
    with ChatServer([reply]) as server:
        result = CliRunner().invoke(cli, [
            "ask", str(scene), "the building", "--engine", engine, "--mllm-url", server.url,
            "--mllm-model", "test-vlm", "--segmenter", str(sam), "--device", "cpu",
            "-o", str(tmp_path / "out"), "--json",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["found"] is False
    assert data["answer"].startswith("Nothing was segmented:") and said in data["answer"]
    assert any(said in w for w in data["warnings"])
    human = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert said in human["answer"]


def test_at_most_max_objects_boxes_of_a_reply_are_segmented(tmp_path, monkeypatch, sam):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    scene = write_synthetic_scene(tmp_path / "scene.tif", width=300, height=200)
    boxes = [[x, 10, x + 8, 18] for x in range(0, 290, 9)]  # 33 boxes
    reply = json.dumps([{"bbox_2d": b, "label": "car"} for b in boxes])
    with ChatServer([reply]) as server:
        result = CliRunner().invoke(cli, [
            "ask", str(scene), "every car", "--engine", "box", "--mllm-url", server.url,
            "--mllm-model", "test-vlm", "--segmenter", str(sam), "--device", "cpu",
            "--max-objects", "3", "--boxes", "all", "-o", str(tmp_path / "out"), "--json",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["boxes"]) == 3
    assert any("33 boxes" in w and "--max-objects" not in w for w in data["warnings"])


@pytest.mark.parametrize(("box", "flat"), [
    ([100, 80, 100, 80], "no width and no height"),
    ([60, 90, 240, 90], "no height"),
])  # fmt: skip
def test_a_box_without_area_is_reported_as_such(tmp_path, monkeypatch, sam, box, flat):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    scene = write_synthetic_scene(tmp_path / "scene.tif", width=300, height=200)
    reply = json.dumps({"bbox": box, "prompt": "well"})
    with ChatServer([reply]) as server:
        result = CliRunner().invoke(cli, [
            "ask", str(scene), "the well", "--engine", "box", "--mllm-url", server.url,
            "--mllm-model", "test-vlm", "--segmenter", str(sam), "--device", "cpu",
            "-o", str(tmp_path / "out"), "--json",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["boxes"][0]["zero_area"] == flat
    assert any(flat in w and "window of context" in w for w in data["warnings"])
    if not data["found"]:
        assert "had " + flat in data["answer"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from terramask.testing.tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip")


@pytest.mark.parametrize(("boxes", "segmented"), [([], 1), (["--boxes", "all"], 2)])
def test_geoseg_segments_the_first_box_as_the_reference_and_says_what_it_ran(
    tmp_path, monkeypatch, sam, clip, boxes, segmented
):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    scene = write_synthetic_scene(tmp_path / "scene.tif", width=300, height=200)
    reply = json.dumps([{"bbox": [20, 20, 80, 70], "prompt": "roof"},
                        {"bbox": [150, 90, 260, 180], "prompt": "roof"}])  # fmt: skip
    with ChatServer([reply]) as server:
        result = CliRunner().invoke(cli, [
            "ask", str(scene), "the roofs", "--mllm-url", server.url, "--mllm-model",
            "test-vlm", "--segmenter", str(sam), "--clip", str(clip), "--device", "cpu",
            *boxes, "-o", str(tmp_path / "out"), "--json",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["boxes"]) == segmented
    assert data["boxes"][0]["routes"]["route_a"]["model"] == "sam"  # no SAM 3 given
    configuration = data["published_configuration"]
    assert configuration["matches"] is False
    assert any("SAM 3" in d for d in configuration["differences"])
    if segmented == 1:
        assert any("gave 2 boxes; the first was segmented" in w for w in data["warnings"])
