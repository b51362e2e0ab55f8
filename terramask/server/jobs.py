"""Long work as jobs (OGC API – Processes): a SQLite store, a queue of worker threads,
progress, cancelling, and resuming after a restart.

Each job writes into its own folder, `OUTPUT/jobs/<id>/`, through the same verbs as the CLI,
so its outputs appear all at once or not at all. The store (`OUTPUT/jobs.sqlite`) records
every job with its inputs, status, progress and the files it made; a server started again
on the same folder lists the finished jobs and queues the unfinished ones again, which
continue from their finished tiles (the tile store in the job's folder). A cancelled job,
and a failed one, leave no folder behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from terramask.errors import TerraMaskError
from terramask.server.problems import bug, from_error

log = logging.getLogger("terramask.server")

#: OGC API – Processes job states.
ACCEPTED, RUNNING, SUCCESSFUL, FAILED, DISMISSED = (
    "accepted", "running", "successful", "failed", "dismissed",
)  # fmt: skip
FINISHED = (SUCCESSFUL, FAILED, DISMISSED)


class JobCancelled(BaseException):
    """Raised from a job's progress callback once it is cancelled: unwinds the verb as
    Ctrl-C would, so that nothing incomplete is left."""


class ServerStopping(BaseException):
    """Raised from a job's progress callback while the server shuts down: the job stays
    "running" in the store and resumes when the server starts again."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    id: str
    process: str
    inputs: dict[str, Any]
    status: str
    message: str
    progress: int
    created: str
    started: str | None
    finished: str | None
    updated: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None

    @property
    def folder_name(self) -> str:
        return self.id

    def status_info(self) -> dict[str, Any]:
        """The job as OGC API – Processes' statusInfo."""
        links = [{"href": f"/jobs/{self.id}", "rel": "self", "type": "application/json"}]
        if self.status == SUCCESSFUL:
            links.append({"href": f"/jobs/{self.id}/results", "rel": "http://www.opengis.net/"
                          "def/rel/ogc/1.0/results", "type": "application/json"})  # fmt: skip
        info = {
            "jobID": self.id, "processID": self.process, "type": "process",
            "status": self.status, "message": self.message, "progress": self.progress,
            "created": self.created, "started": self.started, "finished": self.finished,
            "updated": self.updated, "links": links,
            "scene": self.inputs.get("scene"),
        }  # fmt: skip
        if self.error:
            info["error"] = self.error
        return info


_COLUMNS = ("id", "process", "inputs", "status", "message", "progress", "created", "started",
            "finished", "updated", "result", "error")  # fmt: skip


