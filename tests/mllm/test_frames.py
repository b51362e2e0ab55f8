"""Prompt and parser agree on the coordinate frame, per client, and nothing is rescaled.

Qwen2.5-VL and other models answer in pixels of the image as sent (the prompt states its
size), Qwen3-VL in its native 0-1000 (asked for in those words), `coords=` overrides; the
parser reads exactly the frame asked for and reports (and clamps) what lies outside it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.methods.replies import (
    MAX_WARNINGS,
    box_prompt,
    clicks_prompt,
    parse_reply,
    prompt_for,
    request_frame,
)
from terramask.models.mllm import OpenAIChatMLLM, ReplyCache, make_mllm
from terramask.protocols import MLLMReply
from tests.helpers.chat_server import ChatServer, Grounder

pytest.importorskip("openai")

QUESTION = "which building is the largest?"
#: The object, in pixels of the caller's 600x800 (H, W) image: x1, y1, x2, y2.
OBJECT = [200.0, 150.0, 440.0, 390.0]


def image(height: int = 600, width: int = 800, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def client(server: ChatServer, model: str, **kw) -> OpenAIChatMLLM:
    kw = {"backoff_s": 0.001, "timeout_s": 5.0, "api_key": "test", "max_retries": 0, **kw}
    return OpenAIChatMLLM(server.url, model, **kw)


def ask(mllm, picture: np.ndarray, *, clicks: bool = False) -> MLLMReply:
    """What `ask` does: the prompt in the client's frame, then the question."""
    return mllm.ask(picture, prompt_for(mllm, QUESTION, picture.shape[:2], clicks=clicks))


# ---------------------------------------------------------------- one object, every frame


@pytest.mark.parametrize(("model", "coords", "frame"), [
    ("gpt-4o", "auto", "pixel"),
    ("Qwen/Qwen2.5-VL-7B-Instruct", "auto", "pixel"),
    ("Qwen/Qwen3-VL-32B-Instruct", "auto", "norm1000"),
    ("gpt-4o", "norm1000", "norm1000"),
    ("gpt-4o", "norm1", "norm1"),
    ("Qwen/Qwen3-VL-32B-Instruct", "pixel", "pixel"),
])
@pytest.mark.parametrize("max_side", [1024, 512])
def test_a_model_obeying_the_prompt_lands_on_the_same_pixels_in_every_frame(
    model, coords, frame, max_side
):
    picture = image()
    grounder = Grounder([v / s for v, s in zip(OBJECT, (800, 600, 800, 600), strict=True)])
    with ChatServer(grounder) as server:
        mllm = client(server, model, coords=coords, max_side=max_side)
        reply = ask(mllm, picture)
    [asked] = grounder.asked
    sent = (800, 600) if max_side == 1024 else (512, 384)
    assert asked.frame == frame == reply.frame and asked.sent == sent
    # the pixel prompt states the size of the image as sent; the normalised ones none
    assert asked.stated == (sent if frame == "pixel" else None)
    assert reply.shown_size == (sent[1], sent[0])
    parsed = parse_reply(reply, picture.shape[:2])
    np.testing.assert_allclose(parsed.boxes, [OBJECT], atol=1.0)
    assert parsed.out_of_frame == [] and parsed.suspected_frame is None
    assert parsed.warnings == [] and parsed.frame == frame


@pytest.mark.parametrize(("model", "coords", "answer"), [
    # pixels of the 512x384 image as sent (800x600 shrunk to max_side 512): x 0.64
    ("gpt-4o", "auto", [128, 96, 282, 250]),
    ("Qwen/Qwen2.5-VL-72B-Instruct", "auto", [128, 96, 282, 250]),
    ("Qwen/Qwen3-VL-8B-Instruct", "auto", [250, 250, 550, 650]),
    ("gpt-4o", "norm1", [0.25, 0.25, 0.55, 0.65]),
])
def test_the_same_object_written_in_each_frame_lands_on_the_same_image_pixels(
    model, coords, answer
):
    picture = image()
    reply_text = json.dumps({"bbox": answer, "prompt": "building"})
    with ChatServer([reply_text]) as server:
        reply = ask(client(server, model, coords=coords, max_side=512), picture)
    parsed = parse_reply(reply, picture.shape[:2])
    np.testing.assert_allclose(parsed.boxes, [OBJECT], atol=1.0)
    assert parsed.warnings == [] and parsed.out_of_frame == []


