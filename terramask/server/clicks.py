"""Interactive prompts: clicks and boxes on a served scene to GeoJSON polygons, synchronously.

Prompts are placed exactly as `terramask prompt` places them (pixels, or map coordinates in
`crs`, refused with the same messages when outside the scene or on nodata), routed to the
tile that holds them (`pipeline.routing`), and decoded against that tile's embedding from
the `EmbeddingCache`: the first click on a tile encodes it, the next ones only decode.
Nothing is written to disk but the embedding cache.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
from typing import Annotated, Any

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import mapping

from terramask.errors import InputError
from terramask.options import PROMPT_TILING, PolygonOptions, Tiling
from terramask.server.embeddings import EmbeddingCache

Number = Annotated[float, Field(allow_inf_nan=False)]
Pair = Annotated[list[Number], Field(min_length=2, max_length=2)]
Quad = Annotated[list[Number], Field(min_length=4, max_length=4)]
#: At most this many clicks or boxes in one request.
MAX_PROMPTS = 256
#: The parts of one object an answer holds by default: its largest ones (a trained SAM's
#: masks have a few; an untrained or confused one's can have thousands of specks, whose
#: outlines would cost more than the decoder).
MAX_PARTS = 200
#: Decimal places of longitude and latitude in answers (1e-7° is about 1 cm).
WGS84_DECIMALS = 7


class PromptRequest(BaseModel):
    """Clicks and boxes on one scene, as `terramask prompt` takes them."""

    model_config = ConfigDict(extra="forbid")

    points: list[Pair] = Field(
        default_factory=list, max_length=MAX_PROMPTS,
        description="Positive clicks [x, y]: together one object.",
    )  # fmt: skip
    negatives: list[Pair] = Field(
        default_factory=list, max_length=MAX_PROMPTS,
        description="Negative clicks [x, y]: where the object is not.",
    )  # fmt: skip
    boxes: list[Quad] = Field(
        default_factory=list, max_length=MAX_PROMPTS,
        description="Boxes [x1, y1, x2, y2] (pixels: left, top, right, bottom; map: min x, "
        "min y, max x, max y), one object each; a single box joins the clicks.",
    )  # fmt: skip
    crs: str | None = Field(
        None, max_length=10_000,
        description="CRS of the coordinates, e.g. EPSG:4326 (what the page sends); null: "
        "scene pixels (column, row; 0,0 is the top-left corner).",
    )  # fmt: skip
    name: str = Field("object", max_length=200, description="What the objects are called.")
    simplify: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Simplify outlines by this tolerance, in the scene CRS's units.",
    )  # fmt: skip
    max_parts: int = Field(
        MAX_PARTS, ge=1, le=100_000,
        description="Keep each object's largest parts, at most this many (the files of a "
        "`prompt` job keep every part); an object's `parts_left_out` counts the others.",
    )  # fmt: skip


class _Embedded:
    """The segmenter, with the embedding of the image at hand already known."""

    def __init__(self, segmenter: Any, embedding: Any) -> None:
        self._segmenter = segmenter
        self._embedding = embedding
        self.name = getattr(segmenter, "name", "segmenter")

    def embed(self, image: Any) -> Any:
        return self._embedding

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        return self._segmenter.predict(*args, **kwargs)

    def upsample(self, *args: Any, **kwargs: Any) -> Any:
        return self._segmenter.upsample(*args, **kwargs)


def click(
    served: Any,
    request: PromptRequest,
    segmenter: Any,
    cache: EmbeddingCache,
    *,
    tiling: Tiling = PROMPT_TILING,
) -> dict[str, Any]:
    """Segment the objects under `request`'s clicks and boxes on `served`; GeoJSON back
    (its geometries `RawJSON`: serialise the answer with `dumps`).

    Raises:
        InputError: No prompt, a bad CRS or box, a prompt outside the scene or a positive
            click on nodata (the CLI's messages).
    """
    from terramask.methods.interactive import segment_prompts
    from terramask.pipeline.objects import crop_object
    from terramask.pipeline.routing import route_prompts
    from terramask.scene import plan_tiles, prompts_from_options

    started = time.perf_counter()
    if not (request.points or request.negatives or request.boxes):
        raise InputError(
            "No prompt was given: add at least one click (`points`) or box (`boxes`), in "
            "pixels or in map coordinates with `crs`."
        )
    polygons = PolygonOptions(simplify=request.simplify)
    scene = served.scene()
    with served.lock:
        prompts = prompts_from_options(
            scene, points=[tuple(p) for p in request.points],
            negatives=[tuple(p) for p in request.negatives],
            boxes=[tuple(b) for b in request.boxes], crs=request.crs, outside="error",
        )  # fmt: skip
    prompts = [dataclasses.replace(p, name=request.name) for p in prompts]
    plan = plan_tiles(scene.width, scene.height, tiling)
    jobs = route_prompts(prompts, plan, scene.width, scene.height)
    timings = {"embed": 0.0, "decode": 0.0}
    sources = []
    objects = []
    display = (tuple(scene.bands), scene.stretch.description, tuple(scene.stretch.low.tolist()),
               tuple(scene.stretch.high.tolist()))  # fmt: skip
    for job in jobs:
        window = job.window
        key = (served.fingerprint(), display,
               (window.col_off, window.row_off, window.width, window.height), job.out_shape)

        def read(job=job) -> Any:
            with served.lock:
                return scene.read(job.window, out_shape=job.out_shape)

        t = time.perf_counter()
        embedded = cache.get(key, read)
        timings["embed"] += time.perf_counter() - t
        sources.append(embedded.source)
        t = time.perf_counter()
        local = [job.local_prompt(prompts[i]) for i in job.prompt_ids]
        found = segment_prompts(
            _Embedded(segmenter, embedded.embedding), None, local, valid=embedded.valid
        )
        for i, obj in zip(job.prompt_ids, found, strict=True):
            objects.append(crop_object(i + 1, prompts[i].name, obj, job.to_scene))
        timings["decode"] += time.perf_counter() - t
    objects.sort(key=lambda o: o.id)
    t = time.perf_counter()
    features = object_features(scene, objects, polygons, max_parts=request.max_parts, raw=True)
    timings["polygons"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    return {
        "type": "FeatureCollection",
        "features": features,
        "crs": "EPSG:4326" if scene.georeferenced else None,
        "scene": served.id,
        "objects": [_summary(o, f) for o, f in zip(objects, _by_object(objects, features),
                                                   strict=True)],
        "embedding": sources,
        "timings_ms": {k: round(v * 1000, 2) for k, v in timings.items()},
    }


class RawJSON(str):
    """A JSON text put into an answer as it is (see `dumps`)."""


def dumps(answer: dict[str, Any]) -> bytes:
    """`answer` as JSON, its `RawJSON` values spliced in unparsed: a ragged mask's outline
    can be megabytes, which GEOS writes far faster than Python's json would."""
    nonce = secrets.token_hex(8)
    raws: list[str] = []

    def placeholder(value: Any) -> str:
        if isinstance(value, RawJSON):
            raws.append(str(value))
            return f"@@{nonce}:{len(raws) - 1}@@"
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def walk(value: Any) -> Any:
        if isinstance(value, RawJSON):
            return placeholder(value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    text = json.dumps(walk(answer), allow_nan=False)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@{nonce}:{i}@@"', raw, 1)
    return text.encode()


def object_features(
    scene: Any,
    objects: list,
    polygons: PolygonOptions,
    *,
    max_parts: int = MAX_PARTS,
    raw: bool = False,
) -> list[dict]:
    """One GeoJSON feature per object found (its largest `max_parts` parts), in EPSG:4326
    when the scene is georeferenced (to 1e-7°), else in its pixel coordinates. With `raw`,
    geometries are `RawJSON` texts (for `dumps`).

    The parts of one mask never overlap, so they make a valid MultiPolygon as they come from
    the raster: no union is needed, which keeps a click fast on ragged masks.
    """
    from affine import Affine
    from rasterio.features import shapes
    from scipy import ndimage

    from terramask.scene.polygons import area_m2, simplified, to_pyproj
    from terramask.scene.vectors import to_wgs84

    crs = to_pyproj(scene.crs) if scene.georeferenced else None
    rows = []
    for obj in objects:
        if obj.is_empty:
            continue
        # outline only the mask's bounding window: tracing costs what the raster measures
        ys, xs = np.flatnonzero(obj.mask.any(axis=1)), np.flatnonzero(obj.mask.any(axis=0))
        top, left = int(ys[0]), int(xs[0])
        window = obj.mask[top : int(ys[-1]) + 1, left : int(xs[-1]) + 1]
        mask, left_out = _largest_parts(window, max_parts, ndimage)
        to_map = scene.transform @ obj.to_scene @ Affine.translation(left, top)
        parts = [
            _polygon(geometry["coordinates"])
            for geometry, _ in shapes(mask, mask=mask > 0, connectivity=4, transform=to_map)
        ]
        geometry = parts[0] if len(parts) == 1 else shapely.multipolygons(parts)
        if polygons.simplify:
            geometry = simplified(geometry, polygons.simplify)
            if geometry is None:
                continue
        area = area_m2(geometry, crs) if crs is not None else None
        rows.append((obj, geometry, area, left_out))
    geometries = [row[1] for row in rows]
    if crs is not None and geometries:
        geometries = list(to_wgs84(geometries, scene.crs))
        geometries = list(shapely.transform(
            np.asarray(geometries, dtype=object), lambda xy: np.round(xy, WGS84_DECIMALS)
        ))  # fmt: skip
    features = []
    for (obj, _, area, left_out), geometry in zip(rows, geometries, strict=True):
        features.append({
            "type": "Feature",
            "geometry": RawJSON(shapely.to_geojson(geometry)) if raw else mapping(geometry),
            "properties": {
                "object_id": obj.id, "name": obj.name, "score": round(float(obj.score), 4),
                "area_m2": None if area is None else round(area, 3),
                "parts_left_out": left_out,
            },
        })  # fmt: skip
    return features


def _polygon(rings: list) -> shapely.Polygon:
    """A polygon from GeoJSON rings, built by shapely's array functions (ragged masks have
    thousands of holes; `shape()` builds each ring in Python)."""
    arrays = [np.asarray(ring, dtype=np.float64) for ring in rings]
    if len(arrays) == 1:
        return shapely.polygons(arrays[0])
    which = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    shell, *holes = shapely.linearrings(np.concatenate(arrays), indices=which)
    return shapely.polygons(shell, holes=holes)


def _largest_parts(mask: np.ndarray, keep: int, ndimage: Any) -> tuple[np.ndarray, int]:
    """The mask (uint8) with only its `keep` largest 4-connected parts, and how many went."""
    labels, count = ndimage.label(mask)
    if count <= keep:
        return mask.astype(np.uint8), 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    kept = np.zeros(len(sizes), dtype=bool)
    kept[np.argsort(sizes)[::-1][:keep]] = True
    kept[0] = False
    return kept[labels].astype(np.uint8), count - keep


def _by_object(objects: list, features: list[dict]) -> list[dict | None]:
    by_id = {f["properties"]["object_id"]: f for f in features}
    return [by_id.get(o.id) for o in objects]


def _summary(obj: Any, feature: dict | None) -> dict[str, Any]:
    pixels = int(obj.mask.sum())
    col0, row0, col1, row1 = obj.scene_bounds()
    score = float(obj.score)
    return {
        "id": obj.id,
        "name": obj.name,
        "score": round(score, 4) if math.isfinite(score) else None,
        "empty": pixels == 0,
        "area_m2": None if feature is None else feature["properties"]["area_m2"],
        "parts_left_out": 0 if feature is None else feature["properties"]["parts_left_out"],
        "bbox_px": [round(v, 2) for v in (col0, row0, col1, row1)] if pixels else None,
    }
