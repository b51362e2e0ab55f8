"""A server stopped and started again on the same folders: finished jobs are still listed and
served, an interrupted `segment` job resumes from its finished tiles, a dismissed running job
leaves nothing, and tile embeddings come back from the on-disk cache (SAM's arrays round-trip
exactly)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from terramask.options import ModelOptions, ServerOptions
from terramask.server import create_app
from terramask.server.jobs import RUNNING, SUCCESSFUL, JobManager, JobStore
from tests.server.conftest import make_root, wait_for_job


@pytest.mark.slow
def test_restart_keeps_jobs_resumes_interrupted_segment_and_reuses_embeddings(
    tmp_path, tiny_sam, tiny_clip
):
    root = make_root(tmp_path)
    options = ServerOptions(root=root, output=tmp_path / "out",
                            embedding_cache=tmp_path / "embeddings")  # fmt: skip
    models = ModelOptions(segmenter=str(tiny_sam), clip=str(tiny_clip), device="cpu")
    segment = {"scene": "sub/small.tif", "classes": ["building", "road"], "engine": "clip",
               "tile": 64, "overlap": 0}  # fmt: skip

    # ---- first server: a finished prompt job, a click, and a segment job stopped midway
    app = create_app(options, models=models)
    with TestClient(app) as client:
        click = client.post("/scenes/scene.tif/prompt", json={"points": [[130, 100]]}).json()
        assert click["embedding"] == ["computed"]
        done = client.post("/processes/prompt/execution", json={"inputs": {
            "scene": "scene.tif", "points": [[130, 100]]}}).json()["jobID"]
        assert wait_for_job(client, done)["status"] == SUCCESSFUL
        manager = app.state.server.jobs
        stopped = threading.Event()
        original = manager._progress

        def stop_after_some_tiles(job):  # the server stops (Ctrl-C) after 2 of 4 tiles
            report = original(job)

            def wrapped(stage, finished, total):
                if stage == "segment" and finished >= 2 and not stopped.is_set():
                    stopped.set()
                    manager._stopping.set()
                report(stage, finished, total)

            return wrapped

        manager._progress = stop_after_some_tiles
        interrupted = client.post("/processes/segment/execution",
                                  json={"inputs": segment}).json()["jobID"]  # fmt: skip
        assert stopped.wait(60)
        manager.wait_idle(60)
        status = client.get(f"/jobs/{interrupted}").json()
        assert status["status"] == RUNNING  # left for the next server
        assert not any((tmp_path / "out" / "jobs" / interrupted).glob("*_labels.tif"))

    # ---- second server on the same folders
    app = create_app(options, models=models)
    with TestClient(app) as client:
        listed = {j["jobID"]: j["status"] for j in client.get("/jobs").json()["jobs"]}
        assert listed[done] == SUCCESSFUL
        results = client.get(f"/jobs/{done}/results").json()
        assert client.get(results["links"][0]["href"]).status_code == 200
        status = wait_for_job(client, interrupted)
        assert status["status"] == SUCCESSFUL, status
        tiles = client.get(f"/jobs/{interrupted}/results").json()["summary"]["tiles"]
        assert tiles["resumed"] >= 2  # continued from the tiles finished before the stop
        again = client.post("/scenes/scene.tif/prompt", json={"points": [[130, 100]]}).json()
        assert again["embedding"] == ["disk"]
        assert again["features"] == click["features"]


def test_changed_scene_is_never_answered_from_the_old_embedding(tmp_path, tiny_sam):
    from terramask.testing.scenes import write_synthetic_scene

    root = make_root(tmp_path)
    options = ServerOptions(root=root, output=tmp_path / "out",
                            embedding_cache=tmp_path / "embeddings")  # fmt: skip
    models = ModelOptions(segmenter=str(tiny_sam), device="cpu")
    with TestClient(create_app(options, models=models)) as client:
        first = client.post("/scenes/sub/small.tif/prompt", json={"points": [[60, 60]]}).json()
        assert first["embedding"] == ["computed"]
    write_synthetic_scene(root / "sub" / "small.tif", width=128, height=128, seed=7)
    with TestClient(create_app(options, models=models)) as client:
        second = client.post("/scenes/sub/small.tif/prompt", json={"points": [[60, 60]]}).json()
        assert second["embedding"] == ["computed"]


def test_shutdown_mid_job_resumes_and_cancel_leaves_nothing(tmp_path):
    """The job manager alone: a job stopped by shutdown stays `running` and runs again after
    a restart; a running job that is dismissed stops at its next step and its folder goes."""
    store = JobStore(tmp_path / "jobs.sqlite")
    calls: list[str] = []
    release = threading.Event()

    def runner(process, inputs, folder, progress):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "partial.tmp").write_text("half")
        calls.append(inputs["name"])
        for step in range(1000):
            progress("segment", step, 1000)
            if release.is_set():
                return {"outputs": {}, "summary": {"steps": step}}
            time.sleep(0.005)
        raise AssertionError("never released")

    manager = JobManager(store, tmp_path / "jobs", runner)
    job = manager.submit("segment", {"name": "a"})
    while store.get(job.id).status != RUNNING:
        time.sleep(0.01)
    manager.shutdown()
    assert store.get(job.id).status == RUNNING

    release.set()
    manager = JobManager(store, tmp_path / "jobs", runner)
    assert manager.resume() == [job.id]
    assert manager.wait_idle(30)
    assert store.get(job.id).status == SUCCESSFUL and calls == ["a", "a"]

    release.clear()
    other = manager.submit("segment", {"name": "b"})
    while store.get(other.id).progress == 0:
        time.sleep(0.01)
    assert manager.cancel(other.id).status == "dismissed"
    assert manager.wait_idle(30)
    assert store.get(other.id).status == "dismissed"
    assert not (tmp_path / "jobs" / other.id).exists()
    manager.shutdown()
    store.close()


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2"])
def test_sam_embeddings_round_trip_through_arrays(tmp_path, family):
    from terramask.models import load_segmenter
    from terramask.models.sam import embedding_arrays, embedding_from_arrays
    from terramask.testing.tiny_models import save_tiny_sam

    folder = save_tiny_sam(tmp_path / family, family=family)
    segmenter = load_segmenter(str(folder), device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    embedding = segmenter.embed(image)
    np.savez(tmp_path / "e.npz", **embedding_arrays(embedding))
    with np.load(tmp_path / "e.npz") as data:
        restored = embedding_from_arrays(segmenter, {k: data[k] for k in data.files})
    assert restored.image_size == embedding.image_size
    points, labels = np.array([[[40.0, 30.0]]]), np.array([[1]])
    a = segmenter.predict(embedding, points=points, point_labels=labels)
    b = segmenter.predict(restored, points=points, point_labels=labels)
    assert torch.equal(torch.as_tensor(a.logits), torch.as_tensor(b.logits))
    with pytest.raises(TypeError):
        embedding_arrays(type(embedding)(image_size=(1, 1), data=None))


def test_disk_cache_survives_a_torn_file_and_stays_under_its_size(tmp_path, tiny_sam):
    from terramask.models import load_segmenter
    from terramask.server.embeddings import EmbeddingCache

    segmenter = load_segmenter(str(tiny_sam), device="cpu")

    class Window:
        def __init__(self, seed):
            rng = np.random.default_rng(seed)
            self.image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            self.valid = np.ones((64, 64), dtype=bool)

    cache = EmbeddingCache(segmenter, memory=1, folder=tmp_path / "c", max_bytes=10**9)
    assert cache.get("a", lambda: Window(0)).source == "computed"
    (saved,) = list((tmp_path / "c").glob("*/*.npz"))
    saved.write_bytes(b"torn")
    cache.clear_memory()
    assert cache.get("a", lambda: Window(0)).source == "computed"  # recomputed, replaced
    cache.clear_memory()
    assert cache.get("a", lambda: Window(0)).source == "disk"
    size = saved.stat().st_size
    small = EmbeddingCache(segmenter, memory=1, folder=tmp_path / "d", max_bytes=int(size * 2.5))
    for seed in range(5):
        small.get(seed, lambda seed=seed: Window(seed))
    files = list((tmp_path / "d").glob("*/*.npz"))
    assert 1 <= len(files) <= 2 and sum(f.stat().st_size for f in files) <= size * 2.5
