"""Every endpoint of `terramask serve` over real HTTP (uvicorn on 127.0.0.1, started once for
the module) with tiny random SAM and CLIP loaded from folders, and the bad inputs a client
sends: 4xx problem+json with the CLI's wording, and nothing written by a refused request."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from terramask.options import MLLMOptions, ModelOptions, ServerOptions
from terramask.server import create_app
from tests.server.conftest import TOKEN, assert_problem, httpx, make_root, serving, wait_for_job


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sam, tiny_clip):
    """(client, app, work folder) of one server on a root folder with three scenes."""
    work = tmp_path_factory.mktemp("serve")
    root = make_root(work)
    outside = work / "outside.tif"
    outside.write_bytes((root / "scene.tif").read_bytes())
    (root / "link.tif").symlink_to(outside)  # a symlink out of the root
    options = ServerOptions(root=root, output=work / "out", embedding_cache=work / "embeddings")
    app = create_app(options, models=ModelOptions(segmenter=str(tiny_sam), clip=str(tiny_clip),
                                                  device="cpu"))  # fmt: skip
    with serving(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client, app, work


def snapshot(folder: Path) -> set[str]:
    """Every file under `folder` (relative), except the job store's own files."""
    if not folder.exists():
        return set()
    return {
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("jobs.sqlite")
    }  # fmt: skip


def scene_grid(path: Path):
    with rasterio.open(path) as src:
        return src.transform, src.crs


# ---------------------------------------------------------------------- scenes and tiles


def test_health_config_and_scene_listing(served):
    client, _, _ = served
    assert client.get("/health").json()["status"] == "ok"
    config = client.get("/config").json()
    assert config["auth"] is False and config["basemap"] is None and config["mllm"] is None
    assert {"segment", "ask", "prompt"} <= set(config["processes"])
    ids = [s["id"] for s in client.get("/scenes").json()["scenes"]]
    assert {"scene.tif", "sub/small.tif", "plain.tif"} <= set(ids)
    assert "notes.txt" not in ids and "link.tif" not in ids  # not a raster; outside the root


def test_scene_info_and_map_tiles(served):
    import morecantile

    client, _, _work = served
    info = client.get("/scenes/scene.tif").json()
    assert (info["width"], info["height"], info["crs"]) == (260, 200, "EPSG:32633")
    w, s, e, n = info["bounds_wgs84"]
    assert w < e and s < n
    tms = morecantile.tms.get("WebMercatorQuad")
    z = info["tiles"]["maxzoom"]
    tile = tms.tile((w + e) / 2, (s + n) / 2, z)
    url = info["tiles"]["url"].format(z=z, x=tile.x, y=tile.y)
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    assert image.shape == (256, 256, 4) and image[..., 3].any()  # the scene is drawn
    assert client.get(url, params={"bands": "3,2,1", "stretch": "1,99"}).status_code == 200
    assert_problem(client.get(url, params={"bands": "red"}), 422, "`bands`")
    assert_problem(client.get(url, params={"bands": "9,2,1"}), 422, "band")
    far = tms.tile(-120.0, 40.0, z)
    assert_problem(client.get(info["tiles"]["url"].format(z=z, x=far.x, y=far.y)), 404,
                   "outside the scene")  # fmt: skip
    assert_problem(client.get(f"/scenes/scene.tif/tiles/{z}/-1/0.png"), 404)
    assert_problem(client.get("/scenes/plain.tif/tiles/1/0/0.png"), 422, "no georeferencing")
    assert client.get("/scenes/plain.tif").json()["georeferenced"] is False
    assert client.get("/scenes/sub/small.tif").json()["width"] == 128


