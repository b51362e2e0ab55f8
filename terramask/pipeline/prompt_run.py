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
    scene_summary,
    write_object_outputs,
    write_report,
)
from terramask.pipeline.objects import FoundObject, crop_object
from terramask.pipeline.routing import route_prompts
from terramask.protocols import Progress, Segmenter
from terramask.scene import ObjectPrompt, OutputSet, Scene, plan_tiles

PROMPT_OUTPUTS = OBJECT_OUTPUTS


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
            scene, objects, outputs, polygons=polygons, progress=progress
        )
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
        )
        write_report(
            outputs, {**result.to_dict(), "segmenter": segmenter.name, "settings": settings}
        )
        outputs.commit()
    return result


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
