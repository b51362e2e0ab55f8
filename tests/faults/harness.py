"""Run the real `terramask` CLI in processes of its own and judge what each run left behind.

`Launcher` starts a zygote (`runtime/fault_zygote.py`) with the code under test on its path —
this checkout, or another tree named by ``TERRAMASK_FAULTS_TREE`` (how the corpus measures
an older commit) — and forks one child per command line. Every run has a time limit and a
memory limit, so a hang or a runaway allocation is a finding, not a stalled suite.

A case (see `cases.py`) drives one or more runs through a `CaseContext`, which records, for
each run and each output folder, anything of the three kinds the corpus counts:

- unexpected error: exit code 1, "unexpected error" or a traceback in the output, or a crash
  (a signal nobody sent);
- mixed or blocking output set: part of a set of outputs, temporary files or a staging folder
  left after the process ended, or a re-run refused or failing because of what a run left;
- hang or OOM: the time limit passed, or memory ran out;

and a fourth, "wrong outcome", for a run that did none of these but not what the case
expects either (a refusal that does not name the problem, outputs that are not there...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME = Path(__file__).resolve().parent / "runtime"

#: Seconds one command may take (generous: a case takes about one second).
RUN_TIMEOUT = 60.0
#: Address space of one command (RLIMIT_AS): an OOM is a failed run, not a frozen machine.
MEMORY_BYTES = 6 * 1024**3

PASSED = "passed"
UNEXPECTED = "unexpected error"
MIXED = "mixed or blocking output set"
HANG = "hang or OOM"
WRONG = "wrong outcome"
NOT_APPLICABLE = "not applicable"
#: Worst first: a case is counted under the worst kind it showed.
SEVERITY = (HANG, UNEXPECTED, MIXED, WRONG)
CATEGORIES = (PASSED, UNEXPECTED, MIXED, HANG, WRONG, NOT_APPLICABLE)


def target_tree() -> Path:
    """The terramask tree under test: $TERRAMASK_FAULTS_TREE, else this checkout."""
    return Path(os.environ.get("TERRAMASK_FAULTS_TREE") or REPO_ROOT).resolve()


class HarnessError(RuntimeError):
    """The harness itself failed (not the code under test)."""


class NotApplicable(Exception):
    """The case cannot apply to the code under test (e.g. a flag it does not have)."""


# ---------------------------------------------------------------- runs


@dataclass
class Run:
    """One command line and how it ended."""

    label: str
    args: list[str]
    exit: int | None
    signal: int | None
    stdout: str
    stderr: str
    seconds: float
    timeout: float
    timed_out: bool = False
    sent_signal: int | None = None
    maxrss_kib: int = 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def message(self) -> str:
        """The error paragraph ("error: …", click's "Error: …"), else the output's last lines."""
        for line in self.stderr.splitlines():
            if re.match(r"^(error|Error|interrupted|failed)\b", line.strip()):
                return line.strip()
        text = self.output.strip()
        return text[-600:] if text else "(no output)"

    def json(self) -> Any:
        """The --json result on stdout, or None."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None

    def describe(self) -> str:
        how = f"exit {self.exit}" if self.exit is not None else f"signal {self.signal}"
        if self.timed_out:
            how = f"killed after {self.timeout:g} s"
        memory = f", peak {self.maxrss_kib // 1024} MiB" if self.maxrss_kib else ""
        return f"{self.label} ({how}, {self.seconds:.1f} s{memory}): {_clip(self.message())}"


def _clip(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Launcher:
    """Forks CLI runs from a zygote that has the libraries and the tree under test loaded.

    ``TERRAMASK_FAULTS_SPAWN=1`` starts a fresh interpreter per run instead (slower, for
    checking that forking changes nothing)."""

    def __init__(self, tree: Path | None = None, scratch: Path | None = None) -> None:
        self.tree = Path(tree or target_tree()).resolve()
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="terramask-faults-"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.spawn = os.environ.get("TERRAMASK_FAULTS_SPAWN") == "1"
        self.terramask_file: str | None = None
        self._zygote: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._count = 0
        self._help: dict[str, str] = {}
        self.shared: dict[str, Any] = {}  # results cases share (reference runs)

    # ---- environment

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "COV_", "PYTHON"))}  # fmt: skip
        env.update(
            PYTHONPATH=os.pathsep.join([str(RUNTIME), str(self.tree)]),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONHASHSEED="0",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HOME=str(self.scratch / "hf"),
            TERRAMASK_CACHE=str(self.scratch / "cache"),
            OMP_NUM_THREADS=os.environ.get("TERRAMASK_FAULTS_THREADS", "1"),
            MKL_NUM_THREADS=os.environ.get("TERRAMASK_FAULTS_THREADS", "1"),
            NO_COLOR="1",
            TERM="dumb",
            COLUMNS="200",
        )
        env.pop("RAY_ADDRESS", None)
        return env

    # ---- the zygote

    def start(self) -> None:
        if self.spawn:
            self.terramask_file = self._probe_spawn()
        elif self._zygote is None or self._zygote.poll() is not None:
            log = open(self.scratch / "zygote.log", "ab")  # noqa: SIM115 - kept by Popen
            self._zygote = subprocess.Popen(
                [sys.executable, "-P", "-m", "fault_zygote"], cwd=self.scratch, env=self.env(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True,
            )  # fmt: skip
            log.close()
            self._buffer = b""
            hello = self._read(time.monotonic() + 300)
            if hello is None or "terramask" not in hello:
                raise HarnessError(f"the zygote did not start; see {self.scratch / 'zygote.log'}")
            self.terramask_file = hello["terramask"]
        file = Path(self.terramask_file or "").resolve()
        if self.tree not in file.parents:
            raise HarnessError(f"the runs import {file}, not the tree under test {self.tree}")

    def _probe_spawn(self) -> str:
        done = subprocess.run(
            [sys.executable, "-P", "-c", "import terramask; print(terramask.__file__)"],
            cwd=self.scratch, env=self.env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done.stdout.strip()

    def close(self) -> None:
        if self._zygote is not None and self._zygote.poll() is None:
            with contextlib.suppress(OSError):
                self._zygote.stdin.write(b'{"quit": true}\n')
                self._zygote.stdin.flush()
            try:
                self._zygote.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
        self._zygote = None

    def _send(self, payload: dict) -> None:
        assert self._zygote is not None and self._zygote.stdin is not None
        self._zygote.stdin.write((json.dumps(payload) + "\n").encode())
        self._zygote.stdin.flush()

    def _read(self, deadline: float) -> dict | None:
        """The zygote's next message, or None when the deadline passes first."""
        assert self._zygote is not None and self._zygote.stdout is not None
        fd = self._zygote.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 0.02))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise HarnessError(
                        f"the zygote ended; see {self.scratch / 'zygote.log'}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    # ---- one run

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        label: str = "run",
        env: dict[str, str] | None = None,
        faults: dict | None = None,
        timeout: float = RUN_TIMEOUT,
        memory_bytes: int | None = MEMORY_BYTES,
        readonly_dirs: Sequence[Path] = (),
        watch: Callable[[float], int | None] | None = None,
    ) -> Run:
        """Run `terramask ARGS` in `cwd`; `watch(seconds)` is polled while it runs and may
        return a signal to send it (once)."""
        with self._lock:
            self.start()
            self._count += 1
            logs = cwd / f".run{self._count}"
            request = {
                "args": [str(a) for a in args], "cwd": str(cwd), "env": env or {},
                "stdout": f"{logs}.out", "stderr": f"{logs}.err", "faults": faults or {},
                "memory_bytes": memory_bytes,
                "without_dac_override": bool(readonly_dirs),
                "readonly_dirs": [str(d) for d in readonly_dirs],
            }  # fmt: skip
            started = time.monotonic()
            if self.spawn:
                status = self._run_spawned(request, started, timeout, watch)
            else:
                status = self._run_forked(request, started, timeout, watch)
            seconds = time.monotonic() - started
            out = Path(f"{logs}.out").read_text(errors="replace")
            err = Path(f"{logs}.err").read_text(errors="replace")
            Path(f"{logs}.out").unlink(missing_ok=True)
            Path(f"{logs}.err").unlink(missing_ok=True)
        if status.get("exit") == 97:
            raise HarnessError(f"the child could not run the CLI:\n{err[-3000:]}")
        return Run(
            label=label, args=list(request["args"]), exit=status.get("exit"),
            signal=status.get("signal"), stdout=out, stderr=err, seconds=seconds,
            timeout=timeout, timed_out=status.get("timed_out", False),
            sent_signal=status.get("sent_signal"), maxrss_kib=status.get("maxrss_kib") or 0,
        )  # fmt: skip

    def _run_forked(self, request: dict, started: float, timeout: float,
                    watch: Callable[[float], int | None] | None) -> dict:  # fmt: skip
        self._send({"run": request})
        hello = self._read(started + 60)
        if hello is None or "pid" not in hello:
            raise HarnessError("the zygote did not fork a run")
        pid = hello["pid"]
        sent: int | None = None
        timed_out = False
        while True:
            status = self._read(time.monotonic() + 0.02)
            if status is not None:
                break
            elapsed = time.monotonic() - started
            if elapsed > timeout and not timed_out:
                timed_out = True
                _kill(pid, signal.SIGKILL, group=True)
            elif watch is not None and sent is None and not timed_out:
                wanted = watch(elapsed)
                if wanted:
                    sent = wanted
                    _kill(pid, wanted)
        status.update(timed_out=timed_out, sent_signal=sent)
        return status

    def _run_spawned(self, request: dict, started: float, timeout: float,
                     watch: Callable[[float], int | None] | None) -> dict:  # fmt: skip
        path = Path(request["stdout"]).with_suffix(".json")
        path.write_text(json.dumps(request))
        process = subprocess.Popen([sys.executable, "-P", "-m", "fault_child", str(path)],
                                   cwd=request["cwd"], env=self.env())  # fmt: skip
        sent: int | None = None
        timed_out = False
        while process.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > timeout and not timed_out:
                timed_out = True
                _kill(process.pid, signal.SIGKILL, group=True)
            elif watch is not None and sent is None and not timed_out:
                wanted = watch(elapsed)
                if wanted:
                    sent = wanted
                    _kill(process.pid, wanted)
            time.sleep(0.02)
        path.unlink(missing_ok=True)
        code = process.returncode
        return {"exit": code if code >= 0 else None, "signal": -code if code < 0 else None,
                "timed_out": timed_out, "sent_signal": sent}  # fmt: skip

    # ---- what the tree under test offers

    def help_text(self, verb: str, cwd: Path) -> str:
        if verb not in self._help:
            run = self.run([verb, "--help"], cwd=cwd, label="help", timeout=120)
            self._help[verb] = run.stdout
        return self._help[verb]