@pytest.mark.parametrize(
    ("scene_id", "status", "needle"),
    [
        ("nope.tif", 404, "No scene 'nope.tif'"),
        ("../outside.tif", 403, "outside the server's root"),
        ("sub/../../outside.tif", 403, "outside the server's root"),
        ("link.tif", 403, "outside the server's root"),
        ("notes.txt", 422, ""),
    ],
)
def test_unknown_or_outside_scenes_are_refused(served, scene_id, status, needle):
    client, _, _ = served
    from urllib.parse import quote

    # `..` escaped, as an attacker sends it (clients normalise a literal `..` away)
    path = "/".join("%2E%2E" if part == ".." else quote(part) for part in scene_id.split("/"))
    assert_problem(client.get(f"/scenes/{path}"), status, needle)
    assert_problem(client.post(f"/scenes/{path}/prompt", json={"points": [[5, 5]]}), status)


def test_absolute_paths_outside_the_root_are_refused(served):
    client, _, work = served
    target = str(work / "outside.tif").lstrip("/")
    assert_problem(client.get(f"/scenes//{target}"), 403, "outside the server's root")


# ---------------------------------------------------------------------- clicks


def test_click_in_pixels_and_in_map_coordinates_give_the_same_object(served):
    client, _app, work = served
    transform, _ = scene_grid(work / "root" / "scene.tif")
    first = client.post("/scenes/scene.tif/prompt", json={"points": [[130, 100]]})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["type"] == "FeatureCollection" and body["crs"] == "EPSG:4326"
    assert len(body["objects"]) == 1 and not body["objects"][0]["empty"]
    assert body["features"][0]["properties"]["score"] == body["objects"][0]["score"]
    assert body["features"][0]["properties"]["area_m2"] > 0
    x, y = transform @ (130, 100)
    again = client.post("/scenes/scene.tif/prompt", json={"points": [[x, y]],
                                                           "crs": "EPSG:32633"})  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["embedding"] == ["memory"]  # the second click on a tile only decodes
    assert again.json()["features"] == body["features"]
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    third = client.post("/scenes/scene.tif/prompt",
                        json={"points": [[lon, lat]], "crs": "EPSG:4326"})  # fmt: skip
    assert third.json()["features"] == body["features"]


def test_click_lands_where_it_was_made(tmp_path):
    """With a segmenter whose answer is a disc around the click, the polygon's centre is the
    click, in map coordinates: pixel/map conversions and tile routing are right."""
    from shapely.geometry import shape

    from tests.helpers.doubles import ShapeSegmenter

    root = make_root(tmp_path)
    transform, _ = scene_grid(root / "scene.tif")
    app = create_app(ServerOptions(root=root, output=tmp_path / "out", embedding_cache_mb=0),
                     models=ModelOptions(segmenter=ShapeSegmenter(radius=12)))  # fmt: skip
    from fastapi.testclient import TestClient

    from terramask.scene.vectors import to_wgs84

    with TestClient(app) as client:
        for col, row in [(40.5, 30.5), (200.5, 150.5)]:
            x, y = transform @ (col, row)
            body = client.post("/scenes/scene.tif/prompt",
                               json={"points": [[x, y]], "crs": "EPSG:32633"}).json()  # fmt: skip
            geometry = shape(body["features"][0]["geometry"])
            from shapely.geometry import Point

            (click,) = to_wgs84([Point(x, y)], "EPSG:32633")
            assert geometry.contains(click)
            assert geometry.centroid.distance(click) < 2e-6  # about 0.2 m
            assert body["objects"][0]["bbox_px"] == pytest.approx(
                [col - 12, row - 12, col + 12, row + 12], abs=1.5)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "No prompt was given"),
        ({"points": [[1]]}, "`points[0]`"),
        ({"points": [["a", 2]]}, "`points[0][0]`"),
        ({"points": "10,10"}, "`points`"),
        ({"boxes": [[1, 2, 3]]}, "`boxes[0]`"),
        ({"points": [[10, 10]], "colour": "red"}, "`colour`"),
        ({"points": [[5000, 10]]}, "outside"),
        ({"points": [[2, 2]]}, "nodata"),
        ({"points": [[10, 10]], "crs": "EPSG:999999"}, "EPSG:999999"),
        ({"points": [[15.0, 42.0]], "crs": "EPSG:4326"}, "outside"),
        ({"points": [[10, 10]], "simplify": -1}, "`simplify`"),
    ],
)
def test_bad_clicks_are_4xx_problems_and_write_nothing(served, body, needle):
    client, _, work = served
    before = snapshot(work / "out"), snapshot(work / "embeddings")
    response = client.post("/scenes/scene.tif/prompt", json=body)
    assert_problem(response, 422, needle)
    assert (snapshot(work / "out"), snapshot(work / "embeddings")) == before


