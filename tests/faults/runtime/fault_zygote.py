"""A process that imports the heavy libraries once and forks one child per CLI run.

Protocol (JSON lines): it first writes ``{"hello": ..., "terramask": FILE}``; then for
each ``{"run": REQUEST}`` read on stdin it forks a child (`fault_child.run`), writes
``{"pid": PID}``, waits for the child and writes ``{"pid", "status", "exit", "signal",
"maxrss_kib"}``. ``{"quit": true}`` (or EOF) ends it. Children start in a few hundred
milliseconds instead of the seconds an interpreter takes to import torch and transformers,
and each is still a process of its own: it can be interrupted, killed, limited in memory
and time, and it cannot harm the test run.

Nothing here runs a model or a thread before forking (so the children start clean).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import warnings

PRELOAD = (
    "numpy", "scipy.ndimage", "PIL.Image", "rasterio", "rasterio.warp", "rasterio.features",
    "pyogrio", "shapely", "pyproj", "affine", "click", "rich.console", "rich.progress",
    "httpx", "openai", "psutil", "torch", "safetensors.torch", "transformers",
    "transformers.models.sam.modeling_sam", "transformers.models.clip.modeling_clip",
    "transformers.models.sam3.modeling_sam3",
    "terramask.cli", "terramask.api", "terramask.scene", "terramask.scene.raster",
    "terramask.pipeline", "terramask.models", "terramask.methods",
)


def _preload() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PRELOAD:
            # a module one version lacks is skipped: the child imports what it needs
            with contextlib.suppress(Exception):
                importlib.import_module(name)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness ends it, not a stray Ctrl-C
    out = os.fdopen(os.dup(1), "w", buffering=1)
    requests = os.fdopen(os.dup(0), "r")
    _preload()
    import fault_child

    import terramask

    def say(payload: dict) -> None:
        out.write(json.dumps(payload) + "\n")
        out.flush()

    say({"hello": os.getpid(), "terramask": terramask.__file__})
    for line in requests:
        message = json.loads(line)
        if message.get("quit"):
            break
        request = message["run"]
        pid = os.fork()
        if pid == 0:
            out.close()
            requests.close()
            fault_child.run(request)  # never returns
        say({"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        say({
            "pid": pid, "status": status,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "maxrss_kib": usage.ru_maxrss,
        })


if __name__ == "__main__":
    main()
