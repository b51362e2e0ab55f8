"""Asks a multimodal LLM about an image through any OpenAI-compatible chat-completions endpoint.

Works with OpenAI itself (GPT-4o/GPT-5), vLLM, SGLang, Ollama and LM Studio serving Qwen-VL or
similar. Retries are done here rather than by the SDK so that they are visible and testable:
exponential back-off with jitter on timeouts, connection errors, 429 (honouring Retry-After)
and 5xx; any other 4xx fails at once, because asking again would not change the answer.

Coordinate conventions guessed from the model name (override with `convention=`):

================================  =========  ==============================================
model name contains               guess      why
================================  =========  ==============================================
qwen3-vl (any size, MoE too)      0-1000     Qwen3-VL grounds on a 0-1000 relative grid
qwen2.5-vl / qwen2_5_vl           pixels     Qwen2.5-VL writes absolute pixels of the
                                             image it was shown (after resizing)
qwen2-vl                          0-1000     Qwen2-VL's grounding grid
internvl                          0-1000     InternVL's grounding grid
anything else (gpt, claude, ...)  pixels     what the prompt asks for
================================  =========  ==============================================

The reply parser (`terramask.methods.replies`) also notices values that cannot be in the
declared convention and warns, so a wrong guess costs accuracy rather than silence.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from terramask.errors import InputError, MLLMError, TerraMaskError
from terramask.models.mllm.asking import AskItem, ask_each, check_prompt
from terramask.models.mllm.cache import ReplyCache, cached
from terramask.models.mllm.images import (
    IMAGE_FORMATS,
    as_rgb,
    data_url,
    encode_image,
    fit_long_side,
    image_digest,
)
from terramask.protocols import COORDINATE_CONVENTIONS, MLLMReply

_CONVENTION_BY_NAME = (
    (re.compile(r"qwen3[\w.\-]*vl"), "0-1000"),
    (re.compile(r"qwen2[.\-_]?5[\-_ ]?vl"), "pixels"),
    (re.compile(r"qwen2[\-_ ]?vl"), "0-1000"),
    (re.compile(r"internvl"), "0-1000"),
)

_MAX_RETRY_AFTER_S = 120.0


def guess_convention(model: str) -> str:
    """How a model writes coordinates, guessed from its name (see the module's table)."""
    name = model.lower().rsplit("/", 1)[-1]
    for pattern, convention in _CONVENTION_BY_NAME:
        if pattern.search(name):
            return convention
    return "pixels"


def check_convention(convention: str, *, model: str) -> str:
    """The convention, or an InputError listing the ones the parser understands."""
    if convention not in COORDINATE_CONVENTIONS:
        raise InputError(
            f"The coordinate convention '{convention}' given for the model '{model}' is not one "
            f"TerraMask can read. Use one of: {', '.join(COORDINATE_CONVENTIONS)} (or leave it "
            "out to guess from the model name)."
        )
    return convention


class _Attempt(Exception):
    """One failed HTTP attempt: whether to retry, how long the server asked us to wait."""

    def __init__(self, reason: str, *, retry: bool, advice: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.retry, self.advice, self.wait_s = reason, retry, advice, wait_s


class OpenAIChatMLLM:
    """An `MLLM` behind an OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_side: int = 1024,
        convention: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_concurrency: int = 4,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        image_format: str = "png",
        cache: ReplyCache | None = None,
    ) -> None:
        """`temperature=None` sends none (reasoning models such as GPT-5 accept only their
        default); `api_key` falls back to $OPENAI_API_KEY, then "EMPTY" for local servers."""
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
                f"The multimodal LLM settings for '{model}' are out of range (max_concurrency="
                f"{max_concurrency}, max_retries={max_retries}, timeout_s={timeout_s}). Use "
                "max_concurrency ≥ 1, max_retries ≥ 0 and a positive timeout."
            )
        self.base_url = str(base_url).rstrip("/")
        self.model = str(model)
        self.name = self.model
        self.max_side = int(max_side)
        self.convention = check_convention(convention or guess_convention(self.model),
                                           model=self.model)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_concurrency = int(max_concurrency)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.image_format = image_format
        self.cache = cache
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s,
                              max_retries=0)

    # ------------------------------------------------------------------ public

    def ask(self, image: np.ndarray, prompt: str, *, system: str | None = None) -> MLLMReply:
        """Show the image (shrunk to max_side) with the prompt; MLLMError after the retries."""
        check_prompt(prompt, self.model)
        shown = fit_long_side(as_rgb(image), self.max_side)

        def compute() -> MLLMReply:
            text = self._complete(self._messages(shown, prompt, system))
            return MLLMReply(text=text, shown_size=(int(shown.shape[0]), int(shown.shape[1])),
                             convention=self.convention, model=self.model)

        fields = dict(
            image_digest=image_digest(shown), prompt=prompt, system=system, model=self.model,
            temperature=self.temperature, max_side=self.max_side, convention=self.convention,
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
                f"convention={self.convention!r}, max_side={self.max_side})")

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
        """The server's Retry-After when it sent one (capped), else exponential back-off with
        jitter (×0.5-1.5) so that parallel workers do not retry in lockstep."""
        if last is not None and last.wait_s is not None:
            return min(last.wait_s, _MAX_RETRY_AFTER_S)
        return self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())

    def _once(self, messages: list[dict]) -> str:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        try:
            response = self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise _Attempt(
                f"no answer within {self.timeout_s:g} s", retry=True,
                advice="The server is slow or overloaded: raise the timeout (timeout_s), "
                       "lower max_concurrency, or send smaller images (max_side).",
            ) from None
        except openai.APIConnectionError as exc:
            raise _Attempt(
                f"could not connect ({_first_line(exc)})", retry=True,
                advice="Check that the server is running and that the URL is right (it "
                       "usually ends in /v1).",
            ) from None
        except openai.APIStatusError as exc:
            raise _status_failure(exc) from None
        except openai.OpenAIError as exc:
            raise _Attempt(
                f"an unreadable response ({type(exc).__name__}: {_first_line(exc)})",
                retry=False, advice="Check that the URL points at an OpenAI-compatible "
                                    "chat-completions API (it usually ends in /v1).",
            ) from None
        return self._content(response)

    def _content(self, response: Any) -> str:
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None)
        if isinstance(content, list):  # some servers return content parts
            content = "".join(str(part.get("text", "")) if isinstance(part, dict) else str(part)
                              for part in content)
        if not isinstance(content, str) or not content.strip():
            reason = "no choices" if not choices else "an empty message"
            refusal = getattr(message, "refusal", None)
            if refusal:
                reason = f"a refusal ({str(refusal)[:200]})"
            raise _Attempt(
                f"the reply had {reason}", retry=False,
                advice="Check that the model accepts images (a vision model), and raise "
                       "max_tokens if a reasoning model spent them all thinking.",
            )
        return content


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
    400: "The server refused the request: check that the model accepts images (a vision "
         "model) and the image size (max_side); if the message mentions temperature, pass "
         "temperature=None (reasoning models accept only their default).",
    401: "Check the API key (`MLLMOptions.key` or $OPENAI_API_KEY).",
    403: "Check the API key and that it may use this model.",
    404: "Check the model name and the base URL (it usually ends in /v1).",
    413: "The image is too large for the server: lower max_side.",
    429: "The endpoint is rate-limiting: lower max_concurrency, or wait and run again "
         "(cached replies are kept).",
}


def _status_failure(exc: Any) -> _Attempt:
    status = int(getattr(exc, "status_code", 0) or 0)
    response = getattr(exc, "response", None)
    message = _first_line(exc)
    reason = f"HTTP {status} ({message})"
    if status == 429:
        return _Attempt(reason, retry=True, advice=_STATUS_ADVICE[429],
                        wait_s=_retry_after(getattr(response, "headers", None)))
    if status >= 500:
        return _Attempt(reason, retry=True,
                        advice="The server failed on its side: check its logs and load.")
    advice = _STATUS_ADVICE.get(status, "Check the request settings and the server's message.")
    return _Attempt(reason, retry=False, advice=advice)