def test_non_finite_and_malformed_json_are_refused(served):
    client, _, _ = served
    headers = {"content-type": "application/json"}
    for raw in ('{"points": [[NaN, 5]]}', '{"points": [[Infinity, 5]]}', '{"points": [[1, 2]'):
        assert_problem(client.post("/scenes/scene.tif/prompt", content=raw, headers=headers),
                       422)  # fmt: skip


def test_request_size_limit(served):
    client, _, _ = served
    huge = {"points": [[10.123456789, 10.123456789]] * 60_000}
    assert_problem(client.post("/scenes/scene.tif/prompt", json=huge), 413, "--max-request-size")

    def chunks():
        yield b'{"points": ['
        for _ in range(60_000):
            yield b"[10.1234, 10.1234],"
        yield b"[1, 1]]}"

    # without a Content-Length (chunked), stopped while streaming
    assert_problem(client.post("/scenes/scene.tif/prompt", content=chunks(),
                               headers={"content-type": "application/json"}), 413)  # fmt: skip


# ---------------------------------------------------------------------- processes and jobs


def test_processes_are_described(served):
    client, _, _ = served
    listed = {p["id"] for p in client.get("/processes").json()["processes"]}
    assert {"segment", "ask", "prompt"} <= listed
    segment = client.get("/processes/segment").json()
    assert segment["inputs"]["classes"]["minOccurs"] == 1
    assert "labels" in segment["outputs"]
    assert_problem(client.get("/processes/nope"), 404, "There is no process 'nope'")
    conformance = client.get("/conformance").json()["conformsTo"]
    assert any(c.endswith("/conf/core") for c in conformance)


def test_segment_job_runs_and_hands_out_its_files(served):
    import pyogrio

    client, _app, work = served
    response = client.post("/processes/segment/execution", json={"inputs": {
        "scene": "scene.tif", "classes": ["building", "road,street"], "engine": "clip"}})
    assert response.status_code == 201, response.text
    job_id = response.json()["jobID"]
    assert response.headers["location"] == f"/jobs/{job_id}"
    status = wait_for_job(client, job_id)
    assert status["status"] == "successful" and status["progress"] == 100, status
    results = client.get(f"/jobs/{job_id}/results").json()
    assert results["geojson"]["type"] == "FeatureCollection" and results["geojson"]["features"]
    assert {f["properties"]["label"] for f in results["geojson"]["features"]} <= {
        "building", "road"}
    kinds = {link["kind"]: link["href"] for link in results["links"]}
    assert {"labels", "gpkg", "geojson", "preview", "report"} <= set(kinds)
    labels = client.get(kinds["labels"])
    assert labels.status_code == 200 and labels.headers["content-type"].startswith("image/tiff")
    with rasterio.MemoryFile(labels.content) as memory, memory.open() as src:
        assert (src.width, src.height, src.crs.to_epsg()) == (260, 200, 32633)
    gpkg = client.get(kinds["gpkg"])
    path = work / "downloaded.gpkg"
    path.write_bytes(gpkg.content)
    assert pyogrio.read_info(path)["features"] == len(results["geojson"]["features"])
    assert any(j["jobID"] == job_id for j in client.get("/jobs").json()["jobs"])
    assert_problem(client.get(f"/jobs/{job_id}/outputs/../jobs.sqlite"), 404)
    assert_problem(client.get(f"/jobs/{job_id}/outputs/secret.txt"), 404, "no output")
    # dismissing a finished job removes its outputs
    dismissed = client.delete(f"/jobs/{job_id}").json()
    assert dismissed["status"] == "dismissed"
    assert not (work / "out" / "jobs" / job_id).exists()
    assert_problem(client.get(kinds["labels"]), 404)


