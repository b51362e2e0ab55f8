"""The public verbs: prompt, segment, ask, evaluate, score. The CLI mirrors these one to one."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from terramask.errors import InputError

if TYPE_CHECKING:
    from terramask.methods.geoseg import BoxRefinement
    from terramask.methods.ovss import OvssPredictor
    from terramask.pipeline.ask_run import AskResult
    from terramask.pipeline.batch import BatchSummary
    from terramask.pipeline.prompt_run import PromptResult
    from terramask.pipeline.segment_run import SegmentResult
    from terramask.protocols import MLLM, Segmenter, SemanticEngine
    from terramask.scene import OutputSet, PromptFile

Progress = Callable[[str, int, int], None]

Point = tuple[float, float]
Box = tuple[float, float, float, float]


def prompt(
    scene: str | os.PathLike,
    *,
    points: Sequence[Point] = (),
    negatives: Sequence[Point] = (),
    boxes: Sequence[Box] = (),
    crs: str | None = None,
    prompt_file: str | os.PathLike | PromptFile | None = None,
    prompt_layer: str | None = None,
    segmenter: str | Segmenter | None = None,
    output: str | os.PathLike = "terramask-out",
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    tile_size: int = 1024,
    overlap: int = 256,
    simplify: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    outside: str = "error",
    progress: Progress | None = None,
) -> PromptResult:
    """Segment the objects under clicks and boxes; write mask, scores, polygons and preview.

    Points and boxes are in pixels of the scene, or in map coordinates of `crs`; a vector
    file of prompts (`prompt_file`, a path or a `PromptFile` already read) may add more. All
    positive and negative clicks form one object; each box is its own object (a single box
    joins the clicks). A prompt outside the scene is an error, unless `outside="drop"`: then
    it is left out (boxes are clipped), and a scene left with no prompt raises `NothingToDo`.
    Outputs go to `output`, named after the scene, and are never overwritten unless
    `overwrite`. `segmenter` is a model id, alias or folder, or an already loaded `Segmenter`.
    """
    from terramask.errors import NothingToDo
    from terramask.models import load_segmenter
    from terramask.pipeline.prompt_run import PROMPT_OUTPUTS, run_prompts
    from terramask.scene import (
        PromptFile,
        describe_extent,
        open_scene,
        prompts_from_options,
        prompts_from_vector,
        read_prompt_file,
    )

    if not (points or negatives or boxes or prompt_file is not None):
        raise InputError(_NO_PROMPT)
    if prompt_file is not None and not isinstance(prompt_file, PromptFile):
        prompt_file = read_prompt_file(prompt_file, layer=prompt_layer)
    with open_scene(scene, bands=bands, stretch=stretch) as opened:
        outputs = _checked_outputs(opened, output, overwrite, PROMPT_OUTPUTS)
        object_prompts = []
        if points or negatives or boxes:
            object_prompts += prompts_from_options(
                opened, points=points, negatives=negatives, boxes=boxes, crs=crs,
                outside=outside,
            )  # fmt: skip
        if prompt_file is not None:
            object_prompts += prompts_from_vector(opened, prompt_file, outside=outside)
        if not object_prompts:  # only when dropping: every prompt lies outside
            prompt_crs = crs if crs is not None or prompt_file is None else prompt_file.crs
            raise NothingToDo(
                f"No prompt falls inside this scene: {describe_extent(opened, prompt_crs)}."
            )
        model = (
            load_segmenter(None if segmenter is None else str(segmenter), device=device)
            if segmenter is None or isinstance(segmenter, str | os.PathLike)
            else segmenter
        )
        return run_prompts(
            opened,
            object_prompts,
            model,
            outputs,
            tile_size=tile_size,
            overlap=overlap,
            simplify=simplify,
            progress=progress,
        )


_NO_PROMPT = (
    "No prompt was given: add at least one --point X,Y or --box X1,Y1,X2,Y2 (pixels, or map "
    "coordinates with --crs), or a vector file with --prompts."
)


def prompt_many(
    inputs: str | os.PathLike,
    *,
    points: Sequence[Point] = (),
    negatives: Sequence[Point] = (),
    boxes: Sequence[Box] = (),
    crs: str | None = None,
    prompt_file: str | os.PathLike | PromptFile | None = None,
    prompt_layer: str | None = None,
    asset: str | None = None,
    output: str | os.PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
    **options: object,
) -> BatchSummary:
    """`prompt` over many scenes: a folder, a glob, a .txt list or a STAC item/collection.

    The same prompts go to every scene. Each prompt reaches the scenes it falls in: a point
    outside a scene is left out for that scene, a box is clipped to it or left out, and an
    object left with no positive point and no box is left out (`outside="drop"` of `prompt`).
    Pixel coordinates (no `crs`) mean the same pixels in every scene. A scene with no prompt
    inside is *skipped*, not failed: nothing is segmented, its report says why (so a re-run
    skips it too), and the summary lists it under `skipped`. Prompts are checked, and a prompt
    file read, once before the first scene. Outputs, index, summary and resuming are as for
    `segment_many`; a scene left without its report by an interrupted run is redone, replacing
    the outputs it had written. `options` are `prompt`'s (segmenter, tile_size, device, ...).
    """
    from terramask.pipeline.batch import run_batch
    from terramask.scene import PromptFile, check_prompt_options, expand_inputs, read_prompt_file

    sources = expand_inputs(inputs, asset=asset)
    points, negatives, boxes = list(points), list(negatives), list(boxes)
    if not (points or negatives or boxes or prompt_file is not None):
        raise InputError(_NO_PROMPT)
    check_prompt_options(points=points, negatives=negatives, boxes=boxes, crs=crs)
    if prompt_file is not None and not isinstance(prompt_file, PromptFile):
        prompt_file = read_prompt_file(prompt_file, layer=prompt_layer)

    def run_one(source: str) -> dict:
        result = prompt(
            source, points=points, negatives=negatives, boxes=boxes, crs=crs,
            prompt_file=prompt_file, output=output, overwrite=True, outside="drop", **options,
        )  # fmt: skip
        return {**result.to_dict(), "found": any(not o["empty"] for o in result.objects)}

    return run_batch(sources, run_one, output, overwrite=overwrite, progress=progress)


def _checked_outputs(
    scene: object, output: str | os.PathLike, overwrite: bool, kinds: Sequence[str]
) -> OutputSet:
    """The scene's output set, checked before any model work (no GeoJSON without a CRS)."""
    from terramask.scene import OutputSet

    outputs = OutputSet(output, scene.name, overwrite=overwrite)
    outputs.check([k for k in kinds if scene.georeferenced or k != "geojson"])
    return outputs


