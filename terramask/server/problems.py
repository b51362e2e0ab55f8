"""Errors as RFC 9457 problem details (`application/problem+json`), with the CLI's messages.

Library messages name options by their Python names in backticks (`Tiling.tile`,
`RasterOptions.bands`); the server names them as the JSON fields of its requests instead,
which are the options' field names (`tile`, `bands`), so a `detail` reads as an answer to
the request that was sent: "`tile` must be at least 64 px, not 10."
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from terramask.errors import (
    InputError,
    MLLMError,
    ModelLoadError,
    ModelNotFoundError,
    OutputError,
    OutputExistsError,
    TerraMaskError,
)

MEDIA_TYPE = "application/problem+json"

#: Problem types: relative URI references (RFC 9457 §3.1.1), resolved against the server,
#: each named after what went wrong. OGC API – Processes defines its own for jobs.
TYPES = {
    "input": "/problems/input-error",
    "not-found": "/problems/not-found",
    "outside-root": "/problems/outside-root",
    "unauthorized": "/problems/unauthorized",
    "too-large": "/problems/request-too-large",
    "model": "/problems/model-unavailable",
    "mllm": "/problems/mllm-failed",
    "output": "/problems/output-error",
    "conflict": "/problems/conflict",
    "bug": "/problems/internal-error",
    "no-such-process": "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/no-such-process",
    "no-such-job": "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/no-such-job",
    "result-not-ready": (
        "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/result-not-ready"
    ),
}


class Problem(Exception):
    """An HTTP error the server answers with a problem+json body."""

    def __init__(
        self, status: int, detail: str, kind: str = "input", *, title: str | None = None,
        headers: dict[str, str] | None = None, **extra: Any,
    ) -> None:  # fmt: skip
        super().__init__(detail)
        self.status = int(status)
        self.detail = detail
        self.type = TYPES.get(kind, kind)
        self.title = title or HTTPStatus(self.status).phrase
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type, "title": self.title, "status": self.status, "detail": self.detail,
        }  # fmt: skip
        if instance:
            body["instance"] = instance
        return {**body, **self.extra}


_PYTHON_NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


def for_api(message: str) -> str:
    """A library message with each `Class.field` option name shortened to its JSON field."""

    def field_name(match: re.Match) -> str:
        name = match[1]
        head, _, tail = name.rpartition(".")
        if head and head[:1].isupper():
            return f"`{tail}`"
        return match[0]

    return _PYTHON_NAME.sub(field_name, message)


def from_error(exc: TerraMaskError, secrets: tuple[str, ...] = ()) -> Problem:
    """The problem a library error answers with: its message (option names as JSON fields),
    the status its kind calls for, and never a secret (an MLLM key) in the text."""
    detail = scrub(for_api(str(exc)), secrets)
    name = type(exc).__name__
    if isinstance(exc, OutputExistsError):
        return Problem(409, detail, "conflict", error=name)
    if isinstance(exc, ModelNotFoundError | ModelLoadError):
        return Problem(503, detail, "model", error=name)
    if isinstance(exc, MLLMError):
        return Problem(502, detail, "mllm", error=name)
    if isinstance(exc, OutputError):
        return Problem(507, detail, "output", error=name)
    if isinstance(exc, InputError):
        return Problem(422, detail, "input", error=name)
    return Problem(400, detail, "input", error=name)


def bug(exc: BaseException, secrets: tuple[str, ...] = ()) -> Problem:
    """An unexpected failure, worded as the CLI words it (without the traceback)."""
    detail = scrub(
        f"unexpected error ({type(exc).__name__}: {exc}). This is a bug in TerraMask, not in "
        "your request; the server's log holds the traceback.",
        secrets,
    )
    return Problem(500, detail, "bug", error=type(exc).__name__)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret (longer than 3 characters) replaced by ***."""
    for secret in secrets:
        if secret and len(secret) > 3:
            text = text.replace(secret, "***")
    return text


def validation_detail(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """Pydantic's errors as one sentence naming the JSON fields, and one entry per field."""
    items = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        where = ""
        for part in loc:
            where += f"[{part}]" if part.isdigit() else (f".{part}" if where else part)
        message = str(error.get("msg", "is not valid"))
        items.append({"field": where or "body", "message": message})
    if not items:
        return "The request is not valid.", items
    first = items[0]
    detail = f"`{first['field']}`: {first['message']}."
    if len(items) > 1:
        detail += f" ({len(items) - 1} more problem{'s' if len(items) > 2 else ''} in `errors`.)"
    return detail, items
