"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 with scripted faults."""

from __future__ import annotations

import time

import numpy as np
import pytest

from terramask.errors import InputError, MLLMError
from terramask.methods.replies import box_prompt, parse_reply
from terramask.models.mllm import OpenAIChatMLLM, ReplyCache, guess_convention, guess_frame
from tests.helpers.chat_server import ChatServer, Step

pytest.importorskip("openai")

BOX = '{"bbox": [100, 50, 300, 250], "prompt": "building"}'


def image(height: int = 100, width: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def client(server: ChatServer, model: str = "gpt-4o", **kw) -> OpenAIChatMLLM:
    kw = {"backoff_s": 0.001, "timeout_s": 5.0, "api_key": "test", **kw}
    return OpenAIChatMLLM(server.url, model, **kw)


def test_good_json_reply_round_trip_and_request_shape():
    with ChatServer([BOX]) as server:
        reply = client(server).ask(image(), "find the building", system="be terse")
        request = server.requests[0]
    assert reply.text == BOX and reply.shown_size == (100, 200) and not reply.cached
    assert reply.frame == "pixel" and reply.model == "gpt-4o"
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "gpt-4o" and request.body["temperature"] == 0.0
    assert request.body["messages"][0] == {"role": "system", "content": "be terse"}
    assert request.texts() == ["be terse", "find the building"]
    assert request.headers["authorization"] == "Bearer test"
    assert request.image_urls()[0].startswith("data:image/png;base64,")
    np.testing.assert_array_equal(request.image(), image())  # PNG is lossless


def test_prose_wrapped_json_parses():
    text = 'Here you go:\n```json\n{"bbox": [20, 10, 120, 90], "prompt": "building"}\n```'
    with ChatServer([text]) as server:
        reply = client(server).ask(image(), box_prompt("which building is tallest?"))
    parsed = parse_reply(reply, (100, 200))
    np.testing.assert_array_equal(parsed.boxes, [[20, 10, 120, 90]])
    assert parsed.entity == "building" and parsed.answer == "Here you go:"


def test_resized_image_pixels_are_scaled_back():
    # 1000x2000 (H, W) sent with max_side 1000 → shown 500x1000; the box comes back ×2.
    with ChatServer([BOX]) as server:
        mllm = client(server, "Qwen/Qwen2.5-VL-72B-Instruct", max_side=1000)
        reply = mllm.ask(image(1000, 2000), "find it")
        sent = server.requests[0].image()
    assert sent.shape == (500, 1000, 3) and reply.shown_size == (500, 1000)
    assert reply.frame == "pixel"
    np.testing.assert_array_equal(parse_reply(reply, (1000, 2000)).boxes, [[200, 100, 600, 500]])


def test_qwen3_thousandths_become_original_pixels():
    with ChatServer(['{"bbox_2d": [250, 100, 500, 900], "label": "field"}']) as server:
        mllm = client(server, "Qwen/Qwen3-VL-32B-Instruct", max_side=512)
        reply = mllm.ask(image(800, 1600), "find it")
    assert reply.frame == "norm1000" and reply.shown_size == (256, 512)
    parsed = parse_reply(reply, (800, 1600))
    np.testing.assert_array_equal(parsed.boxes, [[400, 80, 800, 720]])
    assert parsed.entity == "field" and parsed.warnings == []


def test_data_url_decodes_to_the_shown_size_in_jpeg_too():
    with ChatServer([BOX]) as server:
        client(server, max_side=64, image_format="jpeg").ask(image(90, 30), "find it")
        url = server.requests[0].image_urls()[0]
        sent = server.requests[0].image()
    assert url.startswith("data:image/jpeg;base64,") and sent.shape == (64, 21, 3)


def test_refusal_reply_is_no_target():
    with ChatServer(["I cannot see any airport in this image."]) as server:
        reply = client(server).ask(image(), "where is the airport?")
    assert parse_reply(reply, (100, 200)).no_target


def test_malformed_reply_is_could_not_parse():
    with ChatServer(["The answer is the big one, obviously."]) as server:
        reply = client(server).ask(image(), "which one?")
    with pytest.raises(MLLMError, match="could not parse the model's reply"):
        parse_reply(reply, (100, 200))


def test_429_is_retried_and_retry_after_is_honoured():
    with ChatServer([Step(status=429, retry_after="0.3"), BOX]) as server:
        start = time.monotonic()
        reply = client(server, backoff_s=0.001).ask(image(), "find it")
        elapsed = time.monotonic() - start
        assert len(server.requests) == 2
    assert reply.text == BOX and elapsed >= 0.3


def test_4xx_other_than_429_is_not_retried():
    with ChatServer([Step(status=401, text="bad key"), BOX]) as server:
        with pytest.raises(MLLMError, match=r"HTTP 401.*API key") as info:
            client(server).ask(image(), "find it")
        assert len(server.requests) == 1
    assert server.url in str(info.value) and "'gpt-4o'" in str(info.value)


def test_500s_fail_one_item_of_ask_many_while_the_others_succeed():
    def script(request):
        prompt = request.texts()[-1]
        if prompt == "bad":
            return Step(status=500, text="boom")
        return f'{{"bbox": [1, 2, 3, 4], "prompt": "{prompt}"}}'

    with ChatServer(script) as server:
        mllm = client(server, max_retries=2, max_concurrency=2)
        items = [(image(), "a"), (image(), "bad"), (image(), "c", "system text")]
        results = mllm.ask_many(items)
        bad_requests = [r for r in server.requests if r.texts()[-1] == "bad"]
    assert [type(r).__name__ for r in results] == ["MLLMReply", "MLLMError", "MLLMReply"]
    assert '"a"' in results[0].text and '"c"' in results[2].text
    assert len(bad_requests) == 3  # 1 + max_retries
    message = str(results[1])
    assert "failed after 3 attempts" in message and "HTTP 500" in message
    assert server.url in message and "'gpt-4o'" in message


def test_slow_reply_past_the_timeout_is_retried_then_fails():
    with ChatServer([Step(sleep_s=1.0, text=BOX), Step(sleep_s=1.0, text=BOX)]) as server:
        mllm = client(server, timeout_s=0.2, max_retries=1)
        with pytest.raises(MLLMError, match=r"failed after 2 attempts: no answer within 0.2 s"):
            mllm.ask(image(), "find it")
        assert len(server.requests) == 2


def test_connection_refused_is_retried_then_names_the_endpoint():
    with ChatServer([]) as server:
        url = server.url
    mllm = OpenAIChatMLLM(url, "gpt-4o", api_key="x", max_retries=1, backoff_s=0.001,
                          timeout_s=2)
    with pytest.raises(MLLMError, match="could not connect") as info:
        mllm.ask(image(), "find it")
    assert url in str(info.value) and "server is running" in str(info.value)


@pytest.mark.parametrize("step", [Step(text=None), Step(text="   ")])
def test_empty_or_absent_content_is_an_error(step):
    with ChatServer([step]) as server, pytest.raises(MLLMError, match="empty message"):
        client(server).ask(image(), "find it")


def test_cache_hit_makes_no_second_request(tmp_path):
    cache = ReplyCache(tmp_path / "cache")
    with ChatServer([BOX]) as server:
        mllm = client(server, cache=cache)
        first = mllm.ask(image(), "find it")
        second = mllm.ask(image(), "find it")
        assert len(server.requests) == 1
    assert not first.cached and second.cached
    assert (second.text, second.shown_size, second.frame) == (
        first.text, first.shown_size, first.frame)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_key_changes_with_what_changes_the_answer(tmp_path):
    cache = ReplyCache(tmp_path)
    with ChatServer([BOX, BOX, BOX]) as server:
        mllm = client(server, cache=cache)
        mllm.ask(image(seed=0), "find it")
        mllm.ask(image(seed=1), "find it")
        mllm.ask(image(seed=0), "find it", system="other")
        assert len(server.requests) == 3


def test_corrupt_cache_entry_is_a_miss(tmp_path):
    cache = ReplyCache(tmp_path)
    with ChatServer([BOX, BOX]) as server:
        mllm = client(server, cache=cache)
        mllm.ask(image(), "find it")
        for entry in tmp_path.rglob("*.json"):
            entry.write_text("{not json")
        assert not mllm.ask(image(), "find it").cached


def test_default_cache_folder_follows_terramask_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path))
    assert ReplyCache().folder == tmp_path / "mllm"