def segment(
    scene: str | os.PathLike,
    classes: Sequence[str],
    *,
    engine: str = "sam+clip",
    segmenter: str | None = None,
    image_text: str | None = None,
    sam3: str | None = None,
    grid: int = 29,
    prune: bool = True,
    threshold: float | None = None,
    background: str | None = None,
    output: str | os.PathLike = "terramask-out",
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    tile_size: int = 1024,
    overlap: int = 128,
    simplify: float | None = None,
    min_area_px: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    predictor: OvssPredictor | None = None,
    ray: str | None = None,
    ray_workers: int | None = None,
    progress: Progress | None = None,
) -> SegmentResult:
    """Label every pixel of a scene with one of `classes` (open vocabulary, no training).

    Each class is "name" or "name,synonym,..."; the first name names it in the outputs.
    Pixels whose best probability is below `threshold` become the `background` class (added
    if not among the classes) or "no class" (0). Engines: "clip" (dense CLIP), "sam+clip"
    (dense CLIP voted by SAM masks from a `grid` x `grid` point grid, decoded coarse to fine
    unless `prune` is False: points inside a mask already found whose dense class is that
    mask's are skipped), "sam3" (SAM 3 concepts). A ready `predictor` replaces the engine and
    model options.

    Finished tiles are kept under `output/.terramask-work/` until the outputs are written, so
    re-running after a crash or Ctrl-C resumes. `ray` ("local" or a cluster address) runs
    tiles on Ray actors (`ray_workers` of them) instead of in this process; outputs are the
    same.
    """
    from terramask.methods.vocabulary import ClassVocabulary
    from terramask.pipeline.engines import PredictorSpec
    from terramask.pipeline.segment_run import SEGMENT_OUTPUTS, InProcessRunner, run_segment
    from terramask.pipeline.tile_store import WORK_FOLDER
    from terramask.scene import OutputSet, open_scene

    vocabulary = ClassVocabulary.parse(classes, background=background)
    spec = PredictorSpec.of(
        engine, segmenter=segmenter, image_text=image_text, sam3=sam3, device=device,
        threshold=threshold, grid=grid, prune=prune,
    )  # fmt: skip
    with open_scene(scene, bands=bands, stretch=stretch) as opened:
        # Outputs without the report (written last) beside kept tiles are what an interrupted
        # run left: the same command replaces them, as it resumes.
        left_over = (Path(output) / WORK_FOLDER / opened.name).is_dir() and not (
            OutputSet(output, opened.name).path("report").exists()
        )
        outputs = _checked_outputs(opened, output, overwrite or left_over, SEGMENT_OUTPUTS)
        if predictor is not None:
            runner = InProcessRunner(opened, predictor, vocabulary)
        elif ray is not None:
            from terramask.pipeline.ray_backend import RayRunner

            runner = RayRunner(ray, spec, opened, vocabulary, workers=ray_workers)
        else:
            runner = InProcessRunner(opened, spec.build(), vocabulary, spec.description)
        return run_segment(
            opened,
            vocabulary,
            runner,
            outputs,
            tile_size=tile_size,
            overlap=overlap,
            simplify=simplify,
            min_area_px=min_area_px,
            progress=progress,
        )


