"""The OpenAI-compatible client whatever the endpoint sends: replies past the size limit,
bodies that are not a completion, trickled bodies, long Retry-After, and advice that names
the options a user can set."""

from __future__ import annotations

import re

import numpy as np
import pytest

from terramask.errors import MLLMError
from terramask.models.mllm import OpenAIChatMLLM
from terramask.models.mllm.openai_client import BODY_FACTOR, MAX_REPLY_BYTES
from tests.helpers.chat_server import ChatServer, Step

pytest.importorskip("openai")

BOX = '{"bbox": [1, 2, 3, 4], "prompt": "roof"}'
NOT_OPENAI = "the endpoint did not answer like an OpenAI-compatible server"
URL_ADVICE = ("Check that `MLLMOptions.url` is the base URL of an OpenAI-compatible "
              "chat-completions API (it usually ends in /v1, e.g. http://localhost:8000/v1) "
              "and that the server behind it is healthy.")
# Names of constructor arguments and attributes that a user of the CLI or of the options
# objects cannot set: advice must never name them.
INTERNAL = re.compile(r"timeout_s|max_concurrency|max_side|max_tokens|max_retries|--")


def image() -> np.ndarray:
    return np.zeros((20, 30, 3), np.uint8)


def client(server: ChatServer, **kw) -> OpenAIChatMLLM:
    kw = {"backoff_s": 0.001, "timeout_s": 5.0, "api_key": "test", "max_retries": 0, **kw}
    return OpenAIChatMLLM(server.url, "vlm", **kw)


def failure(script, **kw) -> tuple[str, int]:
    """The message the client fails with, and how many requests it made."""
    with ChatServer(script) as server:
        with pytest.raises(MLLMError) as info:
            client(server, **kw).ask(image(), "find it")
        requests = len(server.requests)
    message = str(info.value)
    assert not INTERNAL.search(message), message
    return message, requests


# ------------------------------------------------------------------ reply size


def test_reply_over_the_limit_is_refused_naming_its_size_and_the_limit():
    message, requests = failure(["x" * (MAX_REPLY_BYTES + 1)], max_retries=2)
    assert requests == 1  # not retried: the model would ramble again
    assert ("failed after 1 attempt: a reply of 1,000,001 bytes, larger than the limit of "
            "1,000,000 bytes (1 MB). The model wrote far more than any answer needs") in message