class JobStore:
    """Jobs in a SQLite file, one connection shared under a lock (WAL journal)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, process TEXT NOT NULL, "
                "inputs TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', "
                "progress INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, started TEXT, "
                "finished TEXT, updated TEXT NOT NULL, result TEXT, error TEXT)"
            )

    def create(self, process: str, inputs: dict[str, Any]) -> Job:
        stamp = now()
        job = Job(uuid.uuid4().hex, process, inputs, ACCEPTED, "queued", 0, stamp, None, None,
                  stamp, None, None)  # fmt: skip
        with self._lock:
            self._db.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 12)})",
                (job.id, process, json.dumps(inputs), job.status, job.message, 0, stamp, None,
                 None, stamp, None, None),
            )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _job(row)

    def list(self, statuses: tuple[str, ...] | None = None, limit: int = 1000) -> list[Job]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        args: tuple = ()
        if statuses:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = statuses
        query += " ORDER BY created DESC, rowid DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def update(self, job_id: str, *, unless: tuple[str, ...] = (), **values: Any) -> bool:
        """Set fields of a job (not when its status is in `unless`); whether it was set."""
        values["updated"] = now()
        for name in ("result", "error", "inputs"):
            if name in values and values[name] is not None:
                values[name] = json.dumps(values[name])
        assignments = ", ".join(f"{k} = ?" for k in values)
        query = f"UPDATE jobs SET {assignments} WHERE id = ?"
        args: tuple = (*values.values(), job_id)
        if unless:
            query += f" AND status NOT IN ({', '.join('?' * len(unless))})"
            args = (*args, *unless)
        with self._lock:
            return self._db.execute(query, args).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: tuple) -> Job:
    data = dict(zip(_COLUMNS, row, strict=True))
    for name in ("inputs", "result", "error"):
        data[name] = json.loads(data[name]) if data[name] else None
    data["inputs"] = data["inputs"] or {}
    return Job(**data)


#: How far through a job each stage of the verbs brings it (percent at its start and end).
STAGE_SPANS = {
    "segment": {"segment": (0, 90), "write": (90, 99)},
    "prompt": {"segment": (0, 60), "write": (60, 99)},
    "ask": {"ask": (0, 40), "segment": (40, 60), "write": (60, 99)},
}


class JobManager:
    """Runs jobs on `workers` threads. `runner(process, inputs, folder, progress)` does the
    work and returns the job's result record; it raises to fail the job."""

    def __init__(
        self,
        store: JobStore,
        folder: str | Path,
        runner: Callable[[str, dict[str, Any], Path, Callable], dict[str, Any]],
        *,
        workers: int = 1,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.folder = Path(folder)
        self.runner = runner
        self.secrets = secrets
        self._executor = ThreadPoolExecutor(max(1, workers), thread_name_prefix="terramask-job")
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0

    def folder_of(self, job_id: str) -> Path:
        return self.folder / job_id

    def resume(self) -> list[str]:
        """Queue again the jobs a stopped server left unfinished; their ids."""
        unfinished = self.store.list((ACCEPTED, RUNNING))
        for job in reversed(unfinished):  # oldest first
            self.store.update(job.id, status=ACCEPTED, message="resumed after a restart")
            self._enqueue(job.id)
        return [j.id for j in unfinished]

    def submit(self, process: str, inputs: dict[str, Any]) -> Job:
        job = self.store.create(process, inputs)
        self._enqueue(job.id)
        return job

    def _enqueue(self, job_id: str) -> None:
        with self._lock:
            self._active += 1
        self._executor.submit(self._run, job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Dismiss a job: a queued one never starts, a running one stops at its next step,
        and a finished one's outputs are removed. Returns the job as it is now."""
        job = self.store.get(job_id)
        if job is None:
            return None
        if job.status != DISMISSED:
            with self._lock:
                self._cancelled.add(job_id)
            running = job.status in (ACCEPTED, RUNNING)
            self.store.update(
                job_id, status=DISMISSED, message="dismissed" + (
                    ": stops at its next step" if job.status == RUNNING else ""),
                finished=job.finished or now(), result=None,
            )  # fmt: skip
            if not running:
                shutil.rmtree(self.folder_of(job_id), ignore_errors=True)
        return self.store.get(job_id)

    def _progress(self, job: Job) -> Callable[[str, int, int], None]:
        spans = STAGE_SPANS.get(job.process, {})
        state = {"percent": 0}

        def report(stage: str, done: int, total: int) -> None:
            if self._stopping.is_set():
                raise ServerStopping
            if job.id in self._cancelled:
                raise JobCancelled
            lo, hi = spans.get(stage, (state["percent"], state["percent"]))
            fraction = done / total if total else 1.0
            percent = max(state["percent"], int(lo + (hi - lo) * min(1.0, fraction)))
            state["percent"] = percent
            self.store.update(
                job.id, progress=percent, message=f"{stage} {done}/{total}",
                unless=FINISHED,
            )  # fmt: skip

        return report

    def _run(self, job_id: str) -> None:
        try:
            self._run_job(job_id)
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def _run_job(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.status != ACCEPTED or self._stopping.is_set():
            return
        self.store.update(job_id, status=RUNNING, started=now(), message="running",
                          unless=FINISHED)  # fmt: skip
        folder = self.folder_of(job_id)
        try:
            result = self.runner(job.process, job.inputs, folder, self._progress(job))
        except ServerStopping:
            return  # left "running": resumed by the next server on this folder
        except JobCancelled:
            shutil.rmtree(folder, ignore_errors=True)
            self.store.update(job_id, status=DISMISSED, message="dismissed", finished=now())
            return
        except TerraMaskError as exc:
            problem = from_error(exc, self.secrets)
            self._fail(job_id, folder, problem.detail, problem.body())
            return
        except Exception as exc:
            log.exception("job %s (%s) failed", job_id, job.process)
            problem = bug(exc, self.secrets)
            self._fail(job_id, folder, problem.detail, problem.body())
            return
        if job_id in self._cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            return
        self.store.update(
            job_id, status=SUCCESSFUL, progress=100, message="finished", finished=now(),
            result=result, unless=(DISMISSED,),
        )  # fmt: skip

    def _fail(self, job_id: str, folder: Path, detail: str, problem: dict) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        self.store.update(job_id, status=FAILED, message=detail, finished=now(), error=problem,
                          unless=(DISMISSED,))  # fmt: skip

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is queued or running (tests, benchmarks); whether it became idle."""
        with self._lock:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def shutdown(self) -> None:
        """Stop taking jobs; running ones stop at their next step and resume next start."""
        self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