def _kill(pid: int, sig: int, *, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            try:
                os.killpg(pid, sig)
                return
            except (ProcessLookupError, PermissionError):
                pass
        os.kill(pid, sig)


# ---------------------------------------------------------------- output folders

#: Files of one scene's output set, by suffix (longest first, so that `_mask.tif` wins), with
#: the sidecars GIS programs read beside them (styles, raster attribute tables).
SET_SUFFIXES = tuple(sorted(
    ("_labels.tif", "_mask.tif", "_score.tif", "_preview.png", ".geojson", ".gpkg", ".json",
     "_labels.tif.aux.xml", "_mask.tif.aux.xml", "_score.tif.aux.xml", "_labels.qml",
     "_mask.qml", "_score.qml", ".qml"),
    key=len, reverse=True,
))  # fmt: skip
#: What every finished set holds (the GeoJSON is left out for scenes without georeferencing).
REQUIRED = ("_score.tif", "_preview.png", ".gpkg", ".json")
BATCH_FILES = ("summary.json", "index.gpkg", "index.geojson")
_TEMP = re.compile(r"^\..*\.(tmp|work)-[0-9a-zA-Z]+|^\.terramask-probe-|-journal$|-wal$|-shm$")


def set_stem(name: str) -> tuple[str, str] | None:
    for suffix in SET_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix) and not name.startswith("."):
            return name[: -len(suffix)], suffix
    return None


