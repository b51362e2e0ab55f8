"""A real `terramask serve` application on 127.0.0.1 (uvicorn in a thread), tiny random
models saved to folders and loaded by path as a user's would be, and small scenes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server tests need the `server` extra (FastAPI)")
pytest.importorskip("uvicorn", reason="the server tests need the `server` extra (uvicorn)")
pytest.importorskip("rio_tiler", reason="the server tests need the `server` extra (rio-tiler)")
httpx = pytest.importorskip("httpx", reason="the server tests need httpx (the `dev` extra)")

from terramask.testing.scenes import write_synthetic_scene  # noqa: E402
from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam  # noqa: E402

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch) -> None:
    """MLLM replies and tile embeddings cached in a folder of the test run, never the user's
    (a reply cached by an earlier run would answer for the scripted endpoint)."""
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("models") / "tiny-sam")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def make_root(folder: Path) -> Path:
    """A root folder with a georeferenced scene (nodata border), one in a sub-folder, one
    without georeferencing, and a file that is not a raster."""
    root = folder / "root"
    (root / "sub").mkdir(parents=True)
    write_synthetic_scene(root / "scene.tif", width=260, height=200, dtype="uint16", nodata=0,
                          nodata_border=6)  # fmt: skip
    write_synthetic_scene(root / "sub" / "small.tif", width=128, height=128, seed=1)
    write_synthetic_scene(root / "plain.tif", width=96, height=96, crs=None, seed=2)
    (root / "notes.txt").write_text("not a raster\n")
    return root


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a free port of 127.0.0.1; its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for_job(client: Any, job_id: str, timeout: float = 120) -> dict:
    """Poll a job as a client would until it is finished; its status."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/jobs/{job_id}").json()
        if status["status"] in ("successful", "failed", "dismissed"):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish: {status}")
        time.sleep(0.05)


def assert_problem(response: Any, status: int, *needles: str) -> dict:
    """An RFC 9457 problem of `status` whose detail says each of `needles`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"]
    assert "Traceback" not in body["detail"] and "\n" not in body["detail"]
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body