def test_reply_at_the_limit_is_accepted():
    text = "é" * (MAX_REPLY_BYTES // 2)  # two bytes each in UTF-8
    with ChatServer([text]) as server:
        assert client(server).ask(image(), "find it").text == text


def test_body_is_not_read_past_its_limit():
    limit = BODY_FACTOR * MAX_REPLY_BYTES
    endless = Step(raw=b" " * (limit + 1))
    message, requests = failure([endless], max_retries=2)
    assert requests == 1
    assert f"a response body of more than {limit:,} bytes" in message
    declared = Step(raw=b"{}", content_length=10**12)  # refused from its header alone
    assert f"more than {limit:,} bytes" in failure([declared])[0]


# ------------------------------------------------------------------ not a completion


@pytest.mark.parametrize(("step", "what"), [
    (Step(raw=b""), "(an empty body)"),
    (Step(raw='{"id": "chatcmpl-1", "choices": [{"mess'), "(a body that is not valid JSON "
                                                         "(cut off?): '{\"id\""),
    (Step(raw="<!DOCTYPE html>\n<html><body>Welcome to nginx!</body></html>",
          content_type="text/html"), "(an HTML page: '<!DOCTYPE html> <html><body>Welcome"),
    (Step(raw='{"error": {"message": "model is loading", "code": 503}}'),
     "(an error instead of a completion: 'model is loading')"),
    (Step(raw='{"object": "list", "data": []}'), "(JSON without a completion's choices: "),
    (Step(raw='{"id": "chatcmpl-1", "choices": [{"mess', content_length=4096),
     "(a response cut off before its end: "),
], ids=["empty", "truncated", "html", "error", "no-choices", "connection-closed"])
def test_a_200_that_is_not_a_completion_is_retried_then_named(step, what):
    message, requests = failure([step, step, step], max_retries=2)
    assert requests == 3  # retried like a 5xx
    assert f"failed after 3 attempts: {NOT_OPENAI} {what}" in message
    assert message.endswith(URL_ADVICE) and "output" not in message


def test_a_200_that_is_not_a_completion_then_a_good_one_succeeds():
    with ChatServer([Step(raw="<html></html>", content_type="text/html"), BOX]) as server:
        reply = client(server, max_retries=1).ask(image(), "find it")
        assert len(server.requests) == 2
    assert reply.text == BOX


def test_empty_message_after_finish_reason_length_names_the_output_budget():
    message, requests = failure([Step(text=None, finish_reason="length")], max_retries=2)
    assert requests == 1
    assert message.endswith(
        "failed after 1 attempt: the reply had an empty message (finish_reason 'length'). The "
        "model spent its whole output budget before answering (e.g. on reasoning): use a model "
        "that answers without long reasoning (a non-reasoning or instruct model), or raise the "
        "output-token limit on the server.")


def test_empty_message_otherwise_asks_for_a_vision_model():
    message, _ = failure([Step(text="  ")])
    assert message.endswith("the reply had an empty message (finish_reason 'stop'). Check "
                            "that `MLLMOptions.model` accepts images (a vision model).")


# ------------------------------------------------------------------ time


def test_trickled_body_fails_at_the_timeout():
    """A body sent one byte every 20 ms (300 bytes: 6 s) never trips the SDK's timeout,
    which bounds each wait for bytes; the client's own deadline ends the attempt."""
    slow = Step(raw='{"choices": [{"message": {"content": "hi"}}]}' + " " * 250,
                trickle_s=0.02)
    message, requests = failure([slow], timeout_s=0.5)
    assert requests == 1
    assert "failed after 1 attempt: no answer within 0.5 s" in message


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_longer_than_the_timeout_fails_at_once(status):
    message, requests = failure([Step(status=status, retry_after="2"), BOX], max_retries=3,
                                timeout_s=1.5)
    assert requests == 1
    assert (f"failed after 1 attempt: HTTP {status} (") in message
    assert message.endswith(
        "; the endpoint asked to wait 2 s, longer than the `MLLMOptions.timeout` of 1.5 s. Run "
        "again later (replies already received are cached), or raise `MLLMOptions.timeout` "
        "to let TerraMask wait that long.")


def test_retry_after_of_a_503_within_the_timeout_is_honoured():
    with ChatServer([Step(status=503, retry_after="0.3"), BOX]) as server:
        mllm = client(server, max_retries=1, backoff_s=0.0)
        waits = []
        real = mllm._delay
        mllm._delay = lambda attempt, last: waits.append(real(attempt, last)) or 0.0
        assert mllm.ask(image(), "find it").text == BOX
    assert waits == [0.3]


# ------------------------------------------------------------------ temperature


def test_a_model_refusing_the_temperature_is_asked_again_without_it():
    refusal = Step(status=400, text="Unsupported value: 'temperature' does not support 0.0 "
                                    "with this model. Only the default (1) value is supported.")
    with ChatServer([refusal, BOX, BOX]) as server:
        mllm = client(server)  # max_retries=0: the second request is not a retry
        assert mllm.ask(image(), "find it").text == BOX
        assert mllm.ask(image(), "again").text == BOX
        sent = ["temperature" in request.body for request in server.requests]
    assert sent == [True, False, False]


def test_other_400s_are_not_retried():
    message, requests = failure([Step(status=400, text="bad image"), BOX], max_retries=2)
    assert requests == 1
    assert message.endswith("The server refused the request: check that `MLLMOptions.model` "
                            "accepts images (a vision model), or show smaller images "
                            "(`AskOptions.overview_size`).")


# ------------------------------------------------------------------ advice


@pytest.mark.parametrize(("script", "advice"), [
    ([Step(status=413, text="too big")],
     "The image is too large for the server: show smaller images (`AskOptions.overview_size`)."),
    ([Step(status=429, text="slow down")] * 2,
     "The endpoint is rate-limiting: lower `MLLMOptions.concurrency`, or wait and run again "
     "(cached replies are kept)."),
    ([Step(status=404, text="no such model")],
     "Check the model name (`MLLMOptions.model`) and `MLLMOptions.url` (it usually ends in "
     "/v1)."),
    ([Step(status=500, text="boom")] * 2,
     "The server failed on its side: check its logs and load, or lower "
     "`MLLMOptions.concurrency`."),
    ([Step(sleep_s=1.0, text=BOX)] * 2,
     "The server is slow or overloaded: raise `MLLMOptions.timeout`, lower "
     "`MLLMOptions.concurrency`, or show smaller images (`AskOptions.overview_size`)."),
], ids=["413", "429", "404", "500", "timeout"])
def test_advice_names_the_options_a_user_can_set(script, advice):
    message, _ = failure(script, max_retries=len(script) - 1, timeout_s=0.3)
    assert message.endswith(advice)


def test_the_command_line_shows_its_flags_for_the_options_named():
    from terramask.cli import for_cli

    message, _ = failure([Step(sleep_s=1.0, text=BOX)], timeout_s=0.3)
    shown = for_cli(message)
    for flag in ("--mllm-timeout", "--mllm-concurrency", "--overview-size"):
        assert flag in shown
    assert "`" not in shown
