"""Asks a multimodal LLM about an image through any OpenAI-compatible chat-completions endpoint.

Works with OpenAI itself (GPT-4o/GPT-5), vLLM, SGLang, Ollama and LM Studio serving Qwen-VL or
similar. Retries are done here rather than by the SDK so that they are visible and testable:
exponential back-off with jitter on timeouts, connection errors, 429 and 503 (honouring
Retry-After), other 5xx, and answers that are not an OpenAI-compatible completion (an empty,
cut-off or HTML body, or a JSON `{"error": ...}` sent with status 200); any other 4xx fails at
once, because asking again would not change the answer. A model that accepts only its default
temperature (reasoning models such as GPT-5 answer 400 to `temperature`) is asked again once
without it, and from then on never sent one.

Whatever the endpoint sends, one item ends in bounded time and memory:

- `MAX_REPLY_BYTES` (1 MB, 1,000,000 bytes): the longest reply text accepted, in UTF-8 bytes.
  A longer one fails the item with an `MLLMError` naming its size and the limit, without
  retrying (the model would likely ramble again). The HTTP body is read in pieces and never
  beyond `BODY_FACTOR` times that limit (room for the JSON around the text and its escapes),
  so an endless body costs at most 4 MB.
- `timeout_s` (`MLLMOptions.timeout`) bounds each attempt from the moment it is sent: the wait
  for the answer to begin and, checked as each piece of the body arrives, the whole answer, so
  a server that trickles bytes cannot hold an item for ever (an attempt lasts at most about
  twice `timeout_s`: the SDK's own timeout bounds each wait for the next piece).
- A Retry-After (or retry-after-ms) is honoured when it is at most `timeout_s`; a longer one
  fails the item at once with that reason instead of sleeping. What is compared is the one
  wait the server asked for against `timeout_s`, the time the user allowed for one answer;
  back-off and the attempts before are not counted in it.

Coordinates: each client asks in one frame (`frame`: "pixel", "norm1000" or "norm1"), guessed
from the model name unless `coords=` names one (see `terramask.models.mllm.frames`): Qwen3-VL
0-1000, Qwen2.5-VL and any other model (GPT, Claude, ...) pixels of the image as sent. The
prompt asks for that frame in words and states the image's size (`shown_size(image_size)`
tells the caller the size before asking); the reply carries the frame, and the parser
(`terramask.methods.replies`) reads it in exactly that frame, reporting and clamping values
outside it.

The image is sent at its native resolution, shrunk only when its long side exceeds
`max_side` (1024 by default; `MLLMOptions.max_side`).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from terramask.errors import InputError, MLLMError, TerraMaskError
from terramask.models.mllm.asking import AskItem, ask_each, check_prompt
from terramask.models.mllm.cache import ReplyCache, cached
from terramask.models.mllm.frames import choose_frame, guess_frame
from terramask.models.mllm.images import (
    DEFAULT_MAX_SIDE,
    IMAGE_FORMATS,
    as_rgb,
    data_url,
    encode_image,
    fit_long_side,
    fitted_size,
    image_digest,
)
from terramask.protocols import MLLMReply

#: The longest reply text accepted, in bytes of UTF-8 (1 MB).
MAX_REPLY_BYTES = 1_000_000
#: The HTTP body is read no further than this many times `MAX_REPLY_BYTES`.
BODY_FACTOR = 4
#: Statuses after which a Retry-After header is honoured.
_RETRY_AFTER_STATUSES = (429, 503)

#: The former name of `terramask.models.mllm.frames.guess_frame`.
guess_convention = guess_frame


class _Attempt(Exception):
    """One failed HTTP attempt: whether to retry, how long the server asked us to wait."""

    def __init__(self, reason: str, *, retry: bool, advice: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.retry, self.advice, self.wait_s = reason, retry, advice, wait_s


_TIMEOUT_ADVICE = (
    "The server is slow or overloaded: raise `MLLMOptions.timeout`, lower "
    "`MLLMOptions.concurrency`, or show smaller images (`AskOptions.overview_size`)."
)
_URL_ADVICE = (
    "Check that `MLLMOptions.url` is the base URL of an OpenAI-compatible chat-completions "
    "API (it usually ends in /v1, e.g. http://localhost:8000/v1) and that the server behind "
    "it is healthy."
)
_NOT_OPENAI = "the endpoint did not answer like an OpenAI-compatible server"


class OpenAIChatMLLM:
    """An `MLLM` behind an OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        coords: str | None = "auto",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_concurrency: int = 4,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        image_format: str = "png",
        cache: ReplyCache | None = None,
    ) -> None:
        """A client of `model` at `base_url`.

        `max_side` is the longest side, in pixels, of the image sent (`MLLMOptions.max_side`):
        a smaller image goes at its native resolution, a larger one is shrunk, aspect kept;
        this is the only resize. `coords` is the coordinate frame the model is asked to
        answer in: "auto" (guessed from the model name, see `frames`), "pixel", "norm1000"
        or "norm1" (`MLLMOptions.coords`). `temperature=None` sends none (reasoning models
        such as GPT-5 accept only their default); `api_key` falls back to $OPENAI_API_KEY,
        then "EMPTY" for local servers."""
        try:
            from openai import OpenAI
        except ImportError:
            raise InputError(
                "Asking a multimodal LLM endpoint needs the openai package, which is not "
                "installed. Install it with `pip install 'terramask[mllm]'` (or "
                "`pip install openai`)."
            ) from None
        if not str(base_url).strip() or not str(model).strip():
            raise InputError(
                "A multimodal LLM endpoint needs both a base URL (e.g. http://localhost:8000/v1, "
                "`MLLMOptions.url`) and a model name (`MLLMOptions.model`); one of them is empty."
            )
        if int(max_side) < 28:
            raise InputError(
                f"max_side={max_side} for the multimodal LLM '{model}' is too small to show "
                "anything; use at least 28 (1024 is the default)."
            )
        if image_format not in IMAGE_FORMATS:
            raise InputError(
                f"The image format '{image_format}' for the multimodal LLM '{model}' is not "
                f"supported. Use one of: {', '.join(IMAGE_FORMATS)}."
            )
        if int(max_concurrency) < 1 or int(max_retries) < 0 or timeout_s <= 0:
            raise InputError(
                f"The multimodal LLM settings for '{model}' are out of range: "
                f"`MLLMOptions.concurrency` {max_concurrency} (at least 1), "
                f"`MLLMOptions.retries` {max_retries} (at least 0), `MLLMOptions.timeout` "
                f"{timeout_s} (positive seconds)."
            )
        self.base_url = str(base_url).rstrip("/")
        self.model = str(model)
        self.name = self.model
        self.max_side = int(max_side)
        self.frame = choose_frame(coords, guess=guess_frame(self.model), model=self.model)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_concurrency = int(max_concurrency)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.image_format = image_format
        self.cache = cache
        self._send_temperature = temperature is not None
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s,
                              max_retries=0)

    # ------------------------------------------------------------------ public

    @property
    def convention(self) -> str:
        """The frame under its former name (read-only)."""
        return self.frame

    def shown_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) the model will see an image of `image_size` (H, W) at: the image as
        sent, shrunk only if its long side exceeds `max_side`. Pixel coordinates in the
        reply refer to this size; the prompt should state it."""
        return fitted_size(image_size, self.max_side)

    def ask(self, image: np.ndarray, prompt: str, *, system: str | None = None) -> MLLMReply:
        """Show the image (shrunk to max_side) with the prompt; MLLMError after the retries.

        The reply carries the size the image was sent at and this client's frame."""
        check_prompt(prompt, self.model)
        shown = fit_long_side(as_rgb(image), self.max_side)

        def compute() -> MLLMReply:
            text = self._complete(self._messages(shown, prompt, system))
            return MLLMReply(text=text, shown_size=(int(shown.shape[0]), int(shown.shape[1])),
                             frame=self.frame, model=self.model)

        fields = dict(
            image_digest=image_digest(shown), prompt=prompt, system=system, model=self.model,
            temperature=self.temperature, max_side=self.max_side, frame=self.frame,
            extra=self.image_format,
        )
        return cached(self.cache, fields, compute)

    def ask_many(self, items: Sequence[AskItem]) -> list[MLLMReply | TerraMaskError]:
        """Ask several questions at once, at most `max_concurrency` in flight.

        Results come back in the order of `items`: an `MLLMReply`, or the error that item
        ended in (`MLLMError` for an endpoint or reply failure, `InputError` for an unusable
        image or prompt). One item's failure never stops the others.
        """
        return ask_each(self.ask, items, workers=self.max_concurrency)

    def __repr__(self) -> str:
        return (f"OpenAIChatMLLM({self.base_url!r}, {self.model!r}, "
                f"frame={self.frame!r}, max_side={self.max_side})")

    # ------------------------------------------------------------------ HTTP

    def _messages(self, shown: np.ndarray, prompt: str, system: str | None) -> list[dict]:
        url = data_url(encode_image(shown, self.image_format), self.image_format)
        messages: list[dict] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": prompt},
            ],
        })
        return messages

    def _complete(self, messages: list[dict]) -> str:
        attempts = self.max_retries + 1
        last: _Attempt | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._delay(attempt, last))
            try:
                with self._slots:
                    return self._once(messages)
            except _Attempt as failure:
                last = failure
                if not failure.retry:
                    break
        assert last is not None
        tries = attempt + 1
        raise MLLMError(
            f"The multimodal LLM endpoint {self.base_url} (model '{self.model}') failed after "
            f"{tries} attempt{'s' if tries > 1 else ''}: {last.reason}. {last.advice}"
        )

    def _delay(self, attempt: int, last: _Attempt | None) -> float:
        """The server's Retry-After when it sent one (at most `timeout_s`, see `_status_failure`),
        else exponential back-off with jitter (×0.5-1.5) so that parallel workers do not retry
        in lockstep."""
        if last is not None and last.wait_s is not None:
            return last.wait_s
        return self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())

    def _once(self, messages: list[dict]) -> str:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if self._send_temperature:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        started = time.monotonic()
        try:
            with self._client.chat.completions.with_streaming_response.create(
                **kwargs
            ) as response:
                body = self._read(response, started)
        except openai.APITimeoutError:
            raise self._timed_out() from None
        except openai.APIConnectionError as exc:
            raise _Attempt(
                f"could not connect ({_first_line(exc)})", retry=True,
                advice="Check that the server is running and that `MLLMOptions.url` is right "
                       "(it usually ends in /v1).",
            ) from None
        except openai.APIStatusError as exc:
            if self._refuses_temperature(exc):
                self._send_temperature = False
                return self._once(messages)
            raise self._status_failure(exc) from None
        except openai.OpenAIError as exc:
            raise _Attempt(f"{_NOT_OPENAI} ({type(exc).__name__}: {_first_line(exc)})",
                           retry=True, advice=_URL_ADVICE) from None
        return self._content(body)

    def _timed_out(self) -> _Attempt:
        return _Attempt(f"no answer within {self.timeout_s:g} s", retry=True,
                        advice=_TIMEOUT_ADVICE)

    def _read(self, response: Any, started: float) -> bytes:
        """The body, read piece by piece: at most `BODY_FACTOR` × `MAX_REPLY_BYTES` bytes, and
        only while the attempt is within `timeout_s` (see the module's docstring)."""
        limit = BODY_FACTOR * MAX_REPLY_BYTES
        too_large = _Attempt(
            f"a response body of more than {limit:,} bytes, larger than any reply within the "
            f"limit of {_size(MAX_REPLY_BYTES)} needs", retry=False, advice=_URL_ADVICE)
        declared = response.headers.get("content-length")
        if declared and declared.strip().isdigit() and int(declared) > limit:
            raise too_large
        pieces, size = [], 0
        try:
            for piece in response.iter_bytes():
                size += len(piece)
                if size > limit:
                    raise too_large
                if time.monotonic() - started > self.timeout_s:
                    raise self._timed_out()
                pieces.append(piece)
        except Exception as exc:
            if isinstance(exc, _Attempt) or not _is_transport_error(exc):
                raise
            if "timeout" in type(exc).__name__.lower():
                raise self._timed_out() from None
            raise _Attempt(f"{_NOT_OPENAI} (a response cut off before its end: "
                           f"{type(exc).__name__}: {_first_line(exc)})",
                           retry=True, advice=_URL_ADVICE) from None
        return b"".join(pieces)

    def _content(self, body: bytes) -> str:
        """The message text of a chat completion, or why the body is not one."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # a UnicodeDecodeError is a ValueError
            data = None
        choices = data.get("choices") if isinstance(data, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(choices, list) or (choices and not isinstance(message, dict)):
            raise _Attempt(f"{_NOT_OPENAI} ({_describe(body, data)})", retry=True,
                           advice=_URL_ADVICE)
        content = message.get("content") if message else None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(str(part.get("text", "")) if isinstance(part, dict) else str(part)
                              for part in content)
        if not isinstance(content, str) or not content.strip():
            raise _empty(choices, first, message)
        size = len(content.encode("utf-8", "replace"))
        if size > MAX_REPLY_BYTES:
            raise _Attempt(
                f"a reply of {size:,} bytes, larger than the limit of {_size(MAX_REPLY_BYTES)}",
                retry=False,
                advice="The model wrote far more than any answer needs (a runaway generation): "
                       "ask a narrower question, use another model (`MLLMOptions.model`), or "
                       "set an output-token limit on the server.",
            )
        return content

    def _refuses_temperature(self, exc: Any) -> bool:
        """A 400 about the temperature sent: the model accepts only its default."""
        return (self._send_temperature and getattr(exc, "status_code", 0) == 400
                and "temperature" in str(exc).lower())

    def _status_failure(self, exc: Any) -> _Attempt:
        status = int(getattr(exc, "status_code", 0) or 0)
        response = getattr(exc, "response", None)
        reason = f"HTTP {status} ({_first_line(exc)})"
        advice = _STATUS_ADVICE.get(status) or (
            "The server failed on its side: check its logs and load, or lower "
            "`MLLMOptions.concurrency`." if status >= 500 else
            "Check the request settings and the server's message.")
        wait_s = None
        if status in _RETRY_AFTER_STATUSES:
            wait_s = _retry_after(getattr(response, "headers", None))
            if wait_s is not None and wait_s > self.timeout_s:
                return _Attempt(
                    f"{reason}; the endpoint asked to wait {_seconds(wait_s)} s, longer than "
                    f"the `MLLMOptions.timeout` of {_seconds(self.timeout_s)} s", retry=False,
                    advice="Run again later (replies already received are cached), or raise "
                           "`MLLMOptions.timeout` to let TerraMask wait that long.",
                )
        return _Attempt(reason, retry=status in _RETRY_AFTER_STATUSES or status >= 500,
                        advice=advice, wait_s=wait_s)


def _empty(choices: list, first: Any, message: dict | None) -> _Attempt:
    """A well-formed completion without text: why, and what to do about it."""
    if not choices:
        return _Attempt("the reply had no choices", retry=False,
                        advice="Check that `MLLMOptions.model` accepts images (a vision model).")
    refusal = message.get("refusal") if message else None
    if refusal:
        return _Attempt(f"the reply had a refusal ({str(refusal)[:200]})", retry=False,
                        advice="Rephrase the question, or use another model "
                               "(`MLLMOptions.model`).")
    finish = first.get("finish_reason") if isinstance(first, dict) else None
    if finish == "length":
        return _Attempt(
            "the reply had an empty message (finish_reason 'length')", retry=False,
            advice="The model spent its whole output budget before answering (e.g. on "
                   "reasoning): use a model that answers without long reasoning (a "
                   "non-reasoning or instruct model), or raise the output-token limit on the "
                   "server.",
        )
    return _Attempt(
        "the reply had an empty message" + (f" (finish_reason {finish!r})" if finish else ""),
        retry=False, advice="Check that `MLLMOptions.model` accepts images (a vision model).")


def _describe(body: bytes, data: Any) -> str:
    """What came back instead of a chat completion, in a few words."""
    if not body.strip():
        return "an empty body"
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        detail = error.get("message", error) if isinstance(error, dict) else error
        return f"an error instead of a completion: {_snippet(str(detail))}"
    text = body[:400].decode("utf-8", "replace")
    if data is not None:
        return f"JSON without a completion's choices: {_snippet(text)}"
    if text.lstrip()[:1] == "<":
        return f"an HTML page: {_snippet(text)}"
    return f"a body that is not valid JSON (cut off?): {_snippet(text)}"


def _snippet(text: str) -> str:
    return repr(" ".join(text.split())[:120])


def _size(limit: int) -> str:
    """1,000,000 bytes (1 MB)."""
    return f"{limit:,} bytes ({limit / 1e6:g} MB)"


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def _is_transport_error(exc: BaseException) -> bool:
    """An error of the HTTP stack while reading a body (httpx, httpx2, httpcore, h11)."""
    package = type(exc).__module__.split(".")[0]
    return package in ("httpx", "httpx2", "httpcore", "h11", "anyio") or isinstance(exc, OSError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header: a number or an HTTP date."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_STATUS_ADVICE = {
    400: "The server refused the request: check that `MLLMOptions.model` accepts images (a "
         "vision model), or show smaller images (`AskOptions.overview_size`).",
    401: "Check the API key (`MLLMOptions.key` or $OPENAI_API_KEY).",
    403: "Check the API key (`MLLMOptions.key`) and that it may use this model.",
    404: "Check the model name (`MLLMOptions.model`) and `MLLMOptions.url` (it usually ends "
         "in /v1).",
    413: "The image is too large for the server: show smaller images "
         "(`AskOptions.overview_size`).",
    429: "The endpoint is rate-limiting: lower `MLLMOptions.concurrency`, or wait and run "
         "again (cached replies are kept).",
}