def segment_many(
    inputs: str | os.PathLike,
    classes: Sequence[str],
    *,
    asset: str | None = None,
    output: str | os.PathLike = "terramask-out",
    overwrite: bool = False,
    engine: str = "sam+clip",
    segmenter: str | None = None,
    image_text: str | None = None,
    sam3: str | None = None,
    grid: int = 29,
    prune: bool = True,
    threshold: float | None = None,
    device: str = "auto",
    predictor: OvssPredictor | None = None,
    progress: Progress | None = None,
    **options: object,
) -> BatchSummary:
    """`segment` over many scenes: a folder, a glob, a .txt list or a STAC item/collection.

    Models load once. Each scene gets its own result set in `output`, all polygons also go to
    `output/index.gpkg` (field `scene`), and `output/summary.json` records what happened.
    Scenes already done (their report exists) are skipped, and a scene interrupted midway
    resumes from its finished tiles (outputs it left without a report are replaced), so
    re-running the same command resumes.
    """
    from terramask.pipeline.batch import run_batch
    from terramask.scene import expand_inputs

    sources = expand_inputs(inputs, asset=asset)

    def run_one(source: str) -> dict:
        result = segment(
            source, classes, engine=engine, segmenter=segmenter, image_text=image_text,
            sam3=sam3, grid=grid, prune=prune, threshold=threshold, device=device,
            predictor=predictor, output=output, overwrite=True, **options,
        )  # fmt: skip
        return result.to_dict()

    return run_batch(sources, run_one, output, overwrite=overwrite, progress=progress)