def folder_problems(folder: Path) -> list[str]:
    """Partial sets and leftovers in an output folder (after its writer ended)."""
    if not folder.is_dir():
        return []
    problems = []
    sets: dict[str, set[str]] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if path.is_dir():
            if name == ".terramask-staging":
                inside = sorted(p.name for p in path.rglob("*"))
                problems.append(f"a staging folder was left: .terramask-staging {inside[:6]}")
            continue
        if _TEMP.search(name):
            problems.append(f"a temporary file was left: {name}")
            continue
        if name in BATCH_FILES:
            continue
        parsed = set_stem(name)
        if parsed:
            sets.setdefault(parsed[0], set()).add(parsed[1])
    for stem, present in sorted(sets.items()):
        if present == {".json"}:
            try:
                report = json.loads((folder / f"{stem}.json").read_text())
            except (OSError, ValueError):
                report = None
            if isinstance(report, dict) and ("skipped" in report or "failed" in report):
                continue  # a scene the batch skipped: its report says why
        raster = present & {"_mask.tif", "_labels.tif"}
        missing = [s for s in REQUIRED if s not in present]
        if not raster:
            missing.insert(0, "_mask.tif or _labels.tif")
        if missing:
            problems.append(
                f"a partial set of {stem}: has {', '.join(sorted(present))}; "
                f"lacks {', '.join(missing)}"
            )
    return problems


