"""One `terramask` command line, run as the real CLI in a process of its own.

`run(request)` never returns: it sets the process up (group, signals, working folder, the
environment, stdout/stderr files, a memory limit, optionally an unprivileged user), installs
the faults of `fault_shim`, calls `terramask.cli.main()` with the arguments, and exits with
the CLI's exit code. It is entered in a child forked by `fault_zygote` (fast: the libraries
are already imported) or as ``python -P -m fault_child REQUEST.json`` (a fresh interpreter).

It imports nothing from the test suite, so it can run any version of terramask.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import traceback
from typing import Any

_CAP_VERSION_3 = 0x20080522
_DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def drop_dac_override() -> bool:
    """Give up the capabilities that let root write where permissions say no, so that a
    folder made read-only with chmod is read-only for this process even when it runs as
    root (as in CI containers). True when permissions now apply; False if they could not
    be dropped (then the shim makes writes there fail instead)."""
    if os.geteuid() != 0:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        header = Header(_CAP_VERSION_3, 0)
        data = (Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            return False
        mask = ~sum(1 << cap for cap in _DAC_CAPABILITIES) & 0xFFFFFFFF
        data[0].effective &= mask
        data[0].permitted &= mask
        data[0].inheritable &= mask
        return libc.capset(ctypes.byref(header), data) == 0
    except Exception:
        return False


def run(request: dict[str, Any]) -> None:
    code = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        _redirect(request["stdout"], request["stderr"])
        memory = request.get("memory_bytes")
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        import fault_shim

        faults = dict(request.get("faults") or {})
        if request.get("without_dac_override") and not drop_dac_override():
            faults["readonly"] = request.get("readonly_dirs", [])  # fall back to injection
        fault_shim.install(faults)
        code = _cli(request["args"])
    except BaseException:  # the harness itself failed: say so, never pass silently
        traceback.print_exc()
        code = 97
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _redirect(stdout: str, stderr: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.dup2(handle, fd)
        os.close(handle)
    # the process's own streams from now on, closed when it exits
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115


def _cli(args: list[str]) -> int:
    """The console script's entry point, as `terramask ARGS...` runs it."""
    sys.argv = ["terramask", *args]
    try:
        from terramask.cli import main

        main()
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:  # what Python does with an uncaught exception
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        run(json.load(handle))