def ask(
    scene: str | os.PathLike,
    question: str,
    *,
    engine: str = "geoseg",
    mllm_url: str | None = None,
    mllm_model: str | None = None,
    mllm_key: str | None = None,
    mllm_timeout: float = 60.0,
    mllm_retries: int = 4,
    mllm_cache: bool = True,
    mllm_concurrency: int = 4,
    segmenter: str | None = None,
    image_text: str | None = None,
    sam3: str | None = None,
    refine: str = "geoseg",
    calibration: str | os.PathLike | None = None,
    output: str | os.PathLike = "terramask-out",
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    tile_size: int = 1024,
    overview_size: int = 2048,
    simplify: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    mllm: MLLM | None = None,
    progress: Progress | None = None,
) -> AskResult:
    """Answer a question about a scene with a mask, polygons and the model's words.

    The multimodal LLM is an OpenAI-compatible endpoint (`mllm_url` + `mllm_model`, key from
    `mllm_key` or $OPENAI_API_KEY), a local Qwen-VL (`mllm_model` alone: hub id or folder),
    or a ready `mllm`. Engines: "geoseg" (refined box, CLIP-Surgery clicks and SAM 3 or dense
    CLIP, fused), "clicks" (the MLLM's clicks into SAM), "box" (its box into SAM). `refine`
    is "geoseg" (published), "none", or "calibrated" (the file `calibration` that
    `terramask calibrate` wrote). `mllm_concurrency` bounds requests in flight (`ask_many`).
    """
    from terramask import models
    from terramask.methods.geoseg import DualRoute
    from terramask.pipeline.ask_run import ASK_OUTPUTS, run_ask
    from terramask.scene import open_scene

    _check_question(engine, question)
    refinement = _refinement(refine, calibration)
    with open_scene(scene, bands=bands, stretch=stretch) as opened:
        outputs = _checked_outputs(opened, output, overwrite, ASK_OUTPUTS)
        model = mllm or _mllm(
            mllm_url, mllm_model, mllm_key, device, timeout_s=mllm_timeout,
            retries=mllm_retries, cache=mllm_cache, concurrency=mllm_concurrency,
        )  # fmt: skip
        sam = models.load_segmenter(segmenter, device=device)
        route = None
        if engine == "geoseg":
            route = DualRoute(
                sam,
                image_text=models.load_image_text(image_text, device=device),
                concept=models.load_concept_segmenter(sam3, device=device) if sam3 else None,
            )
        return run_ask(
            opened,
            question,
            model,
            sam,
            outputs,
            engine=engine,
            route=route,
            refinement=refinement,
            overview_size=overview_size,
            tile_size=tile_size,
            simplify=simplify,
            progress=progress,
        )


def _check_question(engine: str, question: str) -> None:
    from terramask.pipeline.ask_run import ASK_ENGINES

    if engine not in ASK_ENGINES:
        raise InputError(f"Unknown engine {engine!r} for ask: choose {', '.join(ASK_ENGINES)}.")
    if not question or not question.strip():
        raise InputError("The question is empty: say what to find, e.g. 'the largest pond'.")


#: Scenes whose overviews are held at once while their replies are fetched (bounds memory).
_ASK_AHEAD = 8


