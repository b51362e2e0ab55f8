"""Image embeddings of the tiles under clicks, computed once and kept: in memory (least
recently used dropped) and on disk, keyed by the tile's content and the model.

A click looks up its tile in memory by the scene file (path, size, modification time), the
window, the bands and stretch, and the model: a hit runs only SAM's decoder. On a miss the
window is read and its stretched pixels hashed; the disk cache is keyed by that hash and the
model (its files' names, sizes and times), so it answers for the same pixels whatever file
they come from, survives restarts, and never answers for a changed file. Concurrent clicks
on one tile wait for a single encoding.

Models are shared by clicks and jobs through `Locked`, which runs one call of a model at a
time (the SAM adapter keeps an unlocked cache of its own).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terramask.protocols import ImageEmbedding
from terramask.stamps import folder_stamps


class Locked:
    """A model whose methods run one call at a time; attributes are the model's own."""

    def __init__(self, model: Any) -> None:
        self.__dict__["_model"] = model
        self.__dict__["_lock"] = threading.RLock()

    @property
    def wrapped(self) -> Any:
        return self._model

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if not callable(value) or isinstance(value, type):
            return value
        lock = self._lock

        @functools.wraps(value)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return locked

    def __repr__(self) -> str:
        return f"Locked({self._model!r})"


def unwrap(model: Any) -> Any:
    return model.wrapped if isinstance(model, Locked) else model


def model_key(model: Any) -> str:
    """What identifies a model's weights: its class, name, family and files (name, size,
    modification time), hashed."""
    inner = unwrap(model)
    parts = [type(inner).__module__, type(inner).__qualname__, str(getattr(inner, "name", ""))]
    resolved = getattr(inner, "resolved", None)
    if resolved is not None:
        folder = Path(resolved.path)
        parts += [str(resolved.family), str(folder.resolve())]
        if folder.is_dir():
            parts += folder_stamps(folder)
    else:
        parts.append(str(id(inner)))  # a model object without files: this process only
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _persistence(model: Any) -> tuple[Callable, Callable] | None:
    """(to arrays, from arrays) for models whose embeddings can be saved: SAM's adapter."""
    from terramask.models import sam

    inner = unwrap(model)
    if not isinstance(inner, sam.SamSegmenter):
        return None
    return sam.embedding_arrays, functools.partial(sam.embedding_from_arrays, inner)


@dataclass(frozen=True)
class Embedded:
    """A tile's embedding and its valid pixels, and where it came from this time."""

    embedding: ImageEmbedding
    valid: np.ndarray
    source: str  # "memory", "disk" or "computed"


def default_folder() -> Path:
    """`$TERRAMASK_CACHE/embeddings` when set, else `~/.cache/terramask/embeddings`."""
    root = os.environ.get("TERRAMASK_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "terramask"
    return base / "embeddings"


class EmbeddingCache:
    """Tile embeddings of one segmenter: `memory` entries in RAM, up to `max_bytes` on disk
    in `folder` (None: memory only)."""

    def __init__(
        self,
        segmenter: Any,
        *,
        memory: int = 32,
        folder: str | os.PathLike | None = None,
        max_bytes: int = 4096 * 2**20,
    ) -> None:
        self.segmenter = segmenter
        self.model = model_key(segmenter)
        self.memory = max(1, int(memory))
        self.max_bytes = int(max_bytes)
        self.persist = _persistence(segmenter) if folder is not None and max_bytes > 0 else None
        self.folder = Path(folder) if self.persist is not None else None
        self.stats: Counter[str] = Counter()
        self._entries: OrderedDict[Hashable, Embedded] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Lock] = {}
        self._disk_bytes: int | None = None

    def get(self, key: Hashable, read: Callable[[], Any]) -> Embedded:
        """The embedding of the tile `key` names; `read()` gives its `SceneWindow` on a miss."""
        full_key = (self.model, key)
        with self._lock:
            hit = self._entries.get(full_key)
            if hit is not None:
                self._entries.move_to_end(full_key)
                self.stats["memory"] += 1
                return Embedded(hit.embedding, hit.valid, "memory")
            pending = self._pending.setdefault(full_key, threading.Lock())
        with pending:
            with self._lock:
                hit = self._entries.get(full_key)
            if hit is not None:
                self.stats["memory"] += 1
                return Embedded(hit.embedding, hit.valid, "memory")
            window = read()
            found = self._from_disk_or_model(window.image)
            entry = Embedded(found[0], window.valid, found[1])
            with self._lock:
                self._entries[full_key] = entry
                while len(self._entries) > self.memory:
                    self._entries.popitem(last=False)
                self._pending.pop(full_key, None)
                self.stats[entry.source] += 1
            return entry

    def _from_disk_or_model(self, image: np.ndarray) -> tuple[ImageEmbedding, str]:
        from terramask.models.sam import image_key

        content = image_key(image)
        path = self._path(content)
        if path is not None and path.exists():
            try:
                with np.load(path) as data:
                    arrays = {name: data[name] for name in data.files}
                os.utime(path)  # recently used: kept longest
                return self.persist[1](arrays, key=content), "disk"  # type: ignore[index]
            except Exception:  # a torn or foreign file: compute again and replace it
                path.unlink(missing_ok=True)
        embedding = self.segmenter.embed(image)
        if path is not None:
            self._save(path, self.persist[0](embedding))  # type: ignore[index]
        return embedding, "computed"

    def _path(self, content: str) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256(f"{self.model}:{content}".encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npz"

    def _save(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.npz")
            with open(partial, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(partial, path)
            self._trim(path.stat().st_size)
        except OSError:
            pass  # a full or read-only disk only costs a later click its encoding

    def _trim(self, added: int) -> None:
        """Drop the least recently used files once the folder outgrows `max_bytes`."""
        with self._lock:
            if self._disk_bytes is None:
                self._disk_bytes = sum(f.stat().st_size for f in self._files())
            else:
                self._disk_bytes += added
            if self._disk_bytes <= self.max_bytes:
                return
            files = sorted(self._files(), key=lambda f: f.stat().st_mtime_ns)
            total = sum(f.stat().st_size for f in files)
            for old in files:
                if total <= self.max_bytes * 0.9:
                    break
                size = old.stat().st_size
                old.unlink(missing_ok=True)
                total -= size
            self._disk_bytes = total

    def _files(self) -> list[Path]:
        assert self.folder is not None
        return [p for p in self.folder.glob("*/*.npz") if not p.name.startswith(".")]

    def clear_memory(self) -> None:
        with self._lock:
            self._entries.clear()


def timed(func: Callable[[], Any]) -> tuple[Any, float]:
    """func()'s value and how long it took, in milliseconds."""
    started = time.perf_counter()
    value = func()
    return value, (time.perf_counter() - started) * 1000
