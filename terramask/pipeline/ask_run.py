"""The `ask` run: a question about a scene of any size to a mask, polygons and an answer.

The MLLM sees an overview of the scene (downsampled to its limit); the boxes or clicks it
answers with are mapped to scene pixels and segmented at full resolution on the windows they
cover (decimated to one tile when larger). Engines: GeoSeg's refined box and dual routes,
MLLM clicks into SAM, or the MLLM box straight into SAM (the ablation baseline).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from terramask.errors import TerraMaskError
from terramask.methods.geoseg import (
    GEOSEG_REFINEMENT,
    BoxRefinement,
    DualRoute,
    geoseg_configuration,
    refine_box,
    select_boxes,
)
from terramask.methods.interactive import ObjectMask, PointBoxPrompt, segment_prompts
from terramask.options import AskEngine, AskOptions, PolygonOptions, Tiling
from terramask.pipeline.engines import AskModels
from terramask.pipeline.object_outputs import (
    OBJECT_OUTPUTS,
    map_box,
    map_point,
    scene_summary,
    write_object_outputs,
    write_report,
)
from terramask.pipeline.objects import FoundObject, crop_object, paint_block
from terramask.pipeline.routing import WindowJob, job_for_bounds
from terramask.protocols import MLLM, Progress, SceneReader, Segmenter
from terramask.scene import OutputSet, Scene
from terramask.scene.writers import Mark

ASK_OUTPUTS = OBJECT_OUTPUTS
#: Context around a box (box engine) or a click cluster (clicks engine), as a fraction.
CONTEXT = 0.25
#: Smallest window SAM gets around clicks, in scene pixels.
MIN_CLICK_WINDOW = 256
#: Logit magnitude given to fused masks, which have no logits of their own.
FUSED_LOGIT = 10.0


@dataclass
class AskResult:
    """The answer, what the model said and how it was read, the files written (layers and
    report; their sidecars apart).

    In `details`, boxes are [x1, y1, x2, y2] in scene pixels (`*_px`) and [minx, miny, maxx,
    maxy] in the scene's CRS (`*_map`), which `prompt`'s `boxes` with `crs` take back."""

    answer: str
    found: bool
    outputs: dict[str, Path]
    details: dict
    timings: dict[str, float] = field(default_factory=dict)
    sidecars: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "found": self.found,
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "sidecars": {k: str(v) for k, v in self.sidecars.items()},
            **self.details,
            "timings_s": self.timings,
        }


@dataclass
class Located:
    """What an ask found before anything is written: objects (id 1) and how they were read."""

    objects: list[FoundObject]
    name: str
    answer: str | None
    details: dict
    timings: dict[str, float]
    #: why a reply that named a target gave nothing to segment (None when it did, or said none)
    unused: str | None = None


def run_ask(
    scene: Scene,
    question: str,
    mllm: MLLM,
    models: AskModels,
    outputs: OutputSet,
    *,
    engine: AskEngine = "geoseg",
    refinement: BoxRefinement = GEOSEG_REFINEMENT,
    ask_options: AskOptions = AskOptions(),
    tile: int = Tiling.tile,
    polygons: PolygonOptions = PolygonOptions(),
    settings: dict | None = None,
    progress: Progress | None = None,
    located: Located | None = None,
) -> AskResult:
    """Ask, read the reply, segment what it points at, write the outputs and a report
    (which records `settings`, what the run was asked). `located`: what an engine that
    needs no MLLM found already (UniGeoSeg, #16); only the outputs are written."""
    started = time.perf_counter()
    if located is None:
        located = locate(
            scene, question, mllm, models, engine=engine, refinement=refinement,
            ask_options=ask_options, tile=tile, progress=progress,
        )  # fmt: skip
    else:  # UniGeoSeg (#16): its time was spent before
        started -= sum(located.timings.values())
    timings = located.timings
    found = any(not o.is_empty for o in located.objects)
    if located.answer:
        answer = located.answer
    elif found:
        answer = f"Found {located.name}."
    elif located.unused:
        answer = f"Nothing was segmented: {located.unused}"
    else:
        answer = f"No {located.name} was found in the scene."
    with outputs.writing():
        written = write_object_outputs(
            scene, located.objects, outputs, polygons=polygons,
            marks=ask_marks(located.details), progress=progress,
        )  # fmt: skip
        timings.update(written.timings)
        timings["total"] = time.perf_counter() - started
        details = {
            **located.details, "area_m2": written.areas.get(1), "scene": scene_summary(scene)
        }
        paths = {**written.paths, "report": outputs.path("report")}
        result = AskResult(answer, found, paths, details, timings, written.sidecars)
        write_report(outputs, {**result.to_dict(), "settings": settings})
        outputs.commit()
    return result


def locate(
    scene: SceneReader,
    question: str,
    mllm: MLLM,
    models: AskModels,
    *,
    engine: AskEngine = "geoseg",
    refinement: BoxRefinement = GEOSEG_REFINEMENT,
    ask_options: AskOptions = AskOptions(),
    tile: int = Tiling.tile,
    progress: Progress | None = None,
) -> Located:
    """Show the MLLM the overview, read its reply and segment what it points at.

    `scene` is a raster `Scene` or an in-memory `ArrayScene`: anything that reads windows.
    Windows larger than `tile` pixels are segmented decimated to it.
    """
    from terramask.methods.replies import parse_reply

    started = time.perf_counter()
    segmenter = models.segmenter
    tile_size = tile
    shown, prompt = mllm_request(scene, question, mllm, engine=engine, ask_options=ask_options)
    to_scene = np.array([scene.width / shown.shape[1], scene.height / shown.shape[0]])
    if progress:
        progress("ask", 0, 1)
    reply = mllm.ask(shown, prompt)
    parsed = parse_reply(reply, shown.shape[:2], max_objects=ask_options.max_objects)
    if progress:
        progress("ask", 1, 1)
    timings = {"mllm": time.perf_counter() - started}

    t = time.perf_counter()
    name = parsed.entity or "target"
    boxes = [np.asarray(b, dtype=np.float64) * np.tile(to_scene, 2) for b in parsed.boxes]
    points = np.asarray(parsed.points, dtype=np.float64).reshape(-1, 2) * to_scene
    details: dict = {
        "question": question,
        "engine": engine,
        "mllm": mllm.name,
        "segmenter": segmenter.name,
        "reply": reply.text,
        "frame": reply.frame,
        "shown_size": list(reply.shown_size),
        "entity": parsed.entity,
        "warnings": list(parsed.warnings),
        "out_of_frame": parsed.out_of_frame,
        "suspected_frame": parsed.suspected_frame,
        "boxes": [],
        "points": [],
    }
    objects: list[FoundObject] = []
    if not parsed.no_target:
        if engine == "geoseg":
            route = models.route or DualRoute(segmenter)
            chosen = select_boxes(zip(boxes, parsed.boxes, strict=True), ask_options.boxes)
            for box, shown_box in chosen:
                refined = refine_box(box, (scene.height, scene.width), refinement)
                details["boxes"].append(_box_record(scene, box, refined))
                _note_degenerate(details, shown_box)
                job = job_for_bounds(  # the refined box itself, as the reference crops it
                    tuple(refined), tile_size, scene.width, scene.height, widen=False
                )
                window = scene.read(job.window, out_shape=job.out_shape)
                result = route.segment_crop(window.image, name)
                details["boxes"][-1]["routes"] = result.record()
                mask = result.mask & window.valid
                logits = np.where(mask, FUSED_LOGIT, -FUSED_LOGIT).astype(np.float32)
                found = ObjectMask(mask, logits, result.score)
                objects.append(crop_object(1, name, found, job.to_scene))
        elif engine == "box":
            chosen = select_boxes(zip(boxes, parsed.boxes, strict=True), ask_options.boxes)
            for box, shown_box in chosen:
                details["boxes"].append(_box_record(scene, box, None))
                if _note_degenerate(details, shown_box) == "zero_area":  # a click at its centre
                    centre = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
                    job = _context_job(box, tile_size, scene, minimum=MIN_CLICK_WINDOW)
                    prompt_box = PointBoxPrompt(centre, np.ones(1, np.int64))
                else:
                    job = _context_job(box, tile_size, scene)
                    prompt_box = PointBoxPrompt(
                        np.zeros((0, 2)), np.zeros(0, np.int64), box=box
                    )
                objects += _segment(scene, segmenter, job, prompt_box, name)
        elif engine == "clicks" and len(points):
            labels = np.asarray(parsed.point_labels, dtype=np.int64)
            if (labels == 1).any():
                details["points"] = _point_records(scene, points, labels)
                x0, y0 = points.min(axis=0)
                x1, y1 = points.max(axis=0)
                job = _context_job(np.array([x0, y0, x1, y1]), tile_size, scene,
                                   minimum=MIN_CLICK_WINDOW)  # fmt: skip
                click_prompt = PointBoxPrompt(points, labels)
                objects += _segment(scene, segmenter, job, click_prompt, name)
    timings["segment"] = time.perf_counter() - t
    if engine == "geoseg":
        published, differences = geoseg_configuration(
            models.route, refinement, ask_options.boxes, mllm=mllm.name
        )
        details["published_configuration"] = {"matches": published, "differences": differences}
    if len(boxes) > len(details["boxes"]) and engine != "clicks":
        details["warnings"].append(
            f"The model gave {len(boxes)} boxes; the first was segmented, as GeoSeg's "
            "reference does (`AskOptions.boxes` all segments their union)."
        )
    unused = None if parsed.no_target or objects else _nothing_used(engine, parsed)
    flat = [b for b in details["boxes"] if "zero_area" in b]
    if flat and len(flat) == len(details["boxes"]) and all(o.is_empty for o in objects):
        unused = (
            f"the model's box had {flat[0]['zero_area']} (it gave a point or a line, not a "
            "box), and nothing was found around it."
        )
    if unused:
        details["warnings"].append(unused)
    return Located(objects, name, parsed.answer or None, details, timings, unused)


#: A box thinner than this (pixels of the image the model saw) is a line, not a box.
THIN_BOX_PX = 2.0


def _note_degenerate(details: dict, shown_box: object) -> str | None:
    """Mark a box with no area ("zero_area") or one a line thin ("thin") in its record and the
    warnings, judged in the image the model saw; return which, or None for a proper box."""
    from terramask.methods.geoseg import zero_area

    x1, y1, x2, y2 = (float(v) for v in shown_box)
    record = details["boxes"][-1]
    flat = zero_area((x1, y1, x2, y2))
    if flat:
        record["zero_area"] = flat
        said = f"has {flat}"
    elif min(x2 - x1, y2 - y1) < THIN_BOX_PX:
        record["thin"] = f"{x2 - x1:g} × {y2 - y1:g} px in the image shown"
        said = f"is thin ({record['thin']}): a line rather than a box"
    else:
        return None
    details["warnings"].append(
        f"The model's box {record['mllm_px']} {said}; it was segmented in a window of context "
        "around it."
    )
    return "zero_area" if flat else "thin"


def _nothing_used(engine: str, parsed: object) -> str:
    """Why a reply that did not say "no such object" gave nothing to segment."""
    boxes, points = len(parsed.boxes), len(parsed.points)
    held = f"{boxes} box{'es' if boxes != 1 else ''} and {points} click{'s' if points != 1 else ''}"
    if engine == "clicks":
        if points:
            return (
                "the model gave only negative clicks (where the object is not), so nothing "
                "was segmented."
            )
        return (
            f"the model's reply held {held}; `engine` clicks segments clicks only, so nothing "
            "was segmented (`engine` box or geoseg use boxes)."
        )
    return (
        f"the model's reply held {held}; `engine` {engine} segments boxes only, so nothing was "
        "segmented" + (" (`engine` clicks uses clicks)." if points else ".")
    )


def _context_job(
    box: np.ndarray, tile_size: int, scene: SceneReader, minimum: float = 0.0
) -> WindowJob:
    """A window around a box with CONTEXT on every side and at least `minimum` pixels."""
    x0, y0, x1, y1 = box
    pad_x = max((x1 - x0) * CONTEXT, (minimum - (x1 - x0)) / 2, 0)
    pad_y = max((y1 - y0) * CONTEXT, (minimum - (y1 - y0)) / 2, 0)
    bounds = (x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y)
    return job_for_bounds(bounds, tile_size, scene.width, scene.height)


def _segment(
    scene: SceneReader, segmenter: Segmenter, job: WindowJob, prompt: PointBoxPrompt, name: str
) -> list[FoundObject]:
    """One SAM prompt (in scene pixels) on a window, as a found object with id 1."""
    window = scene.read(job.window, out_shape=job.out_shape)
    to_local = ~job.to_scene
    points = np.array([to_local @ tuple(p) for p in prompt.points]).reshape(-1, 2)
    box = None
    if prompt.box is not None:
        x1, y1, x2, y2 = prompt.box
        box = np.array([*(to_local @ (x1, y1)), *(to_local @ (x2, y2))])
    local = PointBoxPrompt(points, prompt.labels, box=box)
    [found] = segment_prompts(segmenter, window.image, [local], valid=window.valid)
    return [crop_object(1, name, found, job.to_scene)]


def _box_record(scene: SceneReader, box: np.ndarray, refined: np.ndarray | None) -> dict:
    """A box as read from the reply (and refined): [x1, y1, x2, y2] in scene pixels, and, on
    georeferenced scenes, [minx, miny, maxx, maxy] in the scene's CRS (`map_box`)."""
    record = {"mllm_px": np.round(box, 2).tolist()}
    if refined is not None:
        record["refined_px"] = np.round(refined, 2).tolist()
    if scene.georeferenced:
        for key in list(record):
            record[key.replace("_px", "_map")] = map_box(scene.transform, record[key])
    return record


def _point_records(scene: SceneReader, points: np.ndarray, labels: np.ndarray) -> list[dict]:
    records = []
    for (x, y), label in zip(points, labels, strict=True):
        record = {"px": [round(float(x), 2), round(float(y), 2)], "label": int(label)}
        if scene.georeferenced:
            record["map"] = map_point(scene.transform, (x, y))
        records.append(record)
    return records


def ask_marks(details: dict) -> list[Mark]:
    """What the preview draws of a reply: the MLLM's boxes and their refinements, or its
    clicks (positive and negative), from `locate`'s details."""
    marks = []
    for record in details.get("boxes", []):
        marks.append(Mark("mllm_box", tuple(record["mllm_px"])))
        if "refined_px" in record:
            marks.append(Mark("refined_box", tuple(record["refined_px"])))
    for record in details.get("points", []):
        marks.append(Mark("positive" if record["label"] else "negative", tuple(record["px"])))
    return marks


def mllm_request(
    scene: SceneReader,
    question: str,
    mllm: MLLM,
    *,
    engine: AskEngine = "geoseg",
    ask_options: AskOptions = AskOptions(),
) -> tuple[np.ndarray, str]:
    """The image and prompt `locate` shows `mllm`, so callers can ask ahead of time: the
    prompt asks for the client's coordinate frame and states the size it will see."""
    from terramask.methods.replies import prompt_for

    image = scene.overview(ask_options.overview_size).image
    return image, prompt_for(mllm, question, image.shape[:2], clicks=engine == "clicks")


def warm_replies(
    mllm: MLLM,
    requests: Iterable[tuple[np.ndarray, str]],
    *,
    chunk: int = 32,
    progress: Progress | None = None,
    total: int | None = None,
) -> dict[int, TerraMaskError]:
    """Ask many requests concurrently so that later `ask` calls are cache hits.

    Only for clients with `ask_many` and a reply cache. Requests are consumed in chunks to
    bound memory; `progress("mllm", asked, total)` follows each chunk. Returns the failures by
    request position (0-based), so callers may record them instead of asking again.
    """
    if not hasattr(mllm, "ask_many") or getattr(mllm, "cache", None) is None:
        return {}
    failures: dict[int, TerraMaskError] = {}
    asked = 0
    batch: list[tuple[np.ndarray, str]] = []

    def flush() -> None:
        nonlocal asked
        for i, reply in enumerate(mllm.ask_many(batch)):
            if isinstance(reply, TerraMaskError):
                failures[asked + i] = reply
        asked += len(batch)
        batch.clear()
        if progress:
            progress("mllm", asked, max(asked, total or 0))

    for request in requests:
        batch.append(request)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    if progress and total:
        progress("mllm", total, total)
    return failures


def located_mask(located: Located, height: int, width: int) -> np.ndarray:
    """The union of what was found, as one (height, width) bool mask of the whole image."""
    ids, _ = paint_block(located.objects, Window(0, 0, width, height))
    return ids > 0
