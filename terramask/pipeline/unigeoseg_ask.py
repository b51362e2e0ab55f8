"""`ask --engine unigeoseg`: a question about a scene of any size to a mask, with UniGeoSeg.

No MLLM is involved: UniGeoSeg reads the question and segments by itself. As the other `ask`
engines do, it first looks at the whole scene (read whole when it fits in a tile, else as an
overview; either way letterboxed onto its 512 canvas), then, on a scene much larger than the
canvas, looks again at full resolution on a window around what it found (its bounding box
with a quarter of context on each side, at least one canvas wide, decimated to one tile when
larger): the mask comes from that second look, or from the first when the second finds
nothing. Interactive coordinates are fractions of the scene and are re-expressed in the
window for the second look. The answer carries the task, how it was decided, the
instruction, its coordinates, each look's window and, when asked for, the model's
explanation.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from affine import Affine
from rasterio.windows import Window

from terramask.errors import InputError
from terramask.methods.interactive import ObjectMask
from terramask.methods.unigeoseg_prompts import RoutedInstruction, interactive_instruction
from terramask.options import Tiling
from terramask.pipeline.objects import FoundObject, crop_object
from terramask.pipeline.routing import WindowJob, job_for_bounds
from terramask.protocols import Progress, SceneReader

#: Context added on each side of the first look's box for the second look, as a fraction.
CONTEXT = 0.25
#: The second look happens when the scene's long side exceeds this many canvases.
SECOND_LOOK_ABOVE = 2.0
#: The name the found object gets in outputs.
TARGET_NAME = "target"


def locate_unigeoseg(
    scene: SceneReader,
    question: str,
    model,
    *,
    settings=None,
    tile: int = Tiling.tile,
    second_look: bool = True,
    progress: Progress | None = None,
):
    """Ask UniGeoSeg about `scene`; returns `terramask.pipeline.ask_run.Located`.

    Args:
        scene: A raster `Scene` or an in-memory `ArrayScene`.
        question: The instruction: a description, a question, or an interactive instruction
            with normalised coordinates (fractions of the scene).
        model: A loaded `UniGeoSeg` (`terramask.models.unigeoseg.load_unigeoseg`).
        settings: `UniGeoSegSettings` (task, template, explanation); None: the defaults
            with the explanation on.
        tile: Windows larger than this are read decimated to it.
        second_look: Segment again at full resolution around the first answer on scenes
            larger than `SECOND_LOOK_ABOVE` canvases.
    """
    from terramask.models.unigeoseg import UniGeoSegSettings
    from terramask.pipeline.ask_run import Located

    settings = settings if settings is not None else UniGeoSegSettings(explain=True)
    started = time.perf_counter()
    routed = model.route(question, settings.task)
    _check_fractions(routed)
    whole = job_for_bounds((0, 0, scene.width, scene.height), tile, scene.width, scene.height,
                           widen=False)  # fmt: skip
    if progress:
        progress("ask", 0, 2)
    first, first_job = _look(scene, whole, routed, model, settings)
    details: dict = {
        "question": question,
        "engine": "unigeoseg",
        "unigeoseg": model.name,
        **first.result.record(),
        "looks": [first.record()],
        "warnings": [],
    }
    chosen, job = first, first_job
    canvas = model.canvas_size
    window_job = None
    if (
        second_look
        and first.result.mask.any()
        and max(scene.width, scene.height) > SECOND_LOOK_ABOVE * canvas
    ):
        window_job = _around(first.scene_bounds(), scene, tile, canvas)
        if _same_view(window_job, first_job):
            window_job = None  # it would see what the first look saw
    if window_job is not None:
        local = _in_window(routed, window_job.window, scene)
        quiet = replace(settings, explain=False)
        second, second_job = _look(scene, window_job, local, model, quiet)
        details["looks"].append(second.record())
        if second.result.mask.any():
            chosen, job = second, second_job
        else:
            details["warnings"].append(
                "The second, full-resolution look around the first answer found nothing; the "
                "overview's mask is kept."
            )
    if progress:
        progress("ask", 2, 2)
    result = chosen.result
    found = ObjectMask(result.mask & chosen.valid, np.where(chosen.valid, result.logits, -50.0),
                       result.score)  # fmt: skip
    objects: list[FoundObject] = [crop_object(1, TARGET_NAME, found, job.to_scene)]
    timings = {"unigeoseg": time.perf_counter() - started}
    return Located(objects, TARGET_NAME, first.result.explanation, details, timings, None)


class _Look:
    def __init__(self, job: WindowJob, result, valid: np.ndarray):
        self.job, self.result, self.valid = job, result, valid

    def scene_bounds(self) -> tuple[float, float, float, float]:
        rows = np.flatnonzero(self.result.mask.any(axis=1))
        cols = np.flatnonzero(self.result.mask.any(axis=0))
        to_scene = self.job.to_scene
        x0, y0 = to_scene @ (cols[0], rows[0])
        x1, y1 = to_scene @ (cols[-1] + 1, rows[-1] + 1)
        return x0, y0, x1, y1

    def record(self) -> dict:
        w = self.job.window
        shown = self.result.mask.shape
        return {
            "window_px": [int(w.col_off), int(w.row_off), int(w.width), int(w.height)],
            "shown_size": [int(shown[1]), int(shown[0])],
            "found": bool(self.result.mask.any()),
            "score": round(float(self.result.score), 4),
        }


def _look(scene: SceneReader, job: WindowJob, routed, model, settings) -> tuple[_Look, WindowJob]:
    window = scene.read(job.window, out_shape=job.out_shape)
    result = model.segment(window.image, routed, settings)
    return _Look(job, result, np.asarray(window.valid, dtype=bool)), job


def _around(bounds, scene: SceneReader, tile: int, canvas: int) -> WindowJob:
    """The second look's window: `bounds` with CONTEXT on each side, at least `canvas` px."""
    x0, y0, x1, y1 = bounds
    pad_x = max((x1 - x0) * CONTEXT, (canvas - (x1 - x0)) / 2, 0)
    pad_y = max((y1 - y0) * CONTEXT, (canvas - (y1 - y0)) / 2, 0)
    return job_for_bounds((x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y), tile, scene.width,
                          scene.height)  # fmt: skip


def _in_window(routed: RoutedInstruction, window: Window, scene: SceneReader) -> RoutedInstruction:
    """The instruction for a window: interactive coordinates (fractions of the scene) become
    fractions of the window; other instructions stay as they are."""
    if routed.task != "interactive" or routed.coordinates is None:
        return routed
    rows = np.asarray(routed.coordinates, dtype=np.float64)
    to_window = ~Affine(window.width / scene.width, 0, window.col_off / scene.width,
                        0, window.height / scene.height, window.row_off / scene.height)  # fmt: skip

    def local(x: float, y: float) -> tuple[float, float]:
        u, v = to_window @ (x, y)
        return float(np.clip(u, 0, 1)), float(np.clip(v, 0, 1))

    if (rows[:, 2:] == 0).all() and not _is_box(routed.text):
        return interactive_instruction(points=[local(x, y) for x, y in rows[:, :2]])
    x0, y0 = local(rows[0, 0], rows[0, 1])
    x1, y1 = local(rows[0, 2], rows[0, 3])
    return interactive_instruction(box=[x0, y0, x1, y1])


def _check_fractions(routed: RoutedInstruction) -> None:
    """Refuse interactive coordinates outside 0-1: pixels written in the question (`[300,200]`)
    would otherwise be read as fractions far outside the scene and answered with exit 0."""
    rows = routed.coordinates
    if routed.task != "interactive" or rows is None:
        return
    values = np.asarray(rows, dtype=np.float64)
    if np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all():
        return
    shown = values[:, :2] if (values[:, 2:] == 0).all() else values
    raise InputError(
        "The coordinates in the instruction must be fractions (0 to 1) of the scene's width "
        f"and height, e.g. [0.25,0.5]; got {np.round(shown, 4).tolist()}. For pixel "
        "coordinates use `terramask prompt --engine unigeoseg --point X,Y` or "
        "`--box X0,Y0,X1,Y1`."
    )


def _is_box(text: str) -> bool:
    from terramask.eval.referring_datasets import parse_interactive

    parsed = parse_interactive(text)
    return parsed is not None and parsed.box is not None


def _same_view(a: WindowJob, b: WindowJob) -> bool:
    """Both jobs read the same window at the same size."""
    return (tuple(a.window.flatten()) == tuple(b.window.flatten())
            and tuple(a.out_shape or ()) == tuple(b.out_shape or ()))  # fmt: skip