def test_an_800_px_image_pixel_box_stays_where_the_model_put_it():
    # The example: [100, 100, 200, 200] on an 800 px image from a pixel-frame model
    # is [100, 100, 200, 200], never read as 0-1000 ([80, 80, 160, 160]).
    picture = image(600, 800)
    box = '{"bbox": [100, 100, 200, 200], "prompt": "roof"}'
    for model, coords in (("Qwen/Qwen2.5-VL-7B-Instruct", "auto"), ("gpt-5", "auto"),
                          ("Qwen/Qwen3-VL-8B-Instruct", "pixel")):
        with ChatServer([box]) as server:
            reply = ask(client(server, model, coords=coords), picture)
            prompt = " ".join(server.requests[0].texts())
        assert reply.frame == "pixel" and reply.shown_size == (600, 800)
        assert "Image size: 800 x 600 pixels" in prompt and "[800, 600]" in prompt
        np.testing.assert_array_equal(parse_reply(reply, (600, 800)).boxes,
                                      [[100, 100, 200, 200]])


def test_pixels_a_little_past_the_edge_are_clamped_not_read_as_thousandths():
    # Today's parser read a pixel box past the shown width (but within 1000) as 0-1000 and
    # moved it silently: [700, 100, 820, 200] became [560, 60, 656, 120].
    parsed = parse_reply(MLLMReply('{"bbox": [700, 100, 820, 200]}', (600, 800), "pixel",
                                   "gpt-4o"), (600, 800))
    np.testing.assert_array_equal(parsed.boxes, [[700, 100, 800, 200]])
    assert parsed.out_of_frame == [{"object": "box", "index": 0, "coordinate": "x2",
                                    "value": 820, "frame": "pixel", "limit": 800,
                                    "action": "clamped"}]
    assert parsed.suspected_frame == "norm1000"
    assert any("clamped to [700, 100, 800, 200]" in w for w in parsed.warnings)
    assert any("not rescaled" in w for w in parsed.warnings)


# ---------------------------------------------------------------- prompts


def test_qwen3_vl_by_name_is_asked_for_0_to_1000_in_words():
    with ChatServer(['{"bbox": [250, 250, 550, 650], "prompt": "building"}']) as server:
        mllm = client(server, "Qwen/Qwen3-VL-32B-Instruct")
        reply = ask(mllm, image())
        prompt = " ".join(server.requests[0].texts())
    assert mllm.frame == "norm1000" and reply.frame == "norm1000"
    assert "relative coordinates from 0 to 1000" in prompt and "0-1000, not pixels" in prompt
    assert "[1000, 1000]" in prompt
    assert "Image size:" not in prompt and "800" not in prompt  # no pixel size to confuse it


def test_the_box_prompt_has_the_reference_structure_with_the_size_filled_in():
    prompt = box_prompt(QUESTION, frame="pixel", image_size=(600, 800))
    order = [
        "Reply with a single valid JSON object and nothing else.",
        "Global coordinate alignment",
        "[0, 0] at the top-left corner of the image and [800, 600] at its bottom-right corner",
        "Whole-entity inclusion",
        "wingtips",
        "1. Look over the whole image",
        f'2. Find the target the question asks about: "{QUESTION}"',
        "3. Boundary check",
        "Image size: 800 x 600 pixels (width x height).",
        '{"bbox": [x1, y1, x2, y2], "prompt": "<entity noun>"}',
        "in pixels of this 800 x 600 image",
        "not shifted to the right",
        "SAM 3",
        '{"bbox": [], "prompt": ""}',
        "Answer with the JSON object only.",
    ]
    positions = [prompt.find(part) for part in order]
    assert -1 not in positions, [p for p, at in zip(order, positions, strict=True) if at < 0]
    assert positions == sorted(positions)
    assert box_prompt(QUESTION, frame="pixel", image_size=(600, 800)) == prompt  # cache key