@pytest.mark.parametrize(("model", "frame"), [
    ("Qwen/Qwen3-VL-32B-Instruct", "norm1000"), ("qwen3-vl:8b", "norm1000"),
    ("Qwen/Qwen2.5-VL-7B-Instruct", "pixel"), ("qwen2.5vl:7b", "pixel"),
    ("qwen2_5_vl", "pixel"), ("Qwen/Qwen2-VL-7B-Instruct", "norm1000"),
    ("OpenGVLab/InternVL3-8B", "norm1000"), ("gpt-5", "pixel"), ("gpt-4o-mini", "pixel"),
])
def test_frame_guess(model, frame):
    assert guess_frame(model) == frame == guess_convention(model)
    assert OpenAIChatMLLM("http://127.0.0.1:1/v1", model).frame == frame


def test_bad_settings_and_inputs_are_input_errors():
    with pytest.raises(InputError, match=r"coordinate frame 'percent'.*auto, pixel, norm1000"):
        OpenAIChatMLLM("http://127.0.0.1:1/v1", "m", coords="percent")
    with pytest.raises(InputError, match="max_side"):
        OpenAIChatMLLM("http://127.0.0.1:1/v1", "m", max_side=4)
    mllm = OpenAIChatMLLM("http://127.0.0.1:1/v1", "m")
    with pytest.raises(InputError, match="empty prompt"):
        mllm.ask(image(), "  ")
    with pytest.raises(InputError, match="uint8"):
        mllm.ask(np.zeros((4, 4, 3), np.float32), "find it")
    results = mllm.ask_many([(np.zeros((4, 4, 5), np.uint8), "find it")])
    assert isinstance(results[0], InputError)


def test_api_key_falls_back_to_env_then_empty(monkeypatch):
    with ChatServer([BOX, BOX]) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "from-env")
        OpenAIChatMLLM(server.url, "m").ask(image(), "find it")
        monkeypatch.delenv("OPENAI_API_KEY")
        OpenAIChatMLLM(server.url, "m").ask(image(), "find it")
        keys = [r.headers["authorization"] for r in server.requests]
    assert keys == ["Bearer from-env", "Bearer EMPTY"]


def test_exhausted_script_answers_500():
    with ChatServer([]) as server, pytest.raises(MLLMError, match="script exhausted"):
        client(server, max_retries=0).ask(image(), "find it")
