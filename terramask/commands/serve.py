"""`terramask serve`: the scenes on a map in the browser, and the REST service behind it.

`command()` builds the click command from the CLI's helpers (imported when it is called, so
that `terramask.cli` can register it at its end without a circular import, however the CLI
was started).
"""

from __future__ import annotations

from typing import Any

import click

from terramask.errors import InputError
from terramask.options import ServerOptions

_D = ServerOptions.__dataclass_fields__


def _default(name: str) -> str:
    return str(_D[name].default)


def command() -> click.Command:
    """The `serve` command."""
    from terramask.cli import (
        built,
        common_options,
        emit,
        mllm_from,
        mllm_options,
        model_options,
        models_from,
        option,
        raster_from,
        raster_options,
        stderr,
        stdout,
    )

    @click.command("serve")
    @click.argument("scenes", nargs=-1)
    @option("ServerOptions.root", "--root", type=click.Path(file_okay=False),
            help="Folder whose rasters and STAC items clients may open by relative path; "
            "nothing outside it is reachable.")  # fmt: skip
    @option("ServerOptions.host", "--host",
            help=f"Address to listen on; other than loopback needs --token "
            f"[default: {_default('host')}].")  # fmt: skip
    @option("ServerOptions.port", "--port", type=int, help=f"[default: {_default('port')}]")
    @option("ServerOptions.token", "--token", envvar="TERRAMASK_TOKEN", show_envvar=True,
            help="Bearer token every API call must carry (at least 16 characters).")  # fmt: skip
    @option("ServerOptions.cors", "--cors", multiple=True, metavar="ORIGIN",
            help="Let pages of this origin call the API (repeatable); off by default.")  # fmt: skip
    @option("ServerOptions.basemap", "--basemap", metavar="URL",
            help="XYZ basemap URL template ({z}/{x}/{y}) under the scenes; none by default "
            "(offline).")  # fmt: skip
    @option("ServerOptions.output", "-o", "--output",
            help=f"Folder of the job store and job outputs [default: {_default('output')}].")
    @option("ServerOptions.max_request_bytes", "--max-request-size", "max_request_bytes",
            type=int, metavar="BYTES",
            help=f"Largest request body [default: {_default('max_request_bytes')}].")  # fmt: skip
    @option("ServerOptions.job_workers", "--job-workers", type=int,
            help=f"Jobs run at once [default: {_default('job_workers')}].")  # fmt: skip
    @option("ServerOptions.embedding_memory", "--embedding-memory", type=int, metavar="TILES",
            help=f"Tile embeddings kept in memory [default: {_default('embedding_memory')}].")
    @option("ServerOptions.embedding_cache", "--embedding-cache", type=click.Path(file_okay=False),
            help="Folder of the on-disk embedding cache [default: $TERRAMASK_CACHE/embeddings].")
    @option("ServerOptions.embedding_cache_mb", "--embedding-cache-mb", type=int,
            help="Size the on-disk embedding cache is kept under, MB (0: off) "
            f"[default: {_default('embedding_cache_mb')}].")  # fmt: skip
    @model_options("segmenter", "clip", "sam3", "featup")
    @mllm_options
    @raster_options
    @common_options
    def serve(scenes: tuple[str, ...], as_json: bool, debug: bool, **kw: Any) -> None:
        """Show SCENES (and any scene under --root) on a map at http://HOST:PORT/ and serve the API.

        Click, draw boxes, name classes or ask questions on the page; the same is a REST API
        (OpenAPI at /docs): POST /scenes/{id}/prompt answers clicks at once, segment / ask /
        prompt run as jobs (OGC API - Processes) kept in OUTPUT/jobs.sqlite, so a restarted
        server lists finished jobs and resumes unfinished ones. Needs the `server` extra.
        """
        try:
            import uvicorn

            from terramask.server import create_app
        except ImportError as exc:
            raise InputError(
                f"terramask serve needs the server extra ({exc.name} is missing): "
                "pip install 'terramask[server]'."
            ) from None
        names = (
            "root", "host", "port", "token", "cors", "basemap", "output", "max_request_bytes",
            "job_workers", "embedding_memory", "embedding_cache", "embedding_cache_mb",
        )  # fmt: skip
        values = {name: kw.pop(name) for name in names}
        values["cors"] = values["cors"] or None
        options = built(ServerOptions, {**values, "scenes": scenes})
        models = models_from(kw)
        mllm = mllm_from(kw)
        if mllm.url and not mllm.model:  # else every ask job would fail on it
            raise InputError(
                f"`MLLMOptions.url` {mllm.url} needs `MLLMOptions.model`: the model name that "
                "endpoint serves (e.g. gpt-5, or the name a vLLM/Ollama server was started with)."
            )
        raster = raster_from(kw)
        from terramask.models import load_segmenter
        from terramask.server.scenes import SceneRegistry

        # the scenes, then the segmenter: each fails now, with the CLI's message, before
        # anything is written (the server's model hub reuses the loaded model)
        SceneRegistry(options.scenes, options.root, raster)
        load_segmenter(models.segmenter, device=models.device)
        _check_address(options.host, options.port)
        app = create_app(
            options, models=models, mllm=mllm if (mllm.url or mllm.model) else None, raster=raster
        )
        server = app.state.server
        host = options.host if ":" not in options.host else f"[{options.host}]"
        url = f"http://{host}:{options.port}/"
        listed = [s.id for s in server.scenes.listing()]
        info = {"url": url, "docs": url + "docs", "scenes": listed, "output": str(options.output),
                "resumed_jobs": len(server.store.list(("accepted",)))}  # fmt: skip

        def human() -> None:
            stdout.print(
                f"Serving {len(listed)} scene{'s' if len(listed) != 1 else ''} at {url} "
                f"(API docs: {url}docs); jobs in {options.output}. Ctrl-C stops.", highlight=False,
            )  # fmt: skip
            if info["resumed_jobs"]:
                stderr.print(f"resuming {info['resumed_jobs']} unfinished jobs", highlight=False)

        emit(info, as_json, human)
        uvicorn.run(app, host=options.host, port=options.port, log_level="warning",
                    server_header=False)  # fmt: skip

    return serve


def _check_address(host: str, port: int) -> None:
    """Refuse an address that cannot be listened on (a port in use, a host that is not this
    machine's) before anything is written or announced, naming the flag; uvicorn would
    otherwise print its own error after "Serving ..." (the check binds as uvicorn does)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise InputError(f"--host {host} cannot be listened on ({exc}).") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(
                    f"--port {port} is in use on {host} (perhaps by another terramask serve): "
                    "choose another --port, or stop the program that holds it."
                ) from None
            raise InputError(
                f"Cannot listen on --host {host} --port {port} ({exc.strerror or exc})."
            ) from None
