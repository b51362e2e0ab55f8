"""`terramask serve`: a map of the scenes in the browser and a REST service (the `server` extra:
FastAPI, uvicorn, rio-tiler).

`create_app` builds the application; `terramask.commands.serve` runs it with uvicorn. Modules:
`app` (routes), `scenes` (which scenes, and the root folder's boundary), `tiles` (XYZ tiles
through rio-tiler), `clicks` (synchronous prompts), `embeddings` (the tile-embedding cache in
memory and on disk), `jobs` (the SQLite job store and workers), `processes` (segment, ask,
prompt as OGC API – Processes), `security` (token, size limits), `problems` (RFC 9457 errors),
and `static/` (the page, with Leaflet and Swagger UI vendored by `web/`).
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """See `terramask.server.app.create_app` (imported on first use: FastAPI is an extra)."""
    from terramask.server.app import create_app as create

    return create(*args, **kwargs)


__all__ = ["create_app"]