def ask_many(
    inputs: str | os.PathLike,
    question: str,
    *,
    asset: str | None = None,
    output: str | os.PathLike = "terramask-out",
    overwrite: bool = False,
    engine: str = "geoseg",
    mllm_url: str | None = None,
    mllm_model: str | None = None,
    mllm_key: str | None = None,
    mllm_timeout: float = 60.0,
    mllm_retries: int = 4,
    mllm_cache: bool = True,
    mllm_concurrency: int = 4,
    refine: str = "geoseg",
    calibration: str | os.PathLike | None = None,
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    overview_size: int = 2048,
    device: str = "auto",
    mllm: MLLM | None = None,
    progress: Progress | None = None,
    **options: object,
) -> BatchSummary:
    """`ask` over many scenes: the same question about each scene of a folder, glob, list or STAC.

    The MLLM client is made once and models load once. With a reply cache (the default) and a
    client that can ask concurrently (an endpoint), the overviews of all scenes not yet done
    are first sent `mllm_concurrency` at a time, a few scenes ahead; the scenes are then
    segmented one by one and meet their replies in the cache. A scene whose request failed
    there is recorded as failed without being asked again. "Nothing found" is an answer: the
    scene is processed (its report holds the model's words) and listed under `nothing_found`.
    Outputs, index, summary and resuming are as for `segment_many`; a scene left without its
    report by an interrupted run is redone. `options` are `ask`'s (segmenter, tile_size, ...).
    """
    from terramask.errors import TerraMaskError
    from terramask.pipeline.ask_run import mllm_request, warm_replies
    from terramask.pipeline.batch import run_batch
    from terramask.scene import expand_inputs, open_scene

    sources = expand_inputs(inputs, asset=asset)
    _check_question(engine, question)
    _refinement(refine, calibration)
    model = mllm or _mllm(
        mllm_url, mllm_model, mllm_key, device, timeout_s=mllm_timeout, retries=mllm_retries,
        cache=mllm_cache, concurrency=mllm_concurrency,
    )  # fmt: skip
    failed_asking: dict[str, TerraMaskError] = {}

    def prepare(pending: list[str]) -> None:
        asked: list[str] = []

        def requests():
            for source in pending:
                try:
                    with open_scene(source, bands=bands, stretch=stretch) as opened:
                        request = mllm_request(
                            opened, question, engine=engine, overview_size=overview_size
                        )
                except TerraMaskError:
                    continue  # the scene's own run records why
                asked.append(source)
                yield request

        failures = warm_replies(
            model, requests(), chunk=max(_ASK_AHEAD, mllm_concurrency), progress=progress,
            total=len(pending),
        )  # fmt: skip
        failed_asking.update({asked[i]: error for i, error in failures.items()})

    def run_one(source: str) -> dict:
        if source in failed_asking:
            raise failed_asking.pop(source)
        result = ask(
            source, question, engine=engine, mllm=model, refine=refine, calibration=calibration,
            bands=bands, stretch=stretch, overview_size=overview_size, device=device,
            output=output, overwrite=True, **options,
        )  # fmt: skip
        return result.to_dict()

    return run_batch(
        sources, run_one, output, overwrite=overwrite, progress=progress, prepare=prepare
    )


def calibrate(
    dataset: str,
    root: str | os.PathLike,
    *,
    output: str | os.PathLike = "refine.json",
    split: str | None = None,
    limit: int | None = 50,
    mllm_url: str | None = None,
    mllm_model: str | None = None,
    mllm_key: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    mllm: MLLM | None = None,
    progress: Progress | None = None,
) -> dict:
    """Fit the box refinement for an MLLM on a labelled referring/reasoning data set.

    Writes the refinement to `output` for `ask --refine calibrated --calibration FILE` and
    returns mean box IoU with no refinement, GeoSeg's, and the fitted one.
    """
    from terramask.pipeline.calibrate_run import run_calibration

    model = mllm or _mllm(mllm_url, mllm_model, mllm_key, device)
    return run_calibration(
        dataset, root, model, output, split=split, limit=limit, overwrite=overwrite,
        progress=progress,
    )  # fmt: skip


def _mllm(
    url: str | None,
    model: str | None,
    key: str | None,
    device: str,
    *,
    timeout_s: float = 60.0,
    retries: int = 4,
    cache: bool = True,
    concurrency: int = 4,
) -> MLLM:
    """An OpenAI-compatible client when a URL is given, else a local Qwen-VL.

    Replies are cached (keyed by image, prompt, model and settings) unless `cache` is off,
    so re-running a question or an evaluation costs nothing.
    """
    if url:
        from terramask.models.mllm import OpenAIChatMLLM, ReplyCache

        if not model:
            raise InputError(
                f"--mllm-url {url} needs --mllm-model: the model name that endpoint serves "
                "(e.g. gpt-5, or the name a vLLM/Ollama server was started with)."
            )
        return OpenAIChatMLLM(
            url,
            model,
            api_key=key,
            timeout_s=timeout_s,
            max_retries=retries,
            max_concurrency=concurrency,
            cache=ReplyCache() if cache else None,
        )
    if model:
        from terramask.models.mllm import ReplyCache, load_mllm

        return load_mllm(model, device=device, cache=ReplyCache() if cache else None)
    raise InputError(
        "ask needs a multimodal LLM: --mllm-url URL --mllm-model NAME for an OpenAI-compatible "
        "endpoint (GPT-5, vLLM, SGLang, Ollama), or --mllm-model FOLDER_OR_HUB_ID for a local "
        "Qwen2.5-VL / Qwen3-VL."
    )


