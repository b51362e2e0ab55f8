"""Remembers multimodal LLM replies on disk so that a rerun or a resumed job pays nothing.

One JSON file per reply, named by a sha256 over everything that can change the answer (the
pixels, prompt, system prompt, model, temperature, resize and coordinate frame). Files
are written under a temporary name and renamed, so concurrent writers and crashes never
leave a half-written entry; an unreadable entry is treated as a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from terramask.atomic import write_atomic
from terramask.errors import OutputError
from terramask.options import COORDINATE_FRAMES
from terramask.protocols import MLLMReply, frame_name


def default_cache_folder() -> Path:
    """`$TERRAMASK_CACHE/mllm` when set, else `~/.cache/terramask/mllm`."""
    root = os.environ.get("TERRAMASK_CACHE")
    if root:
        return Path(root).expanduser() / "mllm"
    return Path.home() / ".cache" / "terramask" / "mllm"


class ReplyCache:
    """A folder of cached replies, safe to share between threads and processes."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_folder()

    @staticmethod
    def key(
        *,
        image_digest: str,
        prompt: str,
        system: str | None,
        model: str,
        temperature: float | None,
        max_side: int,
        frame: str,
        extra: str = "",
    ) -> str:
        """The sha256 naming one request; `frame` is the coordinate frame the model was asked
        to answer in, `extra` carries client-specific settings."""
        fields = [image_digest, prompt, system, model, temperature, max_side, frame, extra]
        return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> MLLMReply | None:
        """The stored reply marked `cached=True`, or None on a miss, an unreadable entry or
        one in a coordinate frame TerraMask no longer reads."""
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
            frame = frame_name(str(data["frame"] if "frame" in data else data["convention"]))
            if frame not in COORDINATE_FRAMES:
                return None
            return MLLMReply(
                text=str(data["text"]),
                shown_size=(int(data["shown_size"][0]), int(data["shown_size"][1])),
                frame=frame,
                model=str(data["model"]),
                cached=True,
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def put(self, key: str, reply: MLLMReply) -> None:
        """Store a reply atomically (temporary file, then rename)."""
        path = self._path(key)
        record = dataclasses.asdict(reply)
        record.pop("cached", None)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(record))
        except OSError as exc:
            raise OutputError(
                f"The multimodal LLM reply cache at {self.folder} cannot be written ({exc}). "
                "Point TERRAMASK_CACHE at a writable folder, or run without a reply cache."
            ) from None

    def __repr__(self) -> str:
        return f"ReplyCache({str(self.folder)!r})"


def cached(
    cache: ReplyCache | None, fields: dict[str, Any], compute: Callable[[], MLLMReply]
) -> MLLMReply:
    """`compute()`'s reply, or the stored one for the same `fields` (see `ReplyCache.key`)."""
    if cache is None:
        return compute()
    key = ReplyCache.key(**fields)
    hit = cache.get(key)
    if hit is not None:
        return hit
    reply = compute()
    cache.put(key, reply)
    return reply
