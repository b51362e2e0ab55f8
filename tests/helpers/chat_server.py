"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests of MLLM routes.

    with ChatServer(['{"bbox": [1, 2, 3, 4], "prompt": "roof"}']) as server:
        mllm = OpenAIChatMLLM(server.url, "qwen2.5-vl")
        ...
        server.requests[0].image().shape   # what the client actually sent

`script` is a list of steps consumed one per request, in order: a reply text, or a `Step`
(a status with an optional Retry-After, a pause before answering, a null content, a
finish_reason, or a raw body sent as it is: empty, cut off, HTML, trickled). It may instead be
a callable that gets each `RecordedRequest` and returns a step. A request beyond the end of a
list gets HTTP 500 "script exhausted", so an unexpected extra call shows up.

`Grounder` is such a callable: a model that obeys the prompt's coordinate frame, answering
one object (given as fractions of the image) in pixels of the image sent, 0-1000 or 0-1,
whichever the prompt asks for, and recording what it read.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from terramask.models.mllm.images import decode_data_url


@dataclass(frozen=True)
class Step:
    """One scripted answer: HTTP `status`; `text` is the message content (None sends null);
    `finish_reason` goes with it; `retry_after` becomes a Retry-After header; `sleep_s`
    delays the answer.

    `raw` (bytes, or str sent as UTF-8) is sent as the whole body instead, with `status` and
    `content_type`; `content_length` overrides its Content-Length header (a larger one cuts
    the body off: the connection closes after `raw`); `trickle_s` sends `raw` one
    `trickle_bytes` piece at a time with that pause between pieces."""

    text: str | None = ""
    status: int = 200
    retry_after: float | str | None = None
    sleep_s: float = 0.0
    finish_reason: str = "stop"
    raw: bytes | str | None = None
    content_type: str = "application/json"
    content_length: int | None = None
    trickle_s: float = 0.0
    trickle_bytes: int = 1


@dataclass
class RecordedRequest:
    """A request the server received: its path, headers (names lower-cased) and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    def image_urls(self) -> list[str]:
        """Every image URL in the messages, in order."""
        urls = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "image_url":
                    urls.append(part["image_url"]["url"])
        return urls

    def image(self, index: int = 0) -> np.ndarray:
        """The (H, W, 3) image decoded from the index-th data URL."""
        return decode_data_url(self.image_urls()[index])

    def texts(self) -> list[str]:
        """Every text part (and plain-string content) in the messages, in order."""
        texts = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "text":
                    texts.append(part["text"])
        return texts


ScriptItem = str | Step
Script = Sequence[ScriptItem] | Callable[[RecordedRequest], ScriptItem]

_STATED_SIZE = re.compile(r"Image size: (\d+) x (\d+) pixels")


@dataclass
class Asked:
    """What a `Grounder` read from one request: the frame the prompt asked for, the size it
    stated (W, H; None when it stated none) and the size of the image sent (W, H)."""

    frame: str
    stated: tuple[int, int] | None
    sent: tuple[int, int]


class Grounder:
    """A script that answers like a model obeying the prompt's coordinate frame.

    `box` is the object as fractions of the image (x1, y1, x2, y2). The frame is read from
    the prompt's words: "0-1000" → norm1000, "0-1, not pixels" → norm1, else pixels of the
    image as sent (decoded from the request). The answer is `{"bbox": [...], "prompt":
    label}`, pixels and 0-1000 rounded to whole numbers as models write them, 0-1 to four
    decimals. Each request's reading is kept in `asked`.
    """

    def __init__(self, box: Sequence[float], *, label: str = "building") -> None:
        self.box = [float(v) for v in box]
        self.label = label
        self.asked: list[Asked] = []

    def __call__(self, request: RecordedRequest) -> str:
        prompt = " ".join(request.texts())
        height, width = request.image().shape[:2]
        stated = _STATED_SIZE.search(prompt)
        if "0-1000" in prompt:
            frame, scale, digits = "norm1000", (1000.0, 1000.0), 0
        elif "0-1, not pixels" in prompt:
            frame, scale, digits = "norm1", (1.0, 1.0), 4
        else:
            frame, scale, digits = "pixel", (float(width), float(height)), 0
        self.asked.append(Asked(frame, (int(stated[1]), int(stated[2])) if stated else None,
                                (int(width), int(height))))
        x1, y1, x2, y2 = self.box
        values = [x1 * scale[0], y1 * scale[1], x2 * scale[0], y2 * scale[1]]
        written = [round(v, digits) if digits else round(v) for v in values]
        return json.dumps({"bbox": written, "prompt": self.label})


class ChatServer:
    """A context manager serving `/v1/chat/completions` (and `/v1/models`) from a script."""

    def __init__(self, script: Script, *, model: str = "scripted") -> None:
        self._script = script if callable(script) else list(script)
        self._next = 0
        self._lock = threading.Lock()
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client: http://127.0.0.1:PORT/v1 (still readable
        after the server stopped, e.g. to test a refused connection)."""
        if not self._url:
            raise RuntimeError("the ChatServer has not started; use it as a context manager")
        return self._url

    def __enter__(self) -> ChatServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="terramask-chat-server")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def _step_for(self, request: RecordedRequest) -> Step:
        with self._lock:
            self.requests.append(request)
            if callable(self._script):
                item: ScriptItem | None = None
            elif self._next < len(self._script):
                item = self._script[self._next]
                self._next += 1
            else:
                return Step(text="script exhausted", status=500)
        if item is None:
            item = self._script(request)  # type: ignore[operator]
        return Step(text=item) if isinstance(item, str) else item

    def _completion(self, step: Step, request: RecordedRequest) -> dict[str, Any]:
        with self._lock:
            number = len(self.requests)
        text = step.text
        words = len(text.split()) if text else 0
        return {
            "id": f"chatcmpl-scripted-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model", self.model),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": step.finish_reason,
            }],
            "usage": {"prompt_tokens": 1, "completion_tokens": words,
                      "total_tokens": 1 + words},
        }


def _handler_for(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: tests read `server.requests` instead."""

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "owned_by": "terramask"}]})
            else:
                self._send(404, _error(404, f"no route {self.path}"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"unparsed": raw.decode("utf-8", "replace")}
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = RecordedRequest(self.path, headers, body)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, _error(404, f"no route {self.path}"))
                return
            step = server._step_for(request)
            if step.sleep_s:
                time.sleep(step.sleep_s)
            if step.raw is not None:
                self._send_raw(step)
            elif step.status != 200:
                headers = {}
                if step.retry_after is not None:
                    headers["Retry-After"] = str(step.retry_after)
                self._send(step.status, _error(step.status, step.text or "scripted failure"),
                           headers)
            else:
                self._send(200, server._completion(step, request))

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to tell it

        def _send_raw(self, step: Step) -> None:
            data = step.raw.encode("utf-8") if isinstance(step.raw, str) else bytes(step.raw)
            length = len(data) if step.content_length is None else step.content_length
            if length != len(data):
                self.close_connection = True  # a body cut off: the client sees the close
            try:
                self.send_response(step.status)
                self.send_header("Content-Type", step.content_type)
                self.send_header("Content-Length", str(length))
                if step.retry_after is not None:
                    self.send_header("Retry-After", str(step.retry_after))
                self.end_headers()
                if not step.trickle_s:
                    self.wfile.write(data)
                    return
                size = max(1, step.trickle_bytes)
                for start in range(0, len(data), size):
                    self.wfile.write(data[start:start + size])
                    self.wfile.flush()
                    time.sleep(step.trickle_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up; nothing to tell it

    return Handler


def _error(status: int, message: str) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else (
        "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": status}}