def _refinement(refine: str, calibration: str | os.PathLike | None) -> BoxRefinement:
    from terramask.methods.geoseg import GEOSEG_REFINEMENT, BoxRefinement

    if refine == "geoseg":
        return GEOSEG_REFINEMENT
    if refine == "none":
        return BoxRefinement.none()
    if refine == "calibrated":
        if calibration is None or not os.path.isfile(calibration):
            raise InputError(
                f"--refine calibrated needs the file `terramask calibrate` wrote, passed with "
                f"--calibration FILE (got {calibration!r})."
            )
        try:
            return BoxRefinement.load(calibration)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"The calibration file {calibration} is not one `terramask calibrate` wrote "
                f"({exc}); run calibrate again."
            ) from exc
    raise InputError(f"--refine must be geoseg, none or calibrated, not {refine!r}.")


def evaluate(
    dataset: str,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    engine: str | OvssPredictor | SemanticEngine | None = None,
    threshold: float | None = None,
    output: str | os.PathLike = "terramask-out",
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
    **model_options: str | int | None,
) -> dict:
    """Run a method on an OVSS benchmark and report its metrics beside the published numbers.

    `dataset` names a preset (`terramask.eval.presets.list_presets()`); `root` is the data
    set's folder in the preset's layout. `split` defaults to the preset's (e.g. val), `limit`
    takes the first N images by name. `engine` is an engine name (clip, sam+clip, sam3; the
    default is sam+clip, as for `segment`) built with `model_options` (segmenter, image_text,
    sam3, grid, prune), or a ready `OvssPredictor` / `SemanticEngine`. `threshold` overrides the
    preset's. Writes predictions, report.json and report.md to `output/<dataset>_<split>`
    and returns the report.
    """
    from pathlib import Path

    from terramask.eval.ovss import evaluate_ovss
    from terramask.eval.presets import load_preset
    from terramask.eval.referring_datasets import referring_dataset_names

    if dataset.strip().lower().replace("_", "-") in referring_dataset_names():
        return _evaluate_referring(
            dataset, root, split=split, limit=limit, engine=engine, output=output,
            device=device, overwrite=overwrite, progress=progress, **model_options,
        )  # fmt: skip
    preset = load_preset(dataset)
    chosen_split = split or preset.layout.split
    built_here = engine is None or isinstance(engine, str)
    method = (engine or "sam+clip") if built_here else None
    given = {k: v for k, v in model_options.items() if v is not None}

    def build() -> OvssPredictor:
        from terramask.pipeline.engines import build_predictor

        return build_predictor(
            method,
            device=device,
            threshold=preset.threshold if threshold is None else threshold,
            # the SAM-voting paper keeps masks per target class on single-class sets
            single_class=1 if preset.kind == "single-class" else None,
            **given,
        )

    folder = preset.name if not preset.layout.has_split else f"{preset.name}_{chosen_split}"
    return evaluate_ovss(
        preset,
        root,
        split=chosen_split,
        limit=limit,
        engine=build if built_here else engine,
        threshold=threshold,
        output_dir=Path(output) / folder,
        overwrite=overwrite,
        progress=progress,
        models={k: str(v) for k, v in given.items()},
        method=method,
    )


