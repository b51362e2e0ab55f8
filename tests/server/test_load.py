"""Many clients at once: 50 concurrent clicks and 20 concurrent jobs on one server (uvicorn on
127.0.0.1, tiny random SAM) all complete, each with its own answer, and nothing is lost."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from terramask.options import ModelOptions, ServerOptions
from terramask.server import create_app
from tests.server.conftest import httpx, make_root, serving, wait_for_job

CLICKS = 50
JOBS = 20


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sam):
    work = tmp_path_factory.mktemp("load")
    root = make_root(work)
    options = ServerOptions(root=root, output=work / "out", embedding_cache=work / "embeddings",
                            job_workers=2)  # fmt: skip
    app = create_app(options, models=ModelOptions(segmenter=str(tiny_sam), device="cpu"))
    with serving(app) as url:
        yield url, app, work


def clicks() -> list[tuple[str, dict]]:
    """50 different clicks on two scenes (pixel coordinates inside their valid data)."""
    found = []
    for i in range(CLICKS):
        scene, size = ("scene.tif", (260, 200)) if i % 2 else ("sub/small.tif", (128, 128))
        x = 10 + (i * 37) % (size[0] - 20)
        y = 10 + (i * 53) % (size[1] - 20)
        found.append((scene, {"points": [[x + 0.5, y + 0.5]], "name": f"click {i}"}))
    return found


@pytest.mark.slow
def test_50_concurrent_clicks_each_get_their_own_answer(served):
    url, app, _ = served
    wanted = clicks()
    cache = app.state.server.embedding_cache()
    with httpx.Client(base_url=url, timeout=120) as client:

        def send(item: tuple[str, dict]) -> dict:
            scene, body = item
            response = client.post(f"/scenes/{scene}/prompt", json=body)
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(CLICKS) as pool:
            together = list(pool.map(send, wanted))
        # one encoding per tile, however many clicks waited for it
        assert cache.stats["computed"] + cache.stats["disk"] == 2
        one_by_one = [send(item) for item in wanted]
    assert len(together) == CLICKS
    for (scene, body), answer, alone in zip(wanted, together, one_by_one, strict=True):
        assert answer["scene"] == scene
        assert [o["name"] for o in answer["objects"]] == [body["name"]]
        # the same answer as when it was sent alone: nothing mixed up between requests
        assert answer["features"] == alone["features"]


@pytest.mark.slow
def test_20_concurrent_jobs_all_finish_with_their_own_outputs(served):
    url, _, work = served
    with httpx.Client(base_url=url, timeout=120) as client:

        def submit(i: int) -> str:
            response = client.post("/processes/prompt/execution", json={"inputs": {
                "scene": "sub/small.tif", "points": [[20 + 4 * i, 30 + 3 * i]]}})
            assert response.status_code == 201, response.text
            return response.json()["jobID"]

        with ThreadPoolExecutor(JOBS) as pool:
            ids = list(pool.map(submit, range(JOBS)))
        assert len(set(ids)) == JOBS
        statuses = [wait_for_job(client, job_id, timeout=300) for job_id in ids]
        assert [s["status"] for s in statuses] == ["successful"] * JOBS, statuses
        listed = {j["jobID"] for j in client.get("/jobs").json()["jobs"]}
        assert set(ids) <= listed
        for i, job_id in enumerate(ids):
            results = client.get(f"/jobs/{job_id}/results").json()
            (obj,) = results["summary"]["objects"]
            assert obj["prompt_px"]["points"] == [[20 + 4 * i, 30 + 3 * i]]
            folder = work / "out" / "jobs" / job_id
            for link in results["links"]:
                assert (folder / link["href"].rsplit("/", 1)[1]).is_file()
