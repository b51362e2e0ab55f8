"""A scripted generator and judge for the data engine, for `ChatServer` (tests, benchmarks).

`DataScript` is a `ChatServer` script: it tells the data engine's requests apart by the
first words of the built-in prompts, answers each kind with a well-formed reply (keep;
an expression; a question with an explanation; cues; scores of 5) and counts the requests
per kind. `replies` overrides a kind: a fixed text or `Step`, or a callable of
(request, class name) returning one, so a test can refuse, reject or send garbage for
chosen classes.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping

from tests.helpers.chat_server import RecordedRequest, ScriptItem

#: Request kinds by the first words of the built-in prompts.
KINDS = {
    "You are checking candidate targets": "mask_check",
    "You write referring expressions": "referring",
    "You write reasoning questions": "attribute",
    "You help write relational questions": "cues",
    "You write relational reasoning questions": "contextual",
    "You evaluate a referring expression": "judge_referring",
    "You evaluate a reasoning question": "judge_reasoning",
}

#: Where each built-in prompt names the class, tried in this order (the first that matches).
_CLASS = tuple(re.compile(p) for p in (
    r'its label says it is a "([^"]+)"', r'category "([^"]+)"', r"The only ([\w -]+?) in it",
    r"The target, a ([\w -]+?), is", r"One ([\w -]+?) is outlined",
))  # fmt: skip


def request_kind(request: RecordedRequest) -> str:
    text = " ".join(request.texts())
    for start, kind in KINDS.items():
        if text.startswith(start):
            return kind
    return "unknown"


def request_class(request: RecordedRequest) -> str | None:
    """The class name the prompt names (None when it names none)."""
    text = " ".join(request.texts())
    for pattern in _CLASS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


Reply = ScriptItem | Callable[[RecordedRequest, str | None], ScriptItem]


class DataScript:
    """Answers the data engine's requests (module notes); `counts` per kind."""

    def __init__(self, replies: Mapping[str, Reply] | None = None, *, score: int = 5) -> None:
        self.replies = dict(replies or {})
        self.score = score
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> ScriptItem:
        kind = request_kind(request)
        name = request_class(request)
        with self._lock:
            self.counts[kind] += 1
        if kind in self.replies:
            reply = self.replies[kind]
            return reply(request, name) if callable(reply) else reply
        return self.default(kind, name)

    def default(self, kind: str, name: str | None) -> str:
        name = name or "object"
        if kind == "mask_check":
            return json.dumps({"keep": True, "reason": f"a clear, whole {name}"})
        if kind == "referring":
            return json.dumps({"expression": f"the {name} left of the road in the upper half"})
        if kind in ("attribute", "contextual"):
            return json.dumps({
                "question": f"Which area would someone use as a {name} here?",
                "explanation": f"It is the {name} that the question describes.",
            })
        if kind == "cues":
            return json.dumps({"cues": [f"the northern {name}", "it is the largest one"]})
        if kind == "judge_referring":
            dims = ("clarity", "grounding", "consistency", "uniqueness")
            return json.dumps({**dict.fromkeys(dims, self.score), "comment": "fine"})
        if kind == "judge_reasoning":
            dims = ("complexity", "soundness", "uniqueness", "mask_quality", "naturalness",
                    "conciseness")  # fmt: skip
            return json.dumps({**dict.fromkeys(dims, self.score), "comment": "fine"})
        return "I do not know this request."