def test_normalised_box_prompts_state_the_frame_instead_of_the_size():
    thousand = box_prompt(QUESTION, frame="norm1000", image_size=(600, 800))
    one = box_prompt(QUESTION, frame="norm1", image_size=(600, 800))
    assert "[1000, 1000] its bottom-right corner" in thousand and "800" not in thousand
    assert "[1, 1] its bottom-right corner" in one and "0-1, not pixels" in one
    assert "800" not in one
    plain = box_prompt(QUESTION)  # no size known: W and H named, without numbers
    assert "[W, H] at its bottom-right corner" in plain and "Image size: W x H" in plain


def test_the_clicks_prompt_states_the_frame_and_size_the_same_way():
    pixel = clicks_prompt(QUESTION, frame="pixel", image_size=(384, 512))
    assert "[512, 384] at its bottom-right corner" in pixel
    assert "Image size: 512 x 384 pixels" in pixel and "in pixels of this 512 x 384" in pixel
    thousand = clicks_prompt(QUESTION, frame="norm1000", image_size=(384, 512))
    assert "0 to 1000" in thousand and "512" not in thousand
    assert f"Question: {QUESTION}" in thousand
    with ChatServer(['{"points": [[500, 450]], "labels": [1]}']) as server:
        reply = ask(client(server, "qwen3-vl:8b"), image(), clicks=True)
        prompt = " ".join(server.requests[0].texts())
    assert "0-1000, not pixels" in prompt and '"points"' in prompt
    np.testing.assert_allclose(parse_reply(reply, (600, 800)).points, [[400, 270]])


def test_prompts_refuse_unknown_frames_and_sizes():
    with pytest.raises(InputError, match="coordinate frame 'percent'"):
        box_prompt(QUESTION, frame="percent")
    with pytest.raises(InputError, match="image size"):
        box_prompt(QUESTION, image_size=(0, 800))
    with pytest.raises(InputError, match="image size"):
        clicks_prompt(QUESTION, image_size=(1, 2, 3))


def test_request_frame_of_a_client_and_of_a_plain_double():
    mllm = OpenAIChatMLLM("http://127.0.0.1:1/v1", "Qwen/Qwen3-VL-8B", max_side=500)
    assert request_frame(mllm, (600, 800)) == ("norm1000", (375, 500))
    assert request_frame(SimpleNamespace(name="double"), (600, 800)) == ("pixel", (600, 800))


# ---------------------------------------------------------------- out of frame


def test_out_of_frame_values_are_clamped_and_reported_in_every_frame():
    for frame, text, expected, entries in [
        ("norm1", '{"bbox": [0.5, -0.1, 1.2, 0.5]}', [[400, 0, 800, 300]],
         [("y1", -0.1, 0), ("x2", 1.2, 1)]),
        ("norm1000", '{"bbox": [500, 0, 1000, 1004]}', [[400, 0, 800, 600]],
         [("y2", 1004, 1000)]),
        ("pixel", '{"bbox": [-3, 10, 90, 610]}', [[0, 10, 90, 600]],
         [("x1", -3, 0), ("y2", 610, 600)]),
    ]:
        parsed = parse_reply(MLLMReply(text, (600, 800), frame, "m"), (600, 800))
        np.testing.assert_allclose(parsed.boxes, expected)
        assert [(e["coordinate"], e["value"], e["limit"]) for e in parsed.out_of_frame] == (
            entries)
        assert {(e["frame"], e["action"], e["object"]) for e in parsed.out_of_frame} == {
            (frame, "clamped", "box")}
        assert any("clamped" in w for w in parsed.warnings)
        json.dumps(parsed.out_of_frame)  # ready for the answer JSON


