"""The `prompt` run: clicks and boxes on a scene of any size to a georeferenced mask, polygons."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terramask.methods.interactive import segment_prompts
from terramask.options import PROMPT_TILING, PolygonOptions, Tiling
from terramask.pipeline.object_outputs import (
    OBJECT_OUTPUTS,
    map_box,
    map_point,
    scene_summary,
    write_object_outputs,
    write_report,
)
from terramask.pipeline.objects import FoundObject, crop_object
from terramask.pipeline.routing import route_prompts
from terramask.protocols import Progress, Segmenter
from terramask.scene import ObjectPrompt, OutputSet, Scene, plan_tiles
from terramask.scene.writers import Mark

PROMPT_OUTPUTS = OBJECT_OUTPUTS


@dataclass
class PromptResult:
    """What a prompt run produced: file paths (layers and report; their sidecars apart), one
    summary per object, timings.

    Boxes in map units are [minx, miny, maxx, maxy] (`map_box`), which `boxes` with `crs`
    takes back."""

    outputs: dict[str, Path]
    objects: list[dict]
    scene: dict
    timings: dict[str, float] = field(default_factory=dict)
    sidecars: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "sidecars": {k: str(v) for k, v in self.sidecars.items()},
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
    tiling: Tiling = PROMPT_TILING,
    polygons: PolygonOptions = PolygonOptions(),
    settings: dict | None = None,
    progress: Progress | None = None,
) -> PromptResult:
    """Segment every prompt on the window that holds it, then write all outputs.

    `settings` (what the run was asked) go into the report, so that a later run can tell
    whether these outputs answer its own settings."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    plan = plan_tiles(scene.width, scene.height, tiling)
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

    with outputs.writing():
        written = write_object_outputs(
            scene, objects, outputs, polygons=polygons, marks=prompt_marks(prompts),
            progress=progress,
        )  # fmt: skip
        timings.update(written.timings)
        timings["total"] = time.perf_counter() - started
        summaries = [
            _summary(scene, prompts[o.id - 1], o, written.areas.get(o.id)) for o in objects
        ]
        result = PromptResult(
            outputs={**written.paths, "report": outputs.path("report")},
            objects=summaries,
            scene=scene_summary(scene),
            timings=timings,
            sidecars=written.sidecars,
        )
        write_report(
            outputs, {**result.to_dict(), "segmenter": segmenter.name, "settings": settings}
        )
        outputs.commit()
    return result


def prompt_marks(prompts: Sequence[ObjectPrompt]) -> list[Mark]:
    """The prompts as the preview draws them: clicks (positive or negative) and boxes."""
    marks = []
    for prompt in prompts:
        if prompt.box is not None:
            marks.append(Mark("box", tuple(prompt.box)))
        for xy, label in zip(np.asarray(prompt.points).reshape(-1, 2), prompt.labels, strict=True):
            marks.append(Mark("positive" if label else "negative", tuple(xy)))
    return marks


def _summary(scene: Scene, prompt: ObjectPrompt, obj: FoundObject, area_m2: float | None) -> dict:
    """One object in the report: pixel boxes are [x1, y1, x2, y2] (column, row); map boxes
    [minx, miny, maxx, maxy] in the scene's CRS (`map_box`)."""
    pixels = int(obj.mask.sum())
    col0, row0, col1, row1 = obj.scene_bounds()
    bbox_px = [round(v, 2) for v in (col0, row0, col1, row1)] if pixels else None
    summary = {
        "id": obj.id,
        "name": obj.name,
        "score": round(obj.score, 4),
        "empty": obj.is_empty,
        "area_m2": area_m2,
        "bbox_px": bbox_px,
        "prompt_px": {
            "points": np.asarray(prompt.points).round(3).tolist(),
            "labels": np.asarray(prompt.labels).tolist(),
            "box": None if prompt.box is None else np.asarray(prompt.box).round(3).tolist(),
        },
    }
    if scene.georeferenced:
        t = scene.transform
        summary["bbox_map"] = None if bbox_px is None else map_box(t, (col0, row0, col1, row1))
        summary["prompt_map"] = {
            "points": [map_point(t, xy) for xy in np.asarray(prompt.points).reshape(-1, 2)],
            "box": None if prompt.box is None else map_box(t, prompt.box),
        }
    return summary
