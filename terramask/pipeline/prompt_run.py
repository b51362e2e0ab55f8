"""The `prompt` run: clicks and boxes on a scene of any size to a georeferenced mask, polygons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terramask.methods.interactive import segment_prompts
from terramask.methods.protocols import Segmenter
from terramask.pipeline.objects import FoundObject, crop_object, paint_block
from terramask.pipeline.routing import route_prompts
from terramask.scene import (
    ObjectPrompt,
    OutputSet,
    RasterWriter,
    Scene,
    atomic_output,
    plan_tiles,
    polygonize,
    write_preview,
    write_vectors,
)

Progress = Callable[[str, int, int], None]

#: Outputs of a prompt run, in the order they are written.
PROMPT_OUTPUTS = ("mask", "score", "gpkg", "geojson", "preview", "report")


@dataclass
class PromptResult:
    """What a prompt run produced: file paths, one summary per object, timings."""

    outputs: dict[str, Path]
    objects: list[dict]
    scene: dict
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "objects": self.objects,
            "scene": self.scene,
            "timings_s": self.timings,
        }


def run_prompts(
    scene: Scene,
    prompts: Sequence[ObjectPrompt],
    segmenter: Segmenter,
    outputs: OutputSet,
    *,
    tile_size: int = 1024,
    overlap: int = 256,
    simplify: float | None = None,
    progress: Progress | None = None,
) -> PromptResult:
    """Segment every prompt on the window that holds it, then write all outputs."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    plan = plan_tiles(scene.width, scene.height, tile_size, overlap)
    jobs = route_prompts(prompts, plan, scene.width, scene.height)
    objects: list[FoundObject] = []
    for done, job in enumerate(jobs):
        if progress:
            progress("segment", done, len(jobs))
        window = scene.read(job.window, out_shape=job.out_shape)
        local = [job.local_prompt(prompts[i]) for i in job.prompt_ids]
        found = segment_prompts(segmenter, window.image, local, valid=window.valid)
        for i, obj in zip(job.prompt_ids, found, strict=True):
            objects.append(crop_object(i + 1, prompts[i].name, obj, job.to_scene))
    if progress:
        progress("segment", len(jobs), len(jobs))
    objects.sort(key=lambda o: o.id)
    timings["segment"] = time.perf_counter() - started

    t = time.perf_counter()
    written = _write_rasters(scene, objects, outputs, progress)
    timings["rasters"] = time.perf_counter() - t

    t = time.perf_counter()
    features = _polygons(scene, objects, simplify)
    written += write_vectors(
        features,
        crs=scene.crs,
        gpkg_path=outputs.path("gpkg"),
        geojson_path=outputs.path("geojson") if scene.georeferenced else None,
        overwrite=outputs.overwrite,
    )
    timings["vectors"] = time.perf_counter() - t

    t = time.perf_counter()
    write_preview(
        outputs.path("preview"),
        scene,
        outputs.path("mask"),
        colormap=object_colormap(len(prompts)),
        overwrite=outputs.overwrite,
    )
    written.append(outputs.path("preview"))
    timings["preview"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    areas: dict[int, float | None] = {}
    for f in features:
        oid = f.properties["object_id"]
        areas[oid] = None if f.area_m2 is None else (areas.get(oid) or 0.0) + f.area_m2
    summaries = [_summary(scene, prompts[o.id - 1], o, areas.get(o.id)) for o in objects]
    result = PromptResult(
        outputs={_kind(outputs, p): p for p in written},
        objects=summaries,
        scene=scene_summary(scene),
        timings=timings,
    )
    report = outputs.path("report")
    with atomic_output(report, overwrite=outputs.overwrite) as tmp:
        Path(tmp).write_text(
            json.dumps({**result.to_dict(), "segmenter": segmenter.name}, indent=2)
        )
    result.outputs["report"] = report
    return result


def _write_rasters(
    scene: Scene, objects: list[FoundObject], outputs: OutputSet, progress: Progress | None
) -> list[Path]:
    n = len(objects)
    dtype = "uint8" if n < 255 else "uint16"
    nodata = 255 if dtype == "uint8" else 65535
    common = dict(
        width=scene.width,
        height=scene.height,
        crs=scene.crs,
        transform=scene.transform,
        overwrite=outputs.overwrite,
    )
    with (
        RasterWriter(
            outputs.path("mask"),
            dtype=dtype,
            nodata=nodata,
            colormap=object_colormap(n),
            **common,
        ) as mask_writer,
        RasterWriter(
            outputs.path("score"), dtype="float32", nodata=float("nan"), **common
        ) as score_writer,
    ):
        blocks = list(mask_writer.blocks())
        for done, block in enumerate(blocks):
            if progress:
                progress("write", done, len(blocks))
            valid = scene.read_valid(block)
            ids, prob = paint_block(objects, block)
            mask_writer.write(np.where(valid, ids, nodata).astype(dtype), block)
            score_writer.write(np.where(valid, prob, np.nan).astype("float32"), block)
    if progress:
        progress("write", len(blocks), len(blocks))
    return [outputs.path("mask"), outputs.path("score")]


def _polygons(scene: Scene, objects: list[FoundObject], simplify: float | None) -> list:
    features = []
    for obj in objects:
        if obj.is_empty:
            continue
        crop_transform = scene.transform @ obj.to_scene
        for feature in polygonize(
            obj.mask.astype(np.uint8),
            crop_transform,
            names={1: obj.name},
            crs=scene.crs,
            scores={1: obj.score},
            simplify=simplify,
        ):
            feature.properties["object_id"] = obj.id
            features.append(feature)
    return features


def object_colormap(n: int) -> dict[int, tuple[int, int, int, int]]:
    """Distinct colours for object ids 1..n (0 transparent), stable across runs."""
    rng = np.random.default_rng(7)
    colours = {0: (0, 0, 0, 0)}
    for i in range(1, n + 1):
        r, g, b = (rng.integers(64, 256, size=3)).tolist()
        colours[i] = (r, g, b, 255)
    return colours


def scene_summary(scene: Scene) -> dict:
    return {
        "source": str(scene.source),
        "width": scene.width,
        "height": scene.height,
        "crs": scene.crs.to_string() if scene.crs else None,
        "transform": list(scene.transform)[:6],
        "bands": list(scene.bands),
        "georeferenced": scene.georeferenced,
    }


def _summary(scene: Scene, prompt: ObjectPrompt, obj: FoundObject, area_m2: float | None) -> dict:
    pixels = int(obj.mask.sum())
    col0, row0, col1, row1 = obj.scene_bounds()
    summary = {
        "id": obj.id,
        "name": obj.name,
        "score": round(obj.score, 4),
        "empty": obj.is_empty,
        "area_m2": area_m2,
        "bbox_px": [round(v, 2) for v in (col0, row0, col1, row1)] if pixels else None,
        "prompt_px": {
            "points": np.asarray(prompt.points).round(3).tolist(),
            "labels": np.asarray(prompt.labels).tolist(),
            "box": None if prompt.box is None else np.asarray(prompt.box).round(3).tolist(),
        },
    }
    if scene.georeferenced:
        points = [scene.transform @ (x, y) for x, y in np.asarray(prompt.points).reshape(-1, 2)]
        summary["prompt_map"] = {"points": [[round(x, 3), round(y, 3)] for x, y in points]}
    return summary


def _kind(outputs: OutputSet, path: Path) -> str:
    for kind in PROMPT_OUTPUTS:
        if outputs.path(kind) == path:
            return kind
    return path.suffix.lstrip(".")
