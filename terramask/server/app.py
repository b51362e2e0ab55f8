"""The FastAPI application of `terramask serve`: the page, scenes and their map tiles,
interactive prompts, and jobs after OGC API – Processes.

    from terramask.server import create_app
    app = create_app(ServerOptions(root="imagery"), models=ModelOptions(segmenter="sam-vit-base"))

Routes (OpenAPI at /docs):

    GET  /                              the page (a map of the scenes, tools, layers)
    GET  /config                        what the page needs: basemap, processes, auth
    GET  /scenes                        the scenes served (given ones, then under --root)
    GET  /scenes/{id}                   size, CRS, bounds (scene CRS and EPSG:4326), tiles
    GET  /scenes/{id}/tiles/{z}/{x}/{y}.png   XYZ tiles (?bands=4,3,2&stretch=2,98)
    POST /scenes/{id}/prompt            clicks and boxes -> GeoJSON polygons with scores
    GET  /processes, /processes/{p}     segment, ask, prompt (and run where the API has it)
    POST /processes/{p}/execution       -> 201, a job (Location: /jobs/{job})
    GET  /jobs, /jobs/{job}             status with progress
    GET  /jobs/{job}/results            GeoJSON, the answer, links to the COG/GPKG outputs
    GET  /jobs/{job}/outputs/{file}     one output file
    DELETE /jobs/{job}                  cancel (dismiss) and remove its outputs

Errors are RFC 9457 problem+json, their `detail` the CLI's message with options named as the
request's JSON fields.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from terramask import __version__
from terramask.errors import InputError, TerraMaskError
from terramask.options import MLLMOptions, ModelOptions, RasterOptions, ServerOptions
from terramask.server import jobs as jobstates
from terramask.server.clicks import PromptRequest, click, dumps
from terramask.server.embeddings import EmbeddingCache, Locked, default_folder
from terramask.server.jobs import JobManager, JobStore
from terramask.server.problems import (
    MEDIA_TYPE,
    Problem,
    bug,
    for_api,
    from_error,
    scrub,
    validation_detail,
)
from terramask.server.processes import Context, available, prepare, run
from terramask.server.scenes import SceneRegistry
from terramask.server.security import Guard, LimitErrors
from terramask.server.tiles import render_tile

log = logging.getLogger("terramask.server")
STATIC = Path(__file__).parent / "static"

#: Files a job may hand out, by suffix: their media types.
MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": "application/geo+json",
    ".png": "image/png",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".qml": "application/xml",
    ".xml": "application/xml",
}
#: What each output kind is called in a results document's links.
OUTPUT_TITLES = {
    "labels": "labels (COG)", "mask": "mask (COG)", "score": "scores (COG)",
    "gpkg": "polygons (GeoPackage)", "geojson": "polygons (GeoJSON, EPSG:4326)",
    "preview": "preview (PNG)", "report": "report (JSON)",
}  # fmt: skip


class ModelHub:
    """The server's models by role, loaded once on first use and shared (one call at a time)
    by clicks and jobs."""

    LOADERS: ClassVar[dict[str, str]] = {
        "segmenter": "load_segmenter", "clip": "load_image_text", "sam3": "load_concept_segmenter",
    }  # fmt: skip

    def __init__(self, options: ModelOptions) -> None:
        self.options = options
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def has(self, role: str) -> bool:
        return getattr(self.options, role) is not None

    def get(self, role: str) -> Any:
        with self._lock:
            if role not in self._loaded:
                from terramask import models

                loader = getattr(models, self.LOADERS[role])
                model = loader(getattr(self.options, role), device=self.options.device)
                self._loaded[role] = model if isinstance(model, Locked) else Locked(model)
            return self._loaded[role]


class Server:
    """Everything one server holds: options, scenes, models, the embedding cache, jobs."""

    def __init__(
        self,
        options: ServerOptions,
        models: ModelOptions,
        mllm: MLLMOptions | None,
        raster: RasterOptions,
    ) -> None:
        self.options = options
        self.scenes = SceneRegistry(options.scenes, options.root, raster)
        self.models = ModelHub(models)
        self.mllm = mllm
        self.secrets = tuple(
            s for s in (options.token, getattr(mllm, "key", None),
                        os.environ.get("OPENAI_API_KEY")) if s
        )
        output = Path(options.output)
        output.mkdir(parents=True, exist_ok=True)
        from terramask import api

        self.processes = available(hasattr(api, "run_instructions"))
        self.store = JobStore(output / "jobs.sqlite")
        context = Context(
            scenes=self.scenes, model=self.models.get, has=self.models.has,
            device=models.device, featup=models.featup, mllm=mllm,
        )  # fmt: skip
        self.jobs = JobManager(
            self.store, output / "jobs",
            lambda process, inputs, folder, progress: run(
                process, inputs, folder, progress, context
            ),
            workers=options.job_workers, secrets=self.secrets,
        )  # fmt: skip
        self._cache: EmbeddingCache | None = None
        self._cache_lock = threading.Lock()

    def embedding_cache(self) -> EmbeddingCache:
        with self._cache_lock:
            if self._cache is None:
                options = self.options
                folder = options.embedding_cache or default_folder()
                self._cache = EmbeddingCache(
                    self.models.get("segmenter"), memory=options.embedding_memory,
                    folder=folder if options.embedding_cache_mb > 0 else None,
                    max_bytes=options.embedding_cache_mb * 2**20,
                )  # fmt: skip
            return self._cache

    def close(self) -> None:
        self.jobs.shutdown()
        self.store.close()


def create_app(
    options: ServerOptions,
    *,
    models: ModelOptions = ModelOptions(),
    mllm: MLLMOptions | None = None,
    raster: RasterOptions = RasterOptions(),
) -> FastAPI:
    """The application serving `options`' scenes with these models (and MLLM, for `ask`).

    Jobs a previous server left unfinished in `options.output` are queued again at once.

    Raises:
        InputError: A scene given cannot be found (before anything is served).
    """
    server = Server(options, models, mllm, raster)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(
        title="TerraMask", version=__version__, lifespan=lifespan, docs_url=None,
        redoc_url=None,
        description="Segment satellite imagery from clicks, class names and questions. "
        "Errors are RFC 9457 problem+json; options are named by the JSON fields of the "
        "requests.",
    )  # fmt: skip
    app.state.server = server
    _handlers(app, server)
    _routes(app, server)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if options.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(options.cors), allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"], expose_headers=["Location"],
        )  # fmt: skip
    app.add_middleware(Guard, token=options.token, max_body=options.max_request_bytes)
    app.add_middleware(LimitErrors, max_body=options.max_request_bytes)
    server.jobs.resume()
    return app


# ---------------------------------------------------------------------- errors


def _problem_response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path), status_code=problem.status, media_type=MEDIA_TYPE,
        headers=problem.headers,
    )  # fmt: skip


def _handlers(app: FastAPI, server: Server) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem_response(exc, request)

    @app.exception_handler(TerraMaskError)
    async def on_error(request: Request, exc: TerraMaskError) -> JSONResponse:
        return _problem_response(from_error(exc, server.secrets), request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = validation_detail(list(exc.errors()))
        return _problem_response(Problem(422, detail, "input", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 413: "too-large", 401: "unauthorized"}.get(exc.status_code,
                                                                           "input")  # fmt: skip
        detail = exc.detail if isinstance(exc.detail, str) else "The request cannot be served."
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Nothing is served at {request.url.path}; GET /docs lists the routes."
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
        return _problem_response(
            Problem(exc.status_code, detail, kind, headers=dict(exc.headers or {})), request
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _problem_response(bug(exc, server.secrets), request)


def _invalid(exc: ValidationError) -> Problem:
    detail, errors = validation_detail(list(exc.errors()))
    return Problem(422, detail, "input", errors=errors)


# ---------------------------------------------------------------------- routes


PROBLEM = {"description": "An RFC 9457 problem", "content": {MEDIA_TYPE: {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 413: PROBLEM, 422: PROBLEM,
}  # fmt: skip


def _routes(app: FastAPI, server: Server) -> None:
    options = server.options

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html", headers={
            "Content-Security-Policy": _page_policy(options.basemap),
            "Cache-Control": "no-store"})  # fmt: skip

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="TerraMask API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png",
        )  # fmt: skip

    @app.get("/health", tags=["server"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/config", tags=["server"], responses=ERRORS)
    def config() -> dict[str, Any]:
        """What the page needs: the basemap, the processes offered, and whether asking works."""
        mllm = server.mllm
        return {
            "version": __version__,
            "basemap": options.basemap,
            "processes": list(server.processes),
            "mllm": None if mllm is None else {"model": getattr(mllm, "model", None) or getattr(
                mllm, "name", None)},
            "segmenter": server.models.options.describe()["segmenter"],
            "auth": options.token is not None,
        }  # fmt: skip

    @app.get("/conformance", tags=["processes"])
    def conformance() -> dict[str, list[str]]:
        base = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
        return {"conformsTo": [base + c for c in ("core", "json", "job-list", "dismiss",
                                                   "oas30")]}  # fmt: skip

    # -------------------------------------------------------------- scenes

    @app.get("/scenes", tags=["scenes"], responses=ERRORS)
    def scenes() -> dict[str, Any]:
        """The scenes given at start, then the rasters and STAC items under the root."""
        return {"scenes": [s.summary() for s in server.scenes.listing()]}

    @app.get("/scenes/{scene_id:path}/tiles/{z}/{x}/{y}.png", tags=["scenes"],
             responses={**ERRORS, 200: {"content": {"image/png": {}}}},
             response_class=Response)  # fmt: skip
    def tile(
        scene_id: str, z: int, x: int, y: int,
        bands: Annotated[str | None, Query(max_length=50, description="e.g. 4,3,2")] = None,
        stretch: Annotated[str | None, Query(max_length=50,
                                             description="auto, none or P1,P2")] = None,
    ) -> Response:  # fmt: skip
        """One 256 px PNG tile in Web Mercator, drawn with the scene's bands and stretch (or
        those asked for), transparent where the scene has no data."""
        served = server.scenes.get(scene_id)
        if not (0 <= z <= 30 and 0 <= x < 2**z and 0 <= y < 2**z):
            raise Problem(404, f"There is no tile {z}/{x}/{y}.", "not-found")
        chosen = _bands(bands)
        png = render_tile(served, z, x, y, bands=chosen, stretch=stretch)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})  # fmt: skip

    @app.post("/scenes/{scene_id:path}/prompt", tags=["scenes"], responses=ERRORS,
              response_class=JSONResponse)  # fmt: skip
    def prompt(scene_id: str, request: PromptRequest) -> JSONResponse:
        """Clicks and boxes -> the objects under them as GeoJSON (EPSG:4326; pixels for a
        scene without georeferencing), with scores, synchronously. The first click on a
        tile encodes it; later ones only decode."""
        served = server.scenes.get(scene_id)
        answer = click(served, request, server.models.get("segmenter"), server.embedding_cache())
        return Response(dumps(answer), media_type="application/json")

    @app.get("/scenes/{scene_id:path}", tags=["scenes"], responses=ERRORS)
    def scene(scene_id: str) -> dict[str, Any]:
        """Size, CRS, bounds (scene CRS and EPSG:4326), bands, stretch and the tile URL."""
        return server.scenes.get(scene_id).info()

    # -------------------------------------------------------------- processes and jobs

    @app.get("/processes", tags=["processes"])
    def processes() -> dict[str, Any]:
        return {"processes": [p.summary() for p in server.processes.values()],
                "links": [{"href": "/processes", "rel": "self"}]}  # fmt: skip

    @app.get("/processes/{process_id}", tags=["processes"], responses=ERRORS)
    def process(process_id: str) -> dict[str, Any]:
        return _process(server, process_id).description_document()

    @app.post("/processes/{process_id}/execution", tags=["processes"], status_code=201,
              responses=ERRORS)  # fmt: skip
    def execute(
        process_id: str,
        body: Annotated[dict[str, Any], Body(examples=[
            {"inputs": {"scene": "scene.tif", "classes": ["building", "road,street"]}}])],
    ) -> JSONResponse:  # fmt: skip
        """Start a job: `{"inputs": {...}}` as the process describes them. Answers 201 with
        the job's status and its address in `Location`."""
        chosen = _process(server, process_id)
        inputs = body.get("inputs", body) if isinstance(body, dict) else body
        if not isinstance(inputs, dict):
            raise Problem(422, "`inputs` must be a JSON object of the process's inputs.")
        try:
            prepared = prepare(chosen.id, inputs, server.scenes, mllm=server.mllm)
        except ValidationError as exc:
            raise _invalid(exc) from None
        job = server.jobs.submit(prepared.process, prepared.inputs)
        return JSONResponse(job.status_info(), status_code=201,
                            headers={"Location": f"/jobs/{job.id}"})  # fmt: skip

    @app.get("/jobs", tags=["jobs"])
    def jobs(
        status: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        listed = server.store.list(tuple(status) if status else None, limit)
        return {"jobs": [j.status_info() for j in listed],
                "links": [{"href": "/jobs", "rel": "self"}]}  # fmt: skip

    @app.get("/jobs/{job_id}", tags=["jobs"], responses=ERRORS)
    def job(job_id: str) -> dict[str, Any]:
        return _job(server, job_id).status_info()

    @app.get("/jobs/{job_id}/results", tags=["jobs"], responses=ERRORS,
             response_class=JSONResponse)  # fmt: skip
    def results(job_id: str) -> JSONResponse:
        """The polygons (GeoJSON, EPSG:4326), the answer or classes, and links to every file
        the job wrote (label or mask COG, scores COG, GeoPackage, preview, report)."""
        found = _job(server, job_id)
        if found.status == jobstates.FAILED:
            raise Problem(
                (found.error or {}).get("status", 422), found.message,
                (found.error or {}).get("type", "input"), job=job_id,
            )  # fmt: skip
        if found.status != jobstates.SUCCESSFUL or not found.result:
            raise Problem(
                404, f"Job {job_id} has no results yet: it is {found.status}.",
                "result-not-ready",
            )  # fmt: skip
        return JSONResponse(_results(server, found))

    @app.get("/jobs/{job_id}/outputs/{name}", tags=["jobs"], responses=ERRORS,
             response_class=FileResponse)  # fmt: skip
    def output(job_id: str, name: str) -> FileResponse:
        found = _job(server, job_id)
        names = set((found.result or {}).get("outputs", {}).values())
        path = server.jobs.folder_of(job_id) / name
        if found.status != jobstates.SUCCESSFUL or name not in names or not path.is_file():
            raise Problem(404, f"Job {job_id} has no output {name!r}.", "not-found")
        media = MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media, filename=name)

    @app.delete("/jobs/{job_id}", tags=["jobs"], responses=ERRORS)
    def dismiss(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job, or dismiss a finished one: its outputs are
        removed either way."""
        found = server.jobs.cancel(job_id)
        if found is None:
            raise _no_job(job_id)
        return found.status_info()


def _process(server: Server, process_id: str) -> Any:
    if process_id not in server.processes:
        raise Problem(
            404, f"There is no process {process_id!r}; this server offers "
            f"{', '.join(server.processes)}.", "no-such-process",
        )  # fmt: skip
    return server.processes[process_id]


def _no_job(job_id: str) -> Problem:
    return Problem(404, f"There is no job {job_id!r}; GET /jobs lists them.", "no-such-job")


def _job(server: Server, job_id: str) -> Any:
    found = server.store.get(job_id)
    if found is None:
        raise _no_job(job_id)
    return found


def _results(server: Server, job: Any) -> dict[str, Any]:
    import json

    record = job.result
    folder = server.jobs.folder_of(job.id)
    outputs = record.get("outputs", {})
    geojson = None
    if "geojson" in outputs and (folder / outputs["geojson"]).is_file():
        geojson = json.loads((folder / outputs["geojson"]).read_text(encoding="utf-8"))
    links = [
        {"href": f"/jobs/{job.id}/outputs/{name}", "rel": "related", "title":
         OUTPUT_TITLES.get(kind, kind), "kind": kind,
         "type": MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")}
        for kind, name in outputs.items()
    ]  # fmt: skip
    summary = record.get("summary", {})
    return {
        "jobID": job.id, "processID": job.process, "scene": record.get("scene"),
        "geojson": geojson, "answer": summary.get("answer"), "summary": summary,
        "links": links,
    }  # fmt: skip


def _bands(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        bands = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        bands = ()
    if not bands:
        raise InputError(f"`bands` are 1-based band numbers like 4,3,2, not {text!r}.")
    RasterOptions(bands=bands)
    return bands


def _page_policy(basemap: str | None) -> str:
    """The page's Content-Security-Policy: its own files only (and the basemap's host)."""
    images = "'self' data: blob:"
    if basemap:
        from urllib.parse import urlsplit

        parts = urlsplit(basemap.replace("{s}", "a"))
        host = parts.netloc.replace("a.", "*.", 1) if "{s}" in basemap else parts.netloc
        images += f" {parts.scheme}://{host}"
    return (
        f"default-src 'self'; img-src {images}; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


__all__ = ["create_app", "for_api", "scrub"]