def test_prompt_job_writes_the_object_files(served):
    client, _, _ = served
    response = client.post("/processes/prompt/execution", json={"inputs": {
        "scene": "sub/small.tif", "boxes": [[10, 10, 50, 40], [60, 60, 120, 120]]}})
    assert response.status_code == 201, response.text
    status = wait_for_job(client, response.json()["jobID"])
    assert status["status"] == "successful", status
    results = client.get(f"/jobs/{status['jobID']}/results").json()
    assert len(results["summary"]["objects"]) == 2
    assert {"mask", "score", "gpkg", "geojson"} <= {link["kind"] for link in results["links"]}


@pytest.mark.parametrize(
    ("process", "inputs", "status", "needle"),
    [
        ("segment", {"scene": "nope.tif", "classes": ["a"]}, 404, "No scene"),
        ("segment", {"scene": "../outside.tif", "classes": ["a"]}, 403, "outside"),
        ("segment", {"scene": "scene.tif", "classes": []}, 422, "`classes`"),
        ("segment", {"scene": "scene.tif"}, 422, "`classes`"),
        ("segment", {"scene": "scene.tif", "classes": ["a"], "threshold": 2}, 422, "threshold"),
        ("segment", {"scene": "scene.tif", "classes": ["a"], "engine": "dino"}, 422, "`engine`"),
        ("segment", {"scene": "scene.tif", "classes": ["a"], "engine": "clip", "grid": 8}, 422,
         "grid"),
        ("segment", {"scene": "scene.tif", "classes": ["a"], "tile": 10}, 422, "`tile`"),
        ("segment", {"scene": "scene.tif", "classes": ["a"], "bands": [7, 1, 2]}, 422, "band"),
        ("segment", {"scene": "scene.tif", "classes": ["a"], "stretch": "99,1"}, 422, "stretch"),
        ("ask", {"scene": "scene.tif", "question": "which fields?"}, 422, "--mllm-url"),
        ("prompt", {"scene": "scene.tif"}, 422, "No prompt"),
        ("prompt", {"scene": "scene.tif", "points": [[900, 1]]}, 422, "outside"),
        ("prompt", {"scene": "scene.tif", "points": [[1]]}, 422, "`points[0]`"),
        ("nope", {"scene": "scene.tif"}, 404, "There is no process"),
    ],
)  # fmt: skip
def test_bad_job_inputs_make_no_job(served, process, inputs, status, needle):
    client, app, work = served
    before = len(app.state.server.store.list()), snapshot(work / "out")
    response = client.post(f"/processes/{process}/execution", json={"inputs": inputs})
    assert_problem(response, status, needle)
    assert (len(app.state.server.store.list()), snapshot(work / "out")) == before


def test_a_job_failing_while_it_runs_leaves_no_folder(served):
    """sam3 is not installed here (offline, no folder): the job fails when it loads it, with
    the CLI's message, and its folder is gone."""
    client, _, work = served
    response = client.post("/processes/segment/execution", json={"inputs": {
        "scene": "scene.tif", "classes": ["building"], "engine": "sam3"}})
    assert response.status_code == 201, response.text
    status = wait_for_job(client, response.json()["jobID"])
    assert status["status"] == "failed", status
    assert status["error"]["status"] >= 400 and "sam3" in status["message"].lower()
    assert_problem(client.get(f"/jobs/{status['jobID']}/results"), status["error"]["status"])
    assert not (work / "out" / "jobs" / status["jobID"]).exists()


def test_unknown_jobs(served):
    client, _, _ = served
    assert_problem(client.get("/jobs/abc"), 404, "There is no job 'abc'")
    assert_problem(client.get("/jobs/abc/results"), 404)
    assert_problem(client.delete("/jobs/abc"), 404)
    assert_problem(client.get("/nothing-here"), 404, "GET /docs")
    assert_problem(client.put("/jobs/abc"), 405)


