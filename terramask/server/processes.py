"""The processes a server offers as jobs (OGC API – Processes): segment, ask, prompt (and
run, where the API has it), each the CLI verb of that name on a served scene.

Inputs are JSON objects whose fields are the verb's options by their Python field names
(`tile`, `bands`, `threshold`…). Everything that can be checked without running the verb is
checked when the job is submitted (the scene opens, options are valid and apply to the
engine, prompts fall inside the scene), so a bad request is a 4xx answer and makes no job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from terramask import rules
from terramask.errors import InputError
from terramask.options import (
    PROMPT_TILING,
    AskOptions,
    GenerationSettings,
    PolygonOptions,
    RasterOptions,
    Tiling,
    changed,
)
from terramask.server.clicks import MAX_PROMPTS, Pair, Quad

Name = Annotated[str, Field(min_length=1, max_length=500)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene: str = Field(..., min_length=1, max_length=4096,
                       description="The scene's id (GET /scenes).")  # fmt: skip
    bands: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, max_length=3, description="1-based bands shown as R,G,B (1 or 3)."
    )
    stretch: str | None = Field(None, max_length=50,
                                description="auto, none, or percentiles 'P1,P2'.")  # fmt: skip
    simplify: Finite | None = Field(None, ge=0, description="Simplify outlines (CRS units).")


class SegmentInputs(_Inputs):
    classes: list[Name] = Field(
        ..., min_length=1, max_length=254, description="Classes: 'name' or 'name,synonym,...'."
    )
    engine: Literal["clip", "sam+clip", "sam3"] = "sam+clip"
    threshold: Finite | None = Field(None, description="Probability below which a pixel is "
                                     "background (or no class).")  # fmt: skip
    background: Name | None = None
    grid: int | None = Field(None, ge=1, le=128, description="sam+clip: SAM point grid side.")
    amg: Literal["fast", "reference"] | None = None
    prune: bool | None = None
    tile: int | None = Field(None, description="Tile size in pixels.")
    overlap: int | None = Field(None, description="Tile overlap in pixels.")
    min_area: int | None = Field(None, ge=0, description="Drop polygons under this many px.")


class AskInputs(_Inputs):
    question: str = Field(..., min_length=1, max_length=4000)
    engine: Literal["geoseg", "clicks", "box"] = "geoseg"
    refine: Literal["geoseg", "none"] | None = None
    boxes: Literal["one", "all"] | None = None
    max_objects: int | None = Field(None, ge=1, le=1000)
    overview_size: int | None = Field(None, ge=64, le=8192)
    tile: int | None = Field(None, description="Largest window segmented at full resolution.")


class PromptInputs(_Inputs):
    points: list[Pair] = Field(default_factory=list, max_length=MAX_PROMPTS)
    negatives: list[Pair] = Field(default_factory=list, max_length=MAX_PROMPTS)
    boxes: list[Quad] = Field(default_factory=list, max_length=MAX_PROMPTS)
    crs: str | None = Field(None, max_length=10_000, description="CRS of the coordinates "
                            "(e.g. EPSG:4326); null: scene pixels.")  # fmt: skip
    tile: int | None = Field(None, description="Tile size in pixels (the prompt tiling's "
                             "default when null).")  # fmt: skip
    overlap: int | None = Field(None, description="Tile overlap in pixels.")


@dataclass(frozen=True)
class Process:
    id: str
    title: str
    description: str
    inputs: type[BaseModel]
    outputs: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "description": self.description,
            "version": "1.0.0", "jobControlOptions": ["async-execute", "dismiss"],
            "outputTransmission": ["value", "reference"],
            "links": [{"href": f"/processes/{self.id}", "rel": "self",
                       "type": "application/json"},
                      {"href": f"/processes/{self.id}/execution",
                       "rel": "http://www.opengis.net/def/rel/ogc/1.0/execute",
                       "type": "application/json"}],
        }  # fmt: skip

    def description_document(self) -> dict[str, Any]:
        """The OGC process description: inputs and outputs with their JSON schemas."""
        schema = self.inputs.model_json_schema()
        required = set(schema.get("required", []))
        inputs = {}
        for name, prop in schema.get("properties", {}).items():
            inputs[name] = {
                "title": prop.get("title", name), "description": prop.get("description", ""),
                "minOccurs": 1 if name in required else 0, "maxOccurs": 1,
                "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
            }  # fmt: skip
        outputs = {name: {"title": name, "schema": {"type": "string", "format": "uri"}}
                   for name in self.outputs}  # fmt: skip
        outputs["geojson"] = {"title": "polygons (EPSG:4326)",
                              "schema": {"type": "object", "contentMediaType":
                                         "application/geo+json"}}  # fmt: skip
        return {**self.summary(), "inputs": inputs, "outputs": outputs,
                "$defs": schema.get("$defs", {})}  # fmt: skip


PROCESSES: dict[str, Process] = {
    "segment": Process(
        "segment", "Class names to a map",
        "Label every pixel of a scene with one of the given classes (`terramask segment`): "
        "a label COG, scores, polygons (GPKG, GeoJSON), preview and report.",
        SegmentInputs, ("labels", "score", "gpkg", "geojson", "preview", "report"),
    ),
    "ask": Process(
        "ask", "A question to a mask",
        "Answer a question about a scene with a mask, polygons and the model's words through "
        "the server's multimodal LLM (`terramask ask`).",
        AskInputs, ("mask", "score", "gpkg", "geojson", "preview", "report"),
    ),
    "prompt": Process(
        "prompt", "Clicks and boxes to objects, as files",
        "Segment the objects under clicks and boxes (`terramask prompt`) and write them as "
        "a mask COG, scores, polygons (GPKG, GeoJSON), preview and report.",
        PromptInputs, ("mask", "score", "gpkg", "geojson", "preview", "report"),
    ),
}  # fmt: skip


def available(has_run: bool) -> dict[str, Process]:
    """The processes offered: `run` only where `terramask.api.run_instructions` exists."""
    if not has_run:
        return dict(PROCESSES)
    return {**PROCESSES, "run": Process(
        "run", "Run instructions",
        "Run a list of instructions (`terramask run TASKS.jsonl`) on the served scenes.",
        RunInputs, ("summary",),
    )}  # fmt: skip


class RunInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[dict[str, Any]] = Field(..., min_length=1, max_length=1000)


# ---------------------------------------------------------------------- checking inputs


@dataclass
class Prepared:
    """A submission, checked: what the job runs with."""

    process: str
    scene_id: str | None
    source: str | None
    inputs: dict[str, Any]


def _raster(served: Any, inputs: _Inputs) -> RasterOptions:
    return RasterOptions(
        bands=tuple(inputs.bands) if inputs.bands else served.raster.bands,
        stretch=inputs.stretch if inputs.stretch is not None else served.raster.stretch,
    )


def _tiling(inputs: Any, base: Tiling) -> Tiling:
    return Tiling(
        tile=base.tile if inputs.tile is None else inputs.tile,
        overlap=base.overlap if inputs.overlap is None else inputs.overlap,
    )


def _generation(inputs: SegmentInputs) -> GenerationSettings:
    from terramask.options import GENERATION_PRESETS

    base = GENERATION_PRESETS[inputs.amg or "fast"]
    values = {k: v for k, v in (("grid", inputs.grid), ("prune", inputs.prune)) if v is not None}
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    return GenerationSettings(**{**fields, **values})


def prepare(process: str, raw: dict[str, Any], scenes: Any, *, mllm: Any) -> Prepared:
    """Check a submission; the inputs the job runs with (scene resolved to its source).

    Raises:
        InputError: An input the verb would refuse (the verb's message).
        Problem: An unknown scene (404) or one outside the root (403).
        pydantic.ValidationError: Inputs of the wrong shape.
    """
    if process == "run":
        checked_run = RunInputs.model_validate(raw)
        tasks = [_served_task(i, task, scenes) for i, task in enumerate(checked_run.tasks)]
        _check_lines(tasks, mllm, scenes.raster)
        return Prepared(process, None, None, {"tasks": tasks})
    model = PROCESSES[process].inputs
    checked = model.model_validate(raw)
    served = scenes.get(checked.scene)
    scene = served.scene()
    _raster(served, checked)
    PolygonOptions(simplify=checked.simplify)
    if isinstance(checked, SegmentInputs):
        from terramask.methods.vocabulary import ClassVocabulary
        from terramask.options import check_probability

        check_probability(checked.threshold, "threshold")
        ClassVocabulary.parse(checked.classes, background=checked.background)
        _tiling(checked, Tiling())
        generation = _generation(checked)
        given = changed(generation) if checked.engine != "sam+clip" else []
        rules.refuse(given, rules.segment_rules(checked.engine))
    elif isinstance(checked, AskInputs):
        if mllm is None:
            raise InputError(
                "This server has no multimodal LLM, so it cannot answer questions: start it "
                "with `--mllm-url` and `--mllm-model` (or a local `--mllm-model`)."
            )
        if not checked.question.strip():
            raise InputError("The question is empty: say what to find, e.g. 'the largest pond'.")
        options = _ask_options(checked)
        rules.refuse(changed(options), rules.ask_rules(checked.engine, local_mllm=False))
        if checked.tile is not None:
            Tiling(tile=checked.tile, overlap=0)
    elif isinstance(checked, PromptInputs):
        from terramask.scene import prompts_from_options

        if not (checked.points or checked.negatives or checked.boxes):
            raise InputError(
                "No prompt was given: add at least one click (`points`) or box (`boxes`), in "
                "pixels or in map coordinates with `crs`."
            )
        _tiling(checked, PROMPT_TILING)
        with served.lock:
            prompts_from_options(
                scene, points=[tuple(p) for p in checked.points],
                negatives=[tuple(p) for p in checked.negatives],
                boxes=[tuple(b) for b in checked.boxes], crs=checked.crs, outside="error",
            )  # fmt: skip
    if checked.bands is not None or checked.stretch is not None:
        # bands that exist in this scene, a stretch that applies: opened as the job will
        served.display(tuple(checked.bands) if checked.bands else None, checked.stretch)
    inputs = checked.model_dump(exclude_none=True)
    return Prepared(process, served.id, served.source, inputs)


def _check_lines(tasks: list[dict[str, Any]], mllm: Any, raster: RasterOptions) -> None:
    """Every `run` line checked as `terramask run` checks it before any line runs (task,
    instruction, coordinates, classes, id, keys), and referring or reasoning lines refused
    when the server has no MLLM: a bad submission gets a 4xx, not a job that fails."""
    try:
        from terramask.pipeline.run_instructions import read_lines
    except ImportError:
        return  # `run` is not offered then (`available`)
    lines = read_lines(tasks, RasterOptions(bands=raster.bands, stretch=raster.stretch))
    asked = [line for line in lines if line.task in ("referring", "reasoning")]
    if asked and mllm is None:
        raise InputError(
            f"Line {asked[0].number} is a {asked[0].task} instruction, and this server has no "
            "multimodal LLM to answer it: start it with `--mllm-url` and `--mllm-model` (or a "
            "local `--mllm-model`), or send only interactive and classes lines."
        )


def _served_task(index: int, task: dict[str, Any], scenes: Any) -> dict[str, Any]:
    """A `run` line with its `image` (a served scene's id) and its ground-truth `mask` (a
    file under the root) made paths the server may open: a client never names a file of its
    own choosing outside the root."""
    image = task.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InputError(f"`tasks[{index}].image` must name a served scene (GET /scenes).")
    served = dict(task)
    served["image"] = scenes.get(image).source
    mask = task.get("mask")
    if mask is not None:
        if not isinstance(mask, str) or scenes.root is None:
            raise InputError(
                f"`tasks[{index}].mask` must be a file under the server's root folder."
            )
        served["mask"] = str(scenes.file_under_root(mask))
    return served


def _ask_options(inputs: AskInputs) -> AskOptions:
    values = {"refine": inputs.refine, "boxes": inputs.boxes, "max_objects": inputs.max_objects,
              "overview_size": inputs.overview_size}  # fmt: skip
    return AskOptions(**{k: v for k, v in values.items() if v is not None})


# ---------------------------------------------------------------------- running


@dataclass
class Context:
    """What a job needs from the server: the scenes, the models (by role, shared with the
    clicks), and the MLLM options."""

    scenes: Any
    model: Callable[[str], Any]  # role -> loaded model (or the id to load), e.g. "segmenter"
    has: Callable[[str], bool]  # whether the server was given a model for the role
    device: str
    featup: Any
    mllm: Any


def run(
    process: str, inputs: dict[str, Any], folder: Path, progress: Callable, context: Context
) -> dict[str, Any]:
    """Run one job into `folder`; the record of what it made (files by kind, a summary)."""
    from terramask import api
    from terramask.options import ModelOptions
    from terramask.pipeline.engines import ASK_ENGINE_MODELS, SEGMENT_ENGINE_MODELS

    if process == "run":
        try:
            import terramask.pipeline.run_instructions  # noqa: F401  (the route of `run`)
        except ImportError as exc:
            raise InputError(
                f"The `run` process cannot run in this installation ({exc}); segment, ask and "
                "prompt still work."
            ) from None
        # only the models (and MLLM) the lines' routes use: `run` refuses the others
        tasks = {str(t.get("task", "")).strip().lower() for t in inputs["tasks"]}
        asked = bool(tasks & {"referring", "ref", "reasoning", "reason"})
        roles: set[str] = set()
        if tasks & {"interactive", "intera"}:
            roles.add("segmenter")
        if asked:
            roles.update(ASK_ENGINE_MODELS["geoseg"])
        if "classes" in tasks:
            roles.update(SEGMENT_ENGINE_MODELS["sam+clip"])
        chosen = {role: context.model(role) for role in sorted(roles - {"featup"})
                  if role in ("segmenter", "clip") or context.has(role)}  # fmt: skip
        if "featup" in roles and context.featup is not None:
            chosen["featup"] = context.featup
        served_raster = context.scenes.raster  # the server's --bands/--stretch, as the map
        result = api.run_instructions(
            inputs["tasks"], mllm=context.mllm if asked else None,
            models=ModelOptions(device=context.device, **chosen), output=folder,
            raster=RasterOptions(bands=served_raster.bands, stretch=served_raster.stretch),
            progress=progress,
        )  # fmt: skip
        return {"outputs": _run_outputs(folder), "summary": _plain(result)}
    checked = PROCESSES[process].inputs.model_validate(inputs)
    served = context.scenes.get(checked.scene)
    done = _finished_before(folder)
    if done is not None:
        return _record(served.id, done)
    raster = _raster(served, checked)
    raster = RasterOptions(bands=raster.bands, stretch=raster.stretch)
    polygons_kw = {"simplify": checked.simplify}

    def models_for(roles: tuple[str, ...], optional: tuple[str, ...] = ()) -> ModelOptions:
        """The server's models for these roles; `optional` ones only when it has them."""
        chosen = {
            role: context.model(role)
            for role in roles
            if role != "featup" and (role not in optional or context.has(role))
        }
        if "featup" in roles and context.featup is not None:
            chosen["featup"] = context.featup
        return ModelOptions(device=context.device, **chosen)

    if isinstance(checked, SegmentInputs):
        result = api.segment(
            served.source, checked.classes, engine=checked.engine, threshold=checked.threshold,
            background=checked.background, generation=_generation(checked),
            models=models_for(SEGMENT_ENGINE_MODELS[checked.engine]), raster=raster,
            tiling=_tiling(checked, Tiling()),
            polygons=PolygonOptions(min_area=checked.min_area or 0, **polygons_kw),
            output=folder, progress=progress,
        )  # fmt: skip
    elif isinstance(checked, AskInputs):
        result = api.ask(
            served.source, checked.question, engine=checked.engine, mllm=context.mllm,
            models=models_for(ASK_ENGINE_MODELS[checked.engine], optional=("sam3",)),
            ask_options=_ask_options(checked), raster=raster,
            tile=checked.tile if checked.tile is not None else Tiling().tile,
            polygons=PolygonOptions(**polygons_kw), output=folder, progress=progress,
        )  # fmt: skip
    else:
        assert isinstance(checked, PromptInputs)
        result = api.prompt(
            served.source, points=[tuple(p) for p in checked.points],
            negatives=[tuple(p) for p in checked.negatives],
            boxes=[tuple(b) for b in checked.boxes], crs=checked.crs,
            models=models_for(("segmenter",)), raster=raster,
            tiling=_tiling(checked, PROMPT_TILING), polygons=PolygonOptions(**polygons_kw),
            output=folder, progress=progress,
        )  # fmt: skip
    return _record(served.id, result.to_dict())


def _finished_before(folder: Path) -> dict[str, Any] | None:
    """The report a job wrote before the server stopped (its outputs are then complete)."""
    if not folder.is_dir():
        return None
    for path in folder.glob("*.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and "outputs" in report and "settings" in report:
            return report
    return None


#: What a job's record keeps of its verb's result (the rest stays in its report file).
SUMMARY_KEYS = ("answer", "found", "entity", "classes", "objects", "tiles", "warnings", "notes")


def _record(scene_id: str, result: dict[str, Any]) -> dict[str, Any]:
    files = {**result.get("outputs", {}), **result.get("sidecars", {})}
    return {
        "scene": scene_id,
        "outputs": {kind: Path(path).name for kind, path in files.items()},
        "summary": {k: result[k] for k in SUMMARY_KEYS if k in result},
    }


def _run_outputs(folder: Path) -> dict[str, str]:
    """The files a `run` job hands out: its results list and report (per-line outputs stay
    in their folders)."""
    names = {"results": "results.jsonl", "report": "report.json"}
    return {kind: name for kind, name in names.items() if (folder / name).is_file()}


def _plain(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    return json.loads(json.dumps(to_dict() if callable(to_dict) else value, default=str))
