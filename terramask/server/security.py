"""Who may call the server and how much they may send: the bearer token, body size limits,
and the headers every answer carries.

Loopback is the default; any other address needs a token (`ServerOptions`). The token is
compared in constant time (`hmac.compare_digest`). The page, its script and the OpenAPI
documents are public (they hold no data); every API route needs the token when one is set.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from terramask.server.problems import MEDIA_TYPE, Problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Paths anyone may fetch: the page and its files, and the API's description.
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/", "/index.html", "/docs", "/docs/oauth2-redirect", "/openapi.json",
                "/favicon.ico", "/health")  # fmt: skip


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token (constant time)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class Guard:
    """ASGI middleware: the token on API routes, and the request size limit on every body.

    A body is refused with 413 from its Content-Length before it is read, and while it is
    streamed when it has none (chunked), so no handler ever sees more than the limit.
    """

    def __init__(self, app: Any, *, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if (
            self.token
            and not public
            and scope.get("method") != "OPTIONS"
            and not token_matches(headers.get("authorization"), self.token)
        ):
            await _send_problem(send, scope, Problem(
                401,
                "This server needs a bearer token: send the header `Authorization: Bearer "
                "TOKEN` with the token the server was started with (`--token`).",
                "unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="terramask"'},
            ))  # fmt: skip
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_problem(send, scope, _too_large(self.max_body))
            return
        await self.app(scope, _limited(receive, self.max_body), _with_headers(send))


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        f"The request body is larger than this server accepts ({limit:,} bytes; "
        "`--max-request-size`). Send fewer prompts or classes per request.",
        "too-large",
    )


class _TooLarge(HTTPException):
    """A streamed body that passed the limit: FastAPI lets HTTP exceptions through its body
    parsing, and the app answers them as problems (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit).detail)


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a streamed body once it passes `limit` bytes."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge(limit)
        return message

    return wrapped


#: Headers on every answer: no MIME sniffing, no framing by other sites, no referrer leaks.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def _with_headers(send: Send) -> Send:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _send_problem(send: Send, scope: Scope, problem: Problem) -> None:
    body = json.dumps(problem.body(scope.get("path"))).encode()
    headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in problem.headers.items()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LimitErrors:
    """ASGI middleware (outermost): a body that outgrew the limit while streaming is
    answered with 413 problem+json, when no answer has started yet."""

    def __init__(self, app: Any, *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except _TooLarge:
            if not started:
                await _send_problem(send, scope, _too_large(self.max_body))