def test_run_process_serves_only_scenes_under_the_root(served):
    client, app, _work = served
    if "run" not in app.state.server.processes:
        pytest.skip("terramask.api.run_instructions is not available in this checkout")
    before = len(app.state.server.store.list())
    for image, status in (("../outside.tif", 403), ("nope.tif", 404)):
        response = client.post("/processes/run/execution", json={"inputs": {"tasks": [
            {"image": image, "task": "interactive", "points": [[5, 5]]}]}})
        assert_problem(response, status)
    response = client.post("/processes/run/execution", json={"inputs": {"tasks": [
        {"image": "sub/small.tif", "task": "interactive", "points": [[64, 64]]}]}})
    assert len(app.state.server.store.list()) == before + 1
    assert response.status_code == 201, response.text
    status = wait_for_job(client, response.json()["jobID"])
    assert status["status"] == "successful", status["message"]
    results = client.get(f"/jobs/{status['jobID']}/results").json()
    assert "results" in {link["kind"] for link in results["links"]}


def test_run_lines_are_checked_when_the_job_is_submitted(served):
    """A line `terramask run` would refuse, or a referring line on a server without an MLLM,
    gets a 4xx and no job (not a job that fails, or a referring line asking for `url`)."""
    client, app, work = served
    if "run" not in app.state.server.processes:
        pytest.skip("terramask.api.run_instructions is not available in this checkout")
    assert app.state.server.mllm is None
    before, files = len(app.state.server.store.list()), snapshot(work / "out")
    for line, needle in (
        ({"task": "referring", "instruction": "the roof"}, "no multimodal LLM"),
        ({"task": "bogus", "points": [[5, 5]]}, "\"task\" must be one of"),
        ({"task": "interactive", "instruction": "the roof"}, "needs \"points\""),
        ({"task": "interactive", "points": [[5, 5]], "negative": [[1, 1]]}, "'negative'"),
        ({"task": "classes"}, "needs \"classes\""),
    ):
        response = client.post("/processes/run/execution", json={"inputs": {"tasks": [
            {"image": "sub/small.tif", **line}]}})  # fmt: skip
        assert_problem(response, 422, needle)
    assert len(app.state.server.store.list()) == before
    assert snapshot(work / "out") == files


# ---------------------------------------------------------------------- page and docs