def test_dropped_boxes_and_clicks_are_reported_too():
    parsed = parse_reply(MLLMReply(
        '{"bbox": [1100, 10, 1200, 50]} {"points": [[10, 10], [1001, 5]], "labels": [1, 0]}',
        (600, 800), "norm1000", "m"), (600, 800))
    np.testing.assert_allclose(parsed.points, [[8, 6]])
    assert parsed.boxes.shape == (0, 4)
    assert [(e["object"], e["index"], e["coordinate"], e["action"])
            for e in parsed.out_of_frame] == [
        ("box", 0, "x1", "dropped"), ("box", 0, "x2", "dropped"), ("click", 1, "x", "dropped")]
    nothing = parse_reply(MLLMReply('{"bbox": [2, 2, 3, 3]}', (600, 800), "norm1", "m"),
                          (600, 800))
    assert nothing.no_target and len(nothing.out_of_frame) == 4


def test_the_out_of_frame_list_is_bounded():
    clicks = [[2000 + i, 5] for i in range(3 * MAX_WARNINGS)]
    parsed = parse_reply(MLLMReply(json.dumps({"points": [[1, 1], *clicks]}), (100, 100),
                                   "pixel", "m"), (100, 100))
    assert len(parsed.points) == 1 and len(parsed.out_of_frame) == MAX_WARNINGS
    assert f"{2 * MAX_WARNINGS} more coordinates outside the 'pixel' frame were not listed" in (
        parsed.warnings)


# ---------------------------------------------------------------- clients


def test_the_client_says_the_size_it_will_show_before_asking():
    with ChatServer(["{}"] * 4) as server:
        mllm = client(server, "gpt-4o", max_side=300)
        for height, width in ((100, 200), (300, 300), (600, 800), (1000, 7)):
            mllm.ask(image(height, width), "find it")
        sent = [r.image().shape[:2] for r in server.requests]
    assert [mllm.shown_size(s) for s in ((100, 200), (300, 300), (600, 800), (1000, 7))] == sent
    assert sent == [(100, 200), (300, 300), (225, 300), (300, 2)]  # native up to max_side


def test_the_frame_is_part_of_the_cache_key(tmp_path):
    cache = ReplyCache(tmp_path)
    box = '{"bbox": [1, 2, 3, 4]}'
    with ChatServer([box, box]) as server:
        pixel = client(server, "gpt-4o", cache=cache).ask(image(), "find it")
        norm = client(server, "gpt-4o", coords="norm1000", cache=cache).ask(image(), "find it")
        again = client(server, "gpt-4o", coords="pixel", cache=cache).ask(image(), "find it")
        assert len(server.requests) == 2
    assert (pixel.frame, norm.frame, again.frame) == ("pixel", "norm1000", "pixel")
    assert again.cached and not norm.cached
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert sorted(r["frame"] for r in records) == ["norm1000", "pixel"]


def test_earlier_cache_records_are_read_or_missed_never_misread(tmp_path):
    cache = ReplyCache(tmp_path)
    key = "ab" + "0" * 62
    (tmp_path / "ab").mkdir()
    record = {"text": "x", "shown_size": [10, 20], "convention": "0-1000", "model": "m"}
    (tmp_path / "ab" / f"{key}.json").write_text(json.dumps(record))
    assert cache.get(key).frame == "norm1000"
    (tmp_path / "ab" / f"{key}.json").write_text(json.dumps({**record, "convention": "%"}))
    assert cache.get(key) is None


def test_make_mllm_passes_coords_and_max_side_from_the_options():
    from terramask.options import MLLMOptions

    common = dict(url="http://127.0.0.1:1/v1", model="gpt-4o", timeout=5.0, retries=0,
                  concurrency=1, cache=False)  # fmt: skip
    mllm = make_mllm(MLLMOptions(coords="norm1", max_side=256, **common))
    assert (mllm.frame, mllm.max_side) == ("norm1", 256)
    mllm = make_mllm(MLLMOptions(**common))  # auto: gpt-4o reads pixels; the client's 1024
    assert (mllm.frame, mllm.max_side) == ("pixel", 1024)
    with pytest.raises(InputError, match=r"`MLLMOptions\.coords`"):
        MLLMOptions(coords="pixels-ish", **common)
    with pytest.raises(InputError, match=r"`MLLMOptions\.max_side`"):
        MLLMOptions(max_side=10, **common)