def _evaluate_referring(
    dataset: str,
    root: str | os.PathLike,
    *,
    split: str | None,
    limit: int | None,
    engine: object,
    output: str | os.PathLike,
    device: str,
    overwrite: bool,
    progress: Progress | None,
    mllm: MLLM | None = None,
    mllm_url: str | None = None,
    mllm_model: str | None = None,
    mllm_key: str | None = None,
    segmenter: str | None = None,
    image_text: str | None = None,
    sam3: str | None = None,
    refine: str = "geoseg",
    calibration: str | os.PathLike | None = None,
    overview_size: int = 2048,
    mllm_timeout: float = 60.0,
    mllm_retries: int = 4,
    mllm_concurrency: int = 4,
    **ignored: object,
) -> dict:
    """A referring/reasoning benchmark: every sample through the `ask` engines, in memory.

    With an endpoint, replies are first fetched `mllm_concurrency` at a time into the reply
    cache; the evaluation then meets them as cache hits and segments one sample at a time.
    """
    from pathlib import Path

    from terramask import models
    from terramask.eval.referring import evaluate_referring
    from terramask.eval.referring_datasets import load_referring_dataset
    from terramask.methods.geoseg import DualRoute
    from terramask.pipeline.ask_run import (
        ASK_ENGINES,
        locate,
        located_mask,
        mllm_request,
        warm_replies,
    )
    from terramask.scene.memory import ArrayScene

    method = engine if isinstance(engine, str) else "geoseg"
    if method not in ASK_ENGINES:
        raise InputError(
            f"Unknown engine {method!r} for {dataset}: choose {', '.join(ASK_ENGINES)}."
        )
    refinement = _refinement(refine or "geoseg", calibration)
    model = mllm or _mllm(
        mllm_url, mllm_model, mllm_key, device,
        timeout_s=mllm_timeout, retries=mllm_retries, concurrency=mllm_concurrency,
    )  # fmt: skip
    samples = load_referring_dataset(dataset, root, split=split, limit=limit).samples

    def request(sample):  # what `locate` will show the MLLM for this sample
        scene = ArrayScene(sample.load_image())
        return mllm_request(scene, sample.question, engine=method, overview_size=overview_size)

    warm_replies(model, map(request, samples))
    loaded: dict = {}  # models load at the first sample, after the data set was checked

    def predict(image, question: str):
        if not loaded:
            loaded["sam"] = models.load_segmenter(segmenter, device=device)
            loaded["route"] = (
                DualRoute(
                    loaded["sam"],
                    image_text=models.load_image_text(image_text, device=device),
                    concept=models.load_concept_segmenter(sam3, device=device) if sam3 else None,
                )
                if method == "geoseg"
                else None
            )
        located = locate(
            ArrayScene(image), question, model, loaded["sam"], engine=method,
            route=loaded["route"], refinement=refinement, overview_size=overview_size,
        )  # fmt: skip
        height, width = image.shape[:2]
        return located_mask(located, height, width), located.answer or ""

    name = dataset.strip().lower().replace("_", "-")
    folder = name if split is None else f"{name}_{split}"
    return evaluate_referring(
        dataset,
        root,
        split=split,
        limit=limit,
        predict=predict,
        output_dir=Path(output) / folder,
        overwrite=overwrite,
        progress=progress,
        method=method,
        models={"mllm": model.name, "segmenter": segmenter or "default"},
    )


def score(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    *,
    classes: str | Sequence[str],
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Score a folder of predicted label maps against ground truth (mIoU, aAcc, per class).

    `classes` are the names in index order, a list or one comma-separated string; files are
    paired by name without extension. With `reduce_zero_label` ground truth 0 is ignored and
    other ids move down one (LoveDA, ISPRS).
    """
    from terramask.eval.score import score_folders

    names = (
        [c.strip() for c in classes.split(",") if c.strip()]
        if isinstance(classes, str)
        else list(classes)
    )
    return score_folders(
        pred_dir,
        gt_dir,
        names,
        ignore_index=ignore_index,
        reduce_zero_label=reduce_zero_label,
        progress=progress,
    )


__all__ = [
    "PromptResult",
    "ask",
    "ask_many",
    "evaluate",
    "prompt",
    "prompt_many",
    "score",
    "segment",
    "segment_many",
]