def digests(folder: Path, stem: str) -> dict[str, str]:
    """SHA-256 of each file of a scene's set."""
    found = {}
    for suffix in SET_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            found[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def set_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if set_stem(p.name)) if folder.is_dir() else []


# ---------------------------------------------------------------- one case


@dataclass
class Outcome:
    name: str
    category: str
    findings: dict[str, list[str]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def report(self) -> str:
        lines = [f"{self.name}: {self.category}"]
        for category in SEVERITY:
            for finding in self.findings.get(category, []):
                lines.append(f"  [{category}] {finding}")
        if self.category != PASSED:
            for run in self.runs:
                lines.append(f"  {run.describe()}")
                lines.append(f"    $ terramask {' '.join(_short(a) for a in run.args)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "category": self.category, "findings": self.findings,
            "seconds": round(self.seconds, 2), "note": self.note,
            "runs": [{"label": r.label, "exit": r.exit, "signal": r.signal,
                      "seconds": round(r.seconds, 2), "timed_out": r.timed_out,
                      "message": _clip(r.message())} for r in self.runs],
        }  # fmt: skip


def _short(arg: str) -> str:
    return re.sub(r"^/.*/(faults?[^/]*/)", "…/", arg) if len(arg) > 60 else arg


_OOM = re.compile(r"MemoryError|std::bad_alloc|Cannot allocate memory|out of memory|"
                  r"DefaultCPUAllocator: can't allocate", re.I)  # fmt: skip
_BUG = re.compile(r"unexpected error|Traceback \(most recent call last\)")


class CaseContext:
    """What a case uses to run commands and record what it saw."""

    def __init__(self, name: str, launcher: Launcher, inputs: Any, folder: Path) -> None:
        self.name = name
        self.launcher = launcher
        self.inputs = inputs
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.out = folder / "out"
        self.runs: list[Run] = []
        self.findings: dict[str, list[str]] = {}
        self.cache = folder / "cache"
        self._flagged: set[str] = set()  # runs already counted as a hang or a bug

    # ---- findings

    def add(self, category: str, text: str) -> None:
        self.findings.setdefault(category, []).append(text)

    def wrong(self, text: str) -> None:
        self.add(WRONG, text)

    def mixed(self, text: str) -> None:
        self.add(MIXED, text)

    # ---- applicability

    def require_flags(self, verb: str, *flags: str) -> None:
        """Not applicable when the tree under test's `verb` lacks one of `flags`."""
        text = self.launcher.help_text(verb, self.folder)
        missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
        if missing:
            raise NotApplicable(f"`terramask {verb}` has no {', '.join(missing)}")

    # ---- running

    def cli(
        self,
        *args: Any,
        out: Path | None = None,
        faults: dict | None = None,
        timeout: float = RUN_TIMEOUT,
        env: dict[str, str] | None = None,
        watch: Callable[[float], int | None] | None = None,
        killed: bool = False,
        readonly_dirs: Sequence[Path] = (),
        check_folder: bool = True,
        add_output: bool = True,
    ) -> Run:
        """Run `terramask ARGS` (``-o OUT`` is added: `out`, default this case's out folder)
        and record any hang, OOM, crash, unexpected error and leftovers in the folder.
        `killed`: the run is expected to die by a signal (leftovers are then judged after
        the run that follows it)."""
        out = self.out if out is None else out
        argv = [str(a) for a in args]
        if add_output and "-o" not in argv and "--output" not in argv:
            argv += ["-o", str(out)]
        run_env = {"TERRAMASK_CACHE": str(self.cache)}
        run_env.update(env or {})
        run = self.launcher.run(
            argv, cwd=self.folder, label=f"run {len(self.runs) + 1}", env=run_env,
            faults=faults, timeout=timeout, watch=watch, readonly_dirs=readonly_dirs,
        )  # fmt: skip
        self.runs.append(run)
        self._judge(run, expected_signal=killed)
        if check_folder and not killed and out.is_dir():
            for problem in folder_problems(Path(out)):
                self.mixed(f"after {run.label}: {problem}")
        return run

    def _judge(self, run: Run, *, expected_signal: bool) -> None:
        before = sum(len(self.findings.get(c, [])) for c in (HANG, UNEXPECTED))
        self._judge_run(run, expected_signal)
        if sum(len(self.findings.get(c, [])) for c in (HANG, UNEXPECTED)) > before:
            self._flagged.add(run.label)

    def _judge_run(self, run: Run, expected_signal: bool) -> None:
        if run.timed_out:
            self.add(HANG, f"{run.label} did not finish in {run.timeout:g} s (killed); "
                           f"peak memory {run.maxrss_kib // 1024} MiB")  # fmt: skip
            return
        oom = _OOM.search(run.output)
        if oom:
            self.add(HANG, f"{run.label} ran out of memory ({oom[0]}): {_clip(run.message())}")
            return
        if run.signal is not None and run.signal != run.sent_signal and not expected_signal:
            name = signal.Signals(run.signal).name
            kind = HANG if run.signal == signal.SIGKILL else UNEXPECTED
            self.add(kind, f"{run.label} died of {name} (a crash or the OOM killer)")
            return
        if run.exit == 1 or _BUG.search(run.output):
            self.add(UNEXPECTED, f"{run.label} (exit {run.exit}): {_bug_line(run)}")

    # ---- expectations

    def expect_ok(self, run: Run, stems: Sequence[str] = (), out: Path | None = None,
                  geojson: bool | None = None) -> bool:  # fmt: skip
        """Exit 0 and, for each stem, a finished set in the output folder."""
        out = self.out if out is None else out
        if run.exit != 0:
            if not self._already_counted(run):
                self.wrong(f"{run.label} should succeed: exit {run.exit}: "
                           f"{_clip(run.message())}")  # fmt: skip
            return False
        good = True
        for stem in stems:
            names = set(digests(out, stem))
            needed = {f"{stem}{s}" for s in REQUIRED}
            if not names & {f"{stem}_mask.tif", f"{stem}_labels.tif"}:
                needed.add(f"{stem}_mask.tif or _labels.tif")
            if geojson:
                needed.add(f"{stem}.geojson")
            if geojson is False and f"{stem}.geojson" in names:
                self.wrong(f"{run.label} wrote {stem}.geojson for a scene without georeferencing")
            lacking = sorted(needed - names)
            if lacking:
                good = False
                self.wrong(f"{run.label} exited 0 but {out.name}/ lacks {', '.join(lacking)}")
            kept = out / ".terramask-work" / stem
            if kept.is_dir() and any(kept.iterdir()):
                self.mixed(f"{run.label} finished {stem} but left its tiles in {kept.parent.name}/")
        return good

    def expect_refused(self, run: Run, pattern: str, what: str = "") -> bool:
        """Exit 2 with an error that names the problem (`pattern`, a case-insensitive
        regular expression matched against the error paragraph)."""
        if run.exit == 2 and re.search(pattern, run.output, re.I | re.S):
            if "\n\n" in _error_paragraph(run):
                self.wrong(f"{run.label}: the error is more than one paragraph")
                return False
            return True
        if self._already_counted(run):
            return False
        said = _clip(run.message())
        if run.exit == 2:
            self.wrong(f"{run.label} refused, but without naming {what or pattern!r}: {said}")
        elif run.exit == 0:
            self.wrong(f"{run.label} should be refused ({what or pattern}) but succeeded")
        else:
            self.wrong(f"{run.label} should exit 2 ({what or pattern}): exit {run.exit}: {said}")
        return False

    def expect_ok_or_refused(self, run: Run, pattern: str, stems: Sequence[str] = (),
                             what: str = "") -> bool:  # fmt: skip
        """Either is a fine answer: exit 0 with finished sets, or exit 2 naming `pattern`."""
        if run.exit == 0:
            return self.expect_ok(run, stems)
        return self.expect_refused(run, pattern, what)

    def _already_counted(self, run: Run) -> bool:
        return run.label in self._flagged

    # ---- verdict

    def outcome(self, seconds: float, note: str = "") -> Outcome:
        category = next((c for c in SEVERITY if self.findings.get(c)), PASSED)
        return Outcome(self.name, category, self.findings, self.runs, seconds, note)


def _bug_line(run: Run) -> str:
    for line in run.output.splitlines():
        if "unexpected error" in line:
            return _clip(line)
    lines = [line for line in run.output.strip().splitlines() if line.strip()]
    if "Traceback (most recent call last)" in run.output and lines:
        return _clip("Traceback … " + lines[-1])
    return _clip(run.message())


def _error_paragraph(run: Run) -> str:
    text = run.stderr
    match = re.search(r"^(error|Error):.*?(?=\n\S|\Z)", text, re.M | re.S)
    return match[0] if match else ""


@contextlib.contextmanager
def case_folder(root: Path, name: str) -> Iterator[Path]:
    folder = root / re.sub(r"[^\w.-]+", "_", name)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder
