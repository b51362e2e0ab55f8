"""One instruction interface: each line of a tasks file to its route, outputs and scores.

A line is a JSON object (docs/data-engine.md, "One instruction interface"):

    {"id": "a1", "image": "scene.tif", "task": "interactive" | "referring" | "reasoning" |
     "classes", "instruction": "...", "points": [[x, y], ...], "negatives": [[x, y], ...],
     "boxes": [[x1, y1, x2, y2], ...], "classes": ["building", "road,street"],
     "mask": "truth.png"}

- interactive → `api.prompt` (SAM; UniGeoSeg itself when `engine` is "unigeoseg", which takes
  one to three positive clicks or one box per line): `points`/`negatives`/`boxes` in image
  pixels; without them, the
  coordinates UniGeoSeg writes inside the instruction (`x0,y0=[a,b], x1,y1=[c,d]` or one to
  three `[x,y]`, normalised 0-1, origin top-left) are read with its parser and scaled to the
  image.
- referring, reasoning → `api.ask` with `engine` (and the MLLM, when the engine uses one).
- classes → `api.segment` with `segment_engine`.

Paths are relative to the tasks file. Each line's outputs go to `OUT/<id>/` (id: the line's
own, else its number, 00001 ...), its record to `OUT/<id>/line.json`; `OUT/results.jsonl`
holds one result per line, in order, and `OUT/report.json` the counts and scores. With a
ground-truth `mask` (same size as the image), a line is scored as UniGeoSeg's benchmark
scores (`terramask.eval.referring_metrics` conventions, on its 512 x 512 centred letterbox):
interactive, referring and reasoning masks are binary (ground truth: non-zero is target);
a classes line scores each of its classes as one binary sample (ground truth value k is the
k-th class, 1-based, as `segment` writes it). gIoU and cIoU are reported per task.

Every line is checked before the first one runs. A line done before with the same line and
settings is skipped; a line whose folder holds another line or other settings is refused
unless `overwrite`. A line that fails is recorded with its reason and the others go on.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terramask.atomic import write_atomic
from terramask.errors import InputError, TerraMaskError
from terramask.options import (
    AskEngine,
    AskOptions,
    GenerationSettings,
    ModelOptions,
    PolygonOptions,
    RasterOptions,
    SegmentEngine,
)
from terramask.protocols import MLLM, Progress

#: The tasks a line may name, with the aliases UniGeoSeg's folders use.
LINE_TASKS = {
    "interactive": "interactive", "intera": "interactive",
    "referring": "referring", "ref": "referring",
    "reasoning": "reasoning", "reason": "reasoning",
    "classes": "classes",
}  # fmt: skip
RESULTS_NAME = "results.jsonl"
REPORT_NAME = "report.json"
LINE_RECORD = "line.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: The keys a line may hold (a misspelt one, e.g. "negative", would otherwise be ignored).
LINE_KEYS = ("id", "image", "task", "instruction", "points", "negatives", "boxes", "classes",
             "mask")


@dataclass(frozen=True)
class Line:
    """One checked line: its id, number (1-based), task, image and prompts (pixels)."""

    number: int
    id: str
    task: str
    image: str
    raw: dict = field(repr=False)
    instruction: str | None = None
    points: tuple[tuple[float, float], ...] = ()
    negatives: tuple[tuple[float, float], ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    classes: tuple[str, ...] = ()
    mask: str | None = None
    normalised: dict | None = None


def read_lines(tasks: str | os.PathLike | Sequence[Mapping], raster: RasterOptions) -> list[Line]:
    """Every line checked (module notes); an InputError naming the line otherwise."""
    if isinstance(tasks, str | os.PathLike):
        path = Path(tasks)
        if not path.is_file():
            raise InputError(f"The tasks file {path} does not exist.")
        base = path.parent
        entries = []
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            try:
                entries.append((number, json.loads(text)))
            except ValueError as exc:
                raise InputError(f"Line {number} of {path} is not JSON ({exc}).") from None
        where = f" of {path}"
    else:
        base, where = Path.cwd(), ""
        entries = list(enumerate((dict(t) for t in tasks), 1))
    if not entries:
        raise InputError(f"The tasks{where} hold no line.")
    lines, seen = [], {}
    sizes: dict[str, tuple[int, int]] = {}
    for number, entry in entries:
        line = _line(number, entry, base, f"line {number}{where}", raster)
        _check_inside(line, sizes, raster, f"Line {number}{where}")
        if line.id in seen:
            raise InputError(
                f"Lines {seen[line.id]} and {number}{where} share the id {line.id!r}; each "
                "line's outputs go to a folder named after its id."
            )
        seen[line.id] = number
        lines.append(line)
    return lines


def _line(number: int, entry: Any, base: Path, where: str, raster: RasterOptions) -> Line:
    from terramask.scene.inputs import check_source

    def fail(message: str) -> InputError:
        return InputError(f"{where[0].upper()}{where[1:]}: {message}")

    if not isinstance(entry, dict):
        raise fail("a JSON object is needed.")
    unknown = sorted(str(key) for key in entry if key not in LINE_KEYS)
    if unknown:
        raise fail(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)}; a line holds "
            f"{', '.join(LINE_KEYS)}."
        )
    task = LINE_TASKS.get(str(entry.get("task", "")).strip().lower())
    if task is None:
        raise fail(
            f"\"task\" must be one of interactive, referring, reasoning, classes, not "
            f"{entry.get('task')!r}."
        )
    if not isinstance(entry.get("image"), str) or not entry["image"].strip():
        raise fail("\"image\" (a raster path or URL) is missing.")
    image = _resolve(entry["image"], base)
    try:
        check_source(image)
    except InputError as exc:
        raise fail(str(exc)) from None
    line_id = str(entry.get("id", f"{number:05d}"))
    if not _ID.match(line_id):
        raise fail(f"the id {line_id!r} must be letters, digits, '_', '.' or '-' (it names a "
                   "folder).")  # fmt: skip
    instruction = entry.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise fail("\"instruction\" must be a text.")
    instruction = instruction.strip() if instruction else None
    mask = entry.get("mask")
    if mask is not None:
        mask = _resolve(str(mask), base)
        if not Path(mask).is_file():
            raise fail(f"the ground-truth mask {mask} does not exist.")
    points = _coordinates(entry.get("points"), 2, "points", fail)
    negatives = _coordinates(entry.get("negatives"), 2, "negatives", fail)
    boxes = _coordinates(entry.get("boxes"), 4, "boxes", fail)
    classes = entry.get("classes") or ()
    if isinstance(classes, str):
        classes = [classes]
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        raise fail("\"classes\" must be a list of class names.")
    line = Line(number, line_id, task, image, entry, instruction, points, negatives, boxes,
                tuple(c.strip() for c in classes if c.strip()), mask)  # fmt: skip
    if task == "interactive" and not (points or boxes):
        return _from_instruction(line, raster, fail)
    if task in ("referring", "reasoning") and not instruction:
        raise fail(f"a {task} line needs its \"instruction\".")
    if task == "classes" and not line.classes:
        raise fail("a classes line needs \"classes\", e.g. [\"building\", \"road,street\"].")
    return line


def _check_inside(
    line: Line, sizes: dict[str, tuple[int, int]], raster: RasterOptions, where: str
) -> None:
    """An interactive line's points and boxes must fall inside its image (checked before any
    line runs; `sizes` caches each image's size)."""
    if line.task != "interactive":
        return
    if line.image not in sizes:
        sizes[line.image] = _size(line.image, raster)
    width, height = sizes[line.image]
    given = "UniGeoSeg's coordinates in the instruction" if line.normalised else "pixels"
    for name, values in (("points", line.points), ("negatives", line.negatives),
                         ("boxes", line.boxes)):  # fmt: skip
        for value in values:
            xs, ys = value[0::2], value[1::2]
            if min(xs) < 0 or max(xs) > width or min(ys) < 0 or max(ys) > height:
                shown = ", ".join(f"{v:g}" for v in value)
                raise InputError(
                    f"{where}: {name} ({shown}) in {given} lies outside the image {line.image}, "
                    f"which is {width} x {height} pixels (x 0-{width}, y 0-{height}, origin "
                    "top-left)."
                )


def _resolve(path: str, base: Path) -> str:
    if "://" in path or path.startswith("/vsi") or Path(path).is_absolute():
        return path
    return str(base / path)


def _coordinates(value: Any, size: int, name: str, fail: Any) -> tuple:
    if value is None:
        return ()
    items = value if isinstance(value, list) else None
    if items and all(isinstance(v, int | float) for v in items) and len(items) == size:
        items = [items]  # one point or box given flat
    try:
        parsed = tuple(tuple(float(x) for x in item) for item in items or ())
    except (TypeError, ValueError):
        parsed = ()
    if not parsed or any(len(p) != size or not all(np.isfinite(p)) for p in parsed):
        shape = "[[x, y], ...]" if size == 2 else "[[x1, y1, x2, y2], ...]"
        raise fail(f"\"{name}\" must be a list of {shape} in image pixels.")
    return parsed


def _from_instruction(line: Line, raster: RasterOptions, fail: Any) -> Line:
    """An interactive line's prompts read from its instruction and scaled to the image."""
    from dataclasses import replace

    from terramask.eval.referring_datasets import parse_interactive

    found = parse_interactive(line.instruction or "")
    if found is None:
        raise fail(
            "an interactive line needs \"points\" or \"boxes\" (pixels), or an instruction "
            "holding UniGeoSeg's coordinates: x0,y0=[a,b], x1,y1=[c,d] or one to three [x,y] "
            "(normalised 0-1, origin top-left)."
        )
    width, height = _size(line.image, raster)
    prompt = found.in_pixels(height, width)
    boxes = () if prompt.box is None else (tuple(float(v) for v in prompt.box),)
    points = tuple((float(x), float(y)) for x, y in prompt.points)
    return replace(line, points=points, boxes=boxes, normalised=found.describe())


def _size(image: str, raster: RasterOptions) -> tuple[int, int]:
    from terramask.scene import GeoreferenceWarning, open_scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoreferenceWarning)
        with open_scene(image, RasterOptions(bands=raster.bands, stretch=raster.stretch)) as s:
            return s.width, s.height


# ------------------------------------------------------------------------------- running


def run_instruction_lines(
    tasks: str | os.PathLike | Sequence[Mapping],
    *,
    engine: AskEngine = "geoseg",
    segment_engine: SegmentEngine = "sam+clip",
    mllm: MLLM | None = None,
    models: ModelOptions = ModelOptions(),
    ask_options: AskOptions = AskOptions(),
    generation: GenerationSettings = GenerationSettings(),
    raster: RasterOptions = RasterOptions(),
    polygons: PolygonOptions = PolygonOptions(),
    output: str | os.PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
    given: Sequence[str] = (),
    local_mllm: bool = False,
) -> dict[str, Any]:
    """Run every line (module notes); return the report written to `output/report.json`.

    `given` names the options the caller set, refused when no line's route uses them
    (`terramask.rules.run_rules`); `local_mllm`: the MLLM is a local model.
    """
    from terramask import rules
    from terramask.options import ASK_ENGINES, SEGMENT_ENGINES, check_choice

    check_choice(engine, ASK_ENGINES, "engine")
    check_choice(segment_engine, SEGMENT_ENGINES, "segment_engine")
    started = time.perf_counter()
    lines = read_lines(tasks, raster)
    rules.refuse(given, rules.run_rules(engine, segment_engine, {line.task for line in lines},
                                        local_mllm=local_mllm))  # fmt: skip
    asked = [line for line in lines if line.task in ("referring", "reasoning")]
    if asked and mllm is None and _engine_asks_an_mllm(engine):
        raise InputError(
            f"{len(asked)} line(s) are referring or reasoning instructions (the first: line "
            f"{asked[0].number}), which engine {engine!r} answers with an MLLM: give one "
            "(`MLLMOptions.url` and `MLLMOptions.model`)."
        )
    output = Path(output)
    settings = _settings(engine, segment_engine, mllm, models, ask_options, generation, raster,
                         polygons)  # fmt: skip
    done: dict[str, dict[str, Any]] = {}
    stale = []
    for line in lines:
        record = _read_record(output / line.id / LINE_RECORD)
        if record is None or overwrite:
            continue
        if record.get("line") == _plain(line.raw) and record.get("settings") == settings:
            # an image or ground truth edited since is run (and scored) again, not reused
            if record.get("status") == "done" and record.get("sources") == _sources(line):
                done[line.id] = record
        else:
            stale.append(line.id)
    if stale:
        raise InputError(
            f"{len(stale)} line folder(s) in {output} ({', '.join(stale[:5])}) hold another "
            "line or were made with other settings. Nothing was run; pass `overwrite` to "
            "redo them, or choose another output folder."
        )
    pending = [line for line in lines if line.id not in done]
    if mllm is not None:
        _warm(mllm, [line for line in pending if line.task in ("referring", "reasoning")],
              engine, ask_options, raster)  # fmt: skip
    results: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if progress:
            progress("lines", index, len(lines))
        if line.id in done:
            results.append({**done[line.id]["result"], "status": "already done"})
            continue
        result = _run_line(line, engine=engine, segment_engine=segment_engine, mllm=mllm,
                           models=models, ask_options=ask_options, generation=generation,
                           raster=raster, polygons=polygons, output=output)  # fmt: skip
        if result["status"] == "done":
            record = {"line": _plain(line.raw), "settings": settings, "status": "done",
                      "sources": _sources(line), "result": result}  # fmt: skip
            write_atomic(output / line.id / LINE_RECORD, json.dumps(record, indent=2))
        results.append(result)
    if progress:
        progress("lines", len(lines), len(lines))
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / RESULTS_NAME,
                 "".join(json.dumps(r, default=str) + "\n" for r in results))  # fmt: skip
    report = _report(results, lines, time.perf_counter() - started, settings)
    report["outputs"] = {"results": str(output / RESULTS_NAME),
                         "report": str(output / REPORT_NAME)}  # fmt: skip
    write_atomic(output / REPORT_NAME, json.dumps(report, indent=2, default=str))
    return report


def _engine_asks_an_mllm(engine: str) -> bool:
    """Whether the ask engine uses an MLLM: its rules do not refuse one (`rules.ask_rules`)."""
    import fnmatch

    from terramask import rules

    refused = rules.ask_rules(engine, local_mllm=False)
    return not any(fnmatch.fnmatchcase("mllm", pattern) for pattern in refused)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _settings(
    engine: str, segment_engine: str, mllm: MLLM | None, models: ModelOptions,
    ask_options: AskOptions, generation: GenerationSettings, raster: RasterOptions,
    polygons: PolygonOptions,
) -> dict[str, Any]:  # fmt: skip
    return _plain({
        "engine": engine, "segment_engine": segment_engine,
        "mllm": None if mllm is None else getattr(mllm, "name", str(mllm)),
        "models": models.describe(), "ask_options": asdict(ask_options),
        "generation": asdict(generation), "raster": asdict(raster),
        "polygons": asdict(polygons),
    })  # fmt: skip


def _sources(line: Line) -> list[str]:
    """What changes when the line's image or ground-truth file does (path, size, time)."""
    from terramask.stamps import file_stamp

    return [file_stamp(source) for source in (line.image, line.mask) if source is not None]


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _warm(
    mllm: MLLM, lines: Sequence[Line], engine: str, ask_options: AskOptions,
    raster: RasterOptions,
) -> None:  # fmt: skip
    """Ask the MLLM about every referring/reasoning line ahead, concurrently, into the reply
    cache; the lines then meet their replies there (failures are met again by the line)."""
    from terramask.pipeline.ask_run import mllm_request, warm_replies
    from terramask.scene import GeoreferenceWarning, open_scene

    def requests():
        for line in lines:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", GeoreferenceWarning)
                    with open_scene(line.image, raster) as scene:
                        request = mllm_request(scene, line.instruction or "", mllm,
                                               engine=engine, ask_options=ask_options)  # type: ignore[arg-type]  # fmt: skip
            except TerraMaskError:
                continue  # the line's own run records why
            yield request

    warm_replies(mllm, requests(), chunk=max(8, getattr(mllm, "max_concurrency", 1)))


def _run_line(line: Line, *, output: Path, **options: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"id": line.id, "line": line.number, "task": line.task,
                              "image": line.image}  # fmt: skip
    if line.instruction:
        result["instruction"] = line.instruction
    if line.normalised:
        result["coordinates"] = line.normalised
    try:
        run = _route(line, output / line.id, **options)
        result.update(run)
        if line.mask is not None:
            result["scores"] = _score(line, run)
        result["status"] = "done"
    except TerraMaskError as exc:
        result.update(status="failed", reason=str(exc))
    except Exception as exc:  # a bug met on one line: recorded, the others go on
        result.update(status="failed", reason=(
            f"unexpected error ({type(exc).__name__}: {str(exc)[:300]}). This is a bug in "
            "TerraMask, not in your input; run this line alone with --debug and report it."))
    return result


def _route(
    line: Line, folder: Path, *, engine: str, segment_engine: str, mllm: MLLM | None,
    models: ModelOptions, ask_options: AskOptions, generation: GenerationSettings,
    raster: RasterOptions, polygons: PolygonOptions,
) -> dict[str, Any]:  # fmt: skip
    from terramask import api
    from terramask.pipeline.engines import ASK_ENGINE_MODELS, SEGMENT_ENGINE_MODELS

    common = {"raster": RasterOptions(bands=raster.bands, stretch=raster.stretch),
              "output": folder, "overwrite": True}  # fmt: skip
    if line.task == "interactive":
        # the unified model answers its interactive instructions too; other engines click SAM
        prompt_engine = "unigeoseg" if engine == "unigeoseg" else "sam"
        result = api.prompt(
            line.image, points=line.points, negatives=line.negatives, boxes=line.boxes,
            models=models_for(models, ("unigeoseg",) if prompt_engine == "unigeoseg"
                              else ("segmenter",)),
            polygons=PolygonOptions(simplify=polygons.simplify), engine=prompt_engine,
            **common,
        )  # fmt: skip
        found = any(not o["empty"] for o in result.objects)
        return {"route": "prompt", "found": found, "outputs": _paths(result.outputs),
                "objects": len(result.objects)}  # fmt: skip
    if line.task == "classes":
        result = api.segment(
            line.image, list(line.classes), engine=segment_engine, generation=generation,
            models=models_for(models, SEGMENT_ENGINE_MODELS[segment_engine]), polygons=polygons,
            **common,
        )  # fmt: skip
        classes = [{"value": c["value"], "name": c["name"], "pixels": c["pixels"]}
                   for c in result.classes]  # fmt: skip
        return {"route": "segment", "outputs": _paths(result.outputs), "classes": classes}
    if mllm is not None:  # an engine without an MLLM keeps `ask`'s default (none given)
        common["mllm"] = mllm
    answered = api.ask(
        line.image, line.instruction or "", engine=engine,  # type: ignore[arg-type]
        models=models_for(models, ASK_ENGINE_MODELS[engine]), ask_options=ask_options,
        polygons=PolygonOptions(simplify=polygons.simplify), **common,
    )  # fmt: skip
    return {"route": "ask", "found": answered.found, "answer": answered.answer,
            "outputs": _paths(answered.outputs)}  # fmt: skip


def models_for(models: ModelOptions, roles: Sequence[str]) -> ModelOptions:
    """`models` with only the `roles` one route uses (each verb refuses the others)."""
    return ModelOptions(device=models.device, **{role: getattr(models, role) for role in roles})


def _paths(outputs: Mapping[str, Any]) -> dict[str, str]:
    return {kind: str(path) for kind, path in outputs.items()}


# ------------------------------------------------------------------------------- scoring


def _read_values(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A raster's band 1 and its validity (nodata pixels invalid)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            values = dataset.read(1)
            nodata = dataset.nodata
    valid = np.ones(values.shape, dtype=bool) if nodata is None else values != nodata
    return values, valid


def _score(line: Line, run: dict[str, Any]) -> list[dict[str, Any]]:
    """(intersection, union) per scored sample on the 512 letterbox (see module notes)."""
    from terramask.eval.datasets import read_label
    from terramask.eval.referring_datasets import UNIGEOSEG_SIZE, letterbox

    truth = read_label(line.mask)  # type: ignore[arg-type]
    kind = "labels" if line.task == "classes" else "mask"
    predicted, valid = _read_values(run["outputs"][kind])
    if truth.shape != predicted.shape:
        raise InputError(
            f"The ground-truth mask {line.mask} is {truth.shape[1]} x {truth.shape[0]} pixels "
            f"but the image is {predicted.shape[1]} x {predicted.shape[0]}: it cannot be scored."
        )
    if line.task == "classes":
        pairs = [(c["name"], (predicted == c["value"]) & valid, truth == c["value"])
                 for c in run["classes"]]  # fmt: skip
    else:
        pairs = [(None, (predicted > 0) & valid, truth != 0)]
    scores = []
    for name, pred, gt in pairs:
        pred_box, gt_box = letterbox(pred, UNIGEOSEG_SIZE), letterbox(gt, UNIGEOSEG_SIZE)
        inter = int(np.count_nonzero(pred_box & gt_box))
        union = int(np.count_nonzero(pred_box | gt_box))
        score = {"intersection": inter, "union": union,
                 "iou": round(100.0 * (1.0 if union == 0 else inter / union), 2)}  # fmt: skip
        if name is not None:
            score["class"] = name
        scores.append(score)
    return scores


def _report(
    results: Sequence[dict[str, Any]], lines: Sequence[Line], seconds: float,
    settings: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Counts per task and status; gIoU and cIoU per task (and overall) where scored."""
    from terramask.eval.referring_metrics import METRIC_CONVENTIONS

    by_task: dict[str, list[tuple[int, int]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for result in results:
        counts.setdefault(result["task"], {}).setdefault(result["status"], 0)
        counts[result["task"]][result["status"]] += 1
        for score in result.get("scores", []):
            by_task.setdefault(result["task"], []).append((score["intersection"], score["union"]))
    scores = {task: _metrics(pairs) for task, pairs in sorted(by_task.items())}
    if by_task:
        scores["all"] = _metrics([p for pairs in by_task.values() for p in pairs])
    failed = [{"id": r["id"], "line": r["line"], "reason": r["reason"]}
              for r in results if r["status"] == "failed"]  # fmt: skip
    return {
        "lines": len(lines),
        "done": sum(r["status"] == "done" for r in results),
        "already_done": sum(r["status"] == "already done" for r in results),
        "failed": failed,
        "by_task": counts,
        "scores": scores,
        "score_size": 512,
        "metric_conventions": {k: METRIC_CONVENTIONS[k] for k in ("gIoU", "cIoU")},
        "seconds": round(seconds, 2),
        "settings": settings,
    }


def _metrics(pairs: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """gIoU (both empty counts 1) and cIoU (None with no union at all), in percent."""
    ious = [1.0 if union == 0 else inter / union for inter, union in pairs]
    union = sum(u for _, u in pairs)
    ciou = None if union == 0 else round(100.0 * sum(i for i, _ in pairs) / union, 2)
    return {"samples": len(pairs), "giou": round(100.0 * sum(ious) / len(ious), 2),
            "ciou": ciou}  # fmt: skip
