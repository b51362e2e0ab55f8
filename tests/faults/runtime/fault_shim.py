"""Faults injected into one CLI run, from inside its process: installed by `fault_child`
before the CLI starts. It patches only the standard library (and nothing of terramask), so
the same fault means the same thing for any version of the code under test.

A spec is a dict:

- ``replace``: ``{"match": REGEX, "nth": N, "when": "before"|"after", "action": A}`` — on the
  N-th `os.replace`/`os.rename` whose destination matches REGEX (every one when N is 0), do
  A: ``sigint`` (Ctrl-C at that moment), ``sigkill`` (the process dies there),
  ``enospc``/``eacces`` (the call fails as on a full disk or a read-only folder). ``slow_s``
  sleeps after every match, so that an outside observer can catch the run in the middle.
- ``open_fail``: ``{"match": REGEX, "errno": "ENOSPC"}`` — opening a matching path for
  writing fails (Python-level writes: reports, JSON, the write probe).
- ``readonly``: folders — writes there fail with EACCES (only where a read-only folder
  cannot be made real: see `fault_child.drop_dac_override`).
- ``fsize``: bytes — no file may grow beyond this (RLIMIT_FSIZE, SIGXFSZ ignored): every
  writer, GDAL and SQLite included, meets a real write error part-way, as on a full disk.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import resource
import signal
import time
from typing import Any


def install(spec: dict[str, Any] | None) -> None:
    if not spec:
        return
    if spec.get("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(spec["fsize"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if spec.get("replace"):
        _patch_replace(spec["replace"])
    if spec.get("open_fail"):
        _patch_open(spec["open_fail"])
    if spec.get("readonly"):  # a read-only folder where permissions cannot be relied on
        pattern = "^(" + "|".join(re.escape(os.path.abspath(p)) for p in spec["readonly"]) + ")/"
        _patch_open({"match": pattern, "errno": "EACCES"})
        _patch_replace({"match": pattern, "nth": 0, "when": "before", "action": "eacces"})


def _act(action: str, path: str) -> None:
    if action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the KeyboardInterrupt is raised here, as a real Ctrl-C would
    elif action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(5)
    elif action in ("enospc", "eacces"):
        code = errno.ENOSPC if action == "enospc" else errno.EACCES
        raise OSError(code, os.strerror(code), path)
    else:
        raise ValueError(f"unknown fault action {action!r}")


def _patch_replace(rule: dict[str, Any]) -> None:
    pattern = re.compile(rule["match"])
    nth = int(rule.get("nth", 1))
    when = rule.get("when", "after")
    action = rule.get("action")
    slow = float(rule.get("slow_s", 0.0))
    seen = [0]
    originals = {"replace": os.replace, "rename": os.rename}

    def wrap(name: str):
        original = originals[name]

        def patched(src, dst, *args, **kwargs):
            target = os.fsdecode(dst)
            if not pattern.search(target):
                return original(src, dst, *args, **kwargs)
            seen[0] += 1
            hit = action and (nth == 0 or seen[0] == nth)
            if hit and when == "before":
                _act(action, target)
            result = original(src, dst, *args, **kwargs)
            if slow:
                time.sleep(slow)
            if hit and when == "after":
                _act(action, target)
            return result

        return patched

    os.replace = wrap("replace")
    os.rename = wrap("rename")


_WRITE_MODES = set("wax+")


def _patch_open(rule: dict[str, Any]) -> None:
    pattern = re.compile(rule["match"])
    code = getattr(errno, rule.get("errno", "ENOSPC"))
    original_open = io.open
    original_os_open = os.open

    def patched_open(file, mode="r", *args, **kwargs):
        if (isinstance(file, (str, bytes, os.PathLike)) and _WRITE_MODES & set(mode)
                and pattern.search(os.fsdecode(file))):
            raise OSError(code, os.strerror(code), os.fsdecode(file))
        return original_open(file, mode, *args, **kwargs)

    def patched_os_open(path, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writing and pattern.search(os.fsdecode(path)):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return original_os_open(path, flags, *args, **kwargs)

    builtins.open = patched_open
    io.open = patched_open
    os.open = patched_os_open