def test_page_docs_and_vendored_libraries(served):
    client, _, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "/static/vendor/leaflet/leaflet.js" in page.text and "https://" not in page.text
    for path in ("/static/vendor/leaflet/leaflet.js", "/static/app.js",
                 "/static/vendor/swagger-ui/swagger-ui-bundle.js"):  # fmt: skip
        assert client.get(path).status_code == 200, path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/vendor/swagger-ui/" in docs.text
    schema = client.get("/openapi.json").json()
    assert "/scenes/{scene_id}/prompt" in schema["paths"]
    assert "/processes/{process_id}/execution" in schema["paths"]
    assert page.headers["x-content-type-options"] == "nosniff"
    # CORS is off unless asked for
    response = client.get("/scenes", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers


# ---------------------------------------------------------------------- token, CORS, keys


def test_token_cors_and_keys_never_echoed(tmp_path, tiny_sam, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = make_root(tmp_path)
    key = "sk-very-secret-key-42"
    options = ServerOptions(root=root, output=tmp_path / "out", token=TOKEN,
                            cors=("https://maps.example.org",), embedding_cache_mb=0)  # fmt: skip
    mllm = MLLMOptions(url="http://127.0.0.1:9/v1", model="gpt-test", key=key)
    app = create_app(options, models=ModelOptions(segmenter=str(tiny_sam), device="cpu"),
                     mllm=mllm)  # fmt: skip
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        body = assert_problem(client.get("/scenes"), 401, "--token")
        assert client.get("/scenes").headers["www-authenticate"].startswith("Bearer")
        assert_problem(client.get("/scenes", headers={"Authorization": "Bearer wrong"}), 401)
        assert_problem(client.get("/scenes", headers={"Authorization": TOKEN}), 401)
        assert_problem(client.post("/scenes/scene.tif/prompt", json={"points": [[9, 9]]}), 401)
        assert TOKEN not in json.dumps(body)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/scenes", headers=auth).status_code == 200
        assert client.get("/").status_code == 200  # the page itself holds no data
        config = client.get("/config", headers=auth)
        assert config.json()["auth"] is True and key not in config.text
        preflight = client.options("/scenes", headers={
            "Origin": "https://maps.example.org", "Access-Control-Request-Method": "GET"})
        assert preflight.headers["access-control-allow-origin"] == "https://maps.example.org"
        other = client.get("/scenes", headers={**auth, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # an ask job fails at the (unreachable) endpoint: its message never holds the key
        response = client.post("/processes/ask/execution", headers=auth, json={"inputs": {
            "scene": "scene.tif", "question": "where is the largest field?"}})
        assert response.status_code == 201, response.text
        status = wait_for_job(type("C", (), {"get": lambda _, p: client.get(p, headers=auth)})(),
                              response.json()["jobID"])  # fmt: skip
        assert status["status"] == "failed"
        assert key not in json.dumps(status) and key not in client.get("/jobs", headers=auth).text


def test_store_file_is_not_reachable_over_http(served):
    client, _, work = served
    assert (work / "out" / "jobs.sqlite").exists()
    for path in ("/static/../jobs.sqlite", "/static/%2e%2e/%2e%2e/options.py"):
        assert client.get(path).status_code == 404, path
    assert os.path.exists(work / "out")


def test_ask_job_with_a_scripted_mllm_shows_the_answer_and_mask(tmp_path, tiny_sam):
    from fastapi.testclient import TestClient

    from tests.helpers.chat_server import ChatServer

    root = make_root(tmp_path)
    reply = '{"bbox": [60, 50, 160, 130], "prompt": "field"}'
    with ChatServer([reply]) as chat:
        mllm = MLLMOptions(url=chat.url, model="qwen2.5-vl", key="sk-scripted-key-123")
        app = create_app(ServerOptions(root=root, output=tmp_path / "out", embedding_cache_mb=0),
                         models=ModelOptions(segmenter=str(tiny_sam), device="cpu"),
                         mllm=mllm)  # fmt: skip
        with TestClient(app) as client:
            assert client.get("/config").json()["mllm"] == {"model": "qwen2.5-vl"}
            response = client.post("/processes/ask/execution", json={"inputs": {
                "scene": "scene.tif", "question": "the largest field", "engine": "box"}})
            assert response.status_code == 201, response.text
            status = wait_for_job(client, response.json()["jobID"])
            assert status["status"] == "successful", status["message"]
            results = client.get(f"/jobs/{status['jobID']}/results")
        assert len(chat.requests) == 1
    body = results.json()
    assert body["processID"] == "ask" and "answer" in body
    assert body["geojson"]["features"]  # the mask inside the MLLM's box, as polygons
    assert {"mask", "gpkg"} <= {link["kind"] for link in body["links"]}
    assert "sk-scripted-key-123" not in results.text


def test_run_jobs_read_scenes_with_the_servers_bands_and_stretch(tmp_path, tiny_sam):
    """As the map and the other jobs do: a `run` line sees the pixels the page shows."""
    from fastapi.testclient import TestClient

    from terramask.options import RasterOptions

    root = make_root(tmp_path)
    app = create_app(ServerOptions(root=root, output=tmp_path / "out", embedding_cache_mb=0),
                     models=ModelOptions(segmenter=str(tiny_sam), device="cpu"),
                     raster=RasterOptions(bands=(3, 2, 1), stretch="1,99"))  # fmt: skip
    if "run" not in app.state.server.processes:
        pytest.skip("terramask.api.run_instructions is not available in this checkout")
    with TestClient(app) as client:
        response = client.post("/processes/run/execution", json={"inputs": {"tasks": [
            {"image": "sub/small.tif", "task": "interactive", "points": [[64, 64]]}]}})
        assert response.status_code == 201, response.text
        status = wait_for_job(client, response.json()["jobID"])
        assert status["status"] == "successful", status["message"]
        summary = client.get(f"/jobs/{status['jobID']}/results").json()["summary"]
    assert summary["done"] == 1
    assert summary["settings"]["raster"]["bands"] == [3, 2, 1]
    assert summary["settings"]["raster"]["stretch"] == [1.0, 99.0]


def test_stac_items_under_the_root_and_their_assets(served):
    client, _, work = served
    root = work / "root"

    def item(name: str, href: str) -> None:
        (root / name).write_text(json.dumps({
            "type": "Feature", "stac_version": "1.0.0", "id": name, "properties": {},
            "geometry": None, "links": [],
            "assets": {"visual": {"href": href, "type": "image/tiff"}}}))  # fmt: skip

    item("inside.json", "sub/small.tif")
    item("escapes.json", "../outside.tif")
    ids = [s["id"] for s in client.get("/scenes").json()["scenes"]]
    assert {"inside.json", "escapes.json"} <= set(ids)
    assert client.get("/scenes/inside.json").json()["width"] == 128
    assert_problem(client.get("/scenes/escapes.json"), 403, "outside the server's root")
    answer = client.post("/scenes/inside.json/prompt", json={"points": [[64, 64]]})
    assert answer.status_code == 200, answer.text


def test_a_10k_scene_is_served_tile_by_tile(served):
    """A 10 000² scene (a VRT stretching a small file: nothing large on disk): its info,
    tiles at both ends of its zoom range and a click only read what they need."""
    import morecantile

    client, _, work = served
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">sub/small.tif</SourceFilename>'
        f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="128" ySize="128"/>'
        '<DstRect xOff="0" yOff="0" xSize="10000" ySize="10000"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3)
    )
    (work / "root" / "big.vrt").write_text(
        '<VRTDataset rasterXSize="10000" rasterYSize="10000"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 0.5, 0, 4650000, 0, -0.5</GeoTransform>{bands}</VRTDataset>"
    )
    info = client.get("/scenes/big.vrt").json()
    assert (info["width"], info["height"]) == (10_000, 10_000)
    w, s, e, n = info["bounds_wgs84"]
    tms = morecantile.tms.get("WebMercatorQuad")
    for z in (info["tiles"]["minzoom"], info["tiles"]["maxzoom"]):
        tile = tms.tile((w + e) / 2, (s + n) / 2, z)
        response = client.get(info["tiles"]["url"].format(z=z, x=tile.x, y=tile.y))
        assert response.status_code == 200, response.text
    answer = client.post("/scenes/big.vrt/prompt", json={"points": [[9_000, 9_500]]}).json()
    assert len(answer["objects"]) == 1 and answer["embedding"] == ["computed"]
    x0, y0, x1, y1 = answer["objects"][0]["bbox_px"]
    assert min(x0, y0) >= 8_000 and max(x1, y1) <= 10_000  # near the click


def test_a_basemap_is_offered_and_allowed_by_the_page_policy(tmp_path, tiny_sam):
    from fastapi.testclient import TestClient

    basemap = "https://{s}.tile.example.org/{z}/{x}/{y}.png"
    options = ServerOptions(root=make_root(tmp_path), output=tmp_path / "out", basemap=basemap)
    app = create_app(options, models=ModelOptions(segmenter=str(tiny_sam), device="cpu"))
    with TestClient(app) as client:
        assert client.get("/config").json()["basemap"] == basemap
        policy = client.get("/").headers["content-security-policy"]
    assert "img-src 'self' data: blob: https://*.tile.example.org" in policy
    assert "connect-src 'self'" in policy
