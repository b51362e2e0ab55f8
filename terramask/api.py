"""The public verbs: prompt, segment, ask (each with a `*_many` twin), evaluate, score, calibrate.

The command line mirrors these one to one. Each verb checks its options before any file is
read or model loaded, refuses options that would be ignored by the chosen engine or data set
(`terramask.rules`), and delegates: scenes to `scene/`, models to `models/` and
`pipeline/engines.py`, the work to `pipeline/` and `eval/`. Options travel as the frozen
objects of `terramask.options`, each default written there once.

    from terramask import api
    from terramask.options import ModelOptions, Tiling

    result = api.segment("scene.tif", ["building", "road,street", "water"],
                         models=ModelOptions(segmenter="sam-vit-large"),
                         tiling=Tiling(tile=1024, overlap=128), output="out")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terramask import rules
from terramask.errors import InputError
from terramask.options import (
    INDEX_CRS,
    PROMPT_TILING,
    REFERENCE_GENERATION,
    AskEngine,
    AskOptions,
    BenchmarkProtocol,
    ClickSynthesis,  # tuned clicks (#13)
    ClickTraining,  # tuned clicks (#13)
    DataRecipe,  # instruction data (#14)
    GenerationSettings,
    MLLMOptions,
    ModelOptions,
    Outside,
    PolygonOptions,
    PromptEngine,  # UniGeoSeg (#16)
    RasterOptions,
    RayOptions,
    SegmentEngine,
    Tiling,
    UniGeoSegOptions,  # UniGeoSeg (#16)
    UniGeoSegTraining,  # UniGeoSeg (#16)
    changed,
)
from terramask.protocols import MLLM, Progress

if TYPE_CHECKING:
    from terramask.methods.ovss import OvssPredictor
    from terramask.methods.vocabulary import ClassVocabulary
    from terramask.pipeline.ask_run import AskResult
    from terramask.pipeline.batch import BatchSummary
    from terramask.pipeline.engines import PredictorSpec
    from terramask.pipeline.prompt_run import PromptResult
    from terramask.pipeline.segment_run import SegmentResult
    from terramask.protocols import SemanticEngine
    from terramask.scene import OutputSet, PromptFile, SceneReader

#: A click, (x, y): scene pixels, or map coordinates in `crs`.
Point = tuple[float, float]
#: A box, (x1, y1, x2, y2): left, top, right, bottom in pixels; min x, min y, max x, max y on a map.
Box = tuple[float, float, float, float]
PathLike = str | os.PathLike

_NO_PROMPT = (
    "No prompt was given: add at least one click (`points`) or box (`boxes`), in pixels or "
    "in map coordinates with `crs`, or a vector file of prompts (`prompt_file`)."
)


# ----------------------------------------------------------------------------------- prompt


def prompt(
    scene: PathLike,
    *,
    points: Sequence[Point] = (),
    negatives: Sequence[Point] = (),
    boxes: Sequence[Box] = (),
    crs: str | None = None,
    prompt_file: PathLike | PromptFile | None = None,
    prompt_layer: str | None = None,
    models: ModelOptions = ModelOptions(),
    raster: RasterOptions = RasterOptions(),
    tiling: Tiling = PROMPT_TILING,
    polygons: PolygonOptions = PolygonOptions(),
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    outside: Outside = "error",
    progress: Progress | None = None,
    engine: PromptEngine = "sam",  # UniGeoSeg (#16)
    unigeoseg: UniGeoSegOptions | None = None,  # UniGeoSeg (#16)
) -> PromptResult:
    """Segment the objects under clicks and boxes; write mask, scores, polygons and preview.

    All positive and negative clicks form one object; each box is its own object (a single
    box joins the clicks). Each prompt is segmented on the tile that holds it, so a scene of
    any size is never read whole.

    Args:
        scene: A raster path or URL (GeoTIFF, COG, any GDAL raster).
        points: Positive clicks, (x, y) each.
        negatives: Negative clicks: where the object is not.
        boxes: Boxes, one object each.
        crs: The CRS of `points` and `boxes` (e.g. "EPSG:4326"); None means scene pixels.
        prompt_file: A vector file of prompts (points with `positive`/`group`/`name` fields,
            polygons as boxes), or one already read with `scene.read_prompt_file`.
        prompt_layer: The layer of `prompt_file` to read.
        models: The segmenter (`ModelOptions.segmenter`) and device.
        raster: Bands and stretch.
        tiling: The windows prompts are routed to.
        polygons: Simplification of the outlines.
        output: The folder outputs go to, named after the scene.
        overwrite: Replace outputs of the same name.
        outside: "error": a prompt outside the scene is refused; "drop": it is left out
            (boxes clipped), and a scene left with no prompt raises `NothingToDo`.
        progress: Called with (stage, done, total).
        engine: "sam" (`ModelOptions.segmenter`) or "unigeoseg" (`ModelOptions.unigeoseg`:
            each object's 1-3 positive clicks or one box become UniGeoSeg's interactive
            instruction; only `UniGeoSegOptions.dtype` applies).
        unigeoseg: Engine unigeoseg: the weights' precision.

    Returns:
        The files written and one summary per object (score, area, box, prompts).

    Raises:
        InputError: Bad options or prompts (before any work), an unreadable raster.
        OutputExistsError: Outputs exist and `overwrite` is false.
        ModelNotFoundError, ModelLoadError: The segmenter cannot be found or loaded.
    """
    _one_scene(scene, "prompt_many", raster)
    has_coordinates = bool(points or negatives or boxes)
    _check_prompt_engine(engine, models, polygons, unigeoseg, points=points,  # UniGeoSeg (#16)
                         negatives=negatives, boxes=boxes, crs=crs)  # fmt: skip
    prompt_file = _prompt_file(has_coordinates, prompt_file, prompt_layer)

    from terramask.errors import NothingToDo
    from terramask.models import load_segmenter
    from terramask.pipeline.prompt_run import PROMPT_OUTPUTS, run_prompts
    from terramask.scene import (
        describe_extent,
        open_scene,
        prompts_from_options,
        prompts_from_vector,
    )
    with open_scene(scene, raster) as opened:
        outputs = _checked_outputs(opened, output, overwrite, PROMPT_OUTPUTS)
        object_prompts = []
        if has_coordinates:
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
        if engine == "unigeoseg":  # UniGeoSeg (#16)
            segmenter = _unigeoseg_segmenter(object_prompts, models, unigeoseg)
        else:
            segmenter = load_segmenter(models.segmenter, device=models.device)
        settings = _settings(
            "prompt", points=points, negatives=negatives, boxes=boxes, crs=crs,
            prompt_file=_prompt_source(prompt_file, prompt_layer), outside=outside,
            segmenter=_prompt_model_name(engine, models), raster=raster, tiling=tiling,
            polygons=polygons, **_prompt_engine_settings(engine, unigeoseg),  # (#16)
        )  # fmt: skip
        return run_prompts(
            opened, object_prompts, segmenter, outputs, tiling=tiling, polygons=polygons,
            settings=settings, progress=progress,
        )  # fmt: skip


def prompt_many(
    inputs: PathLike,
    *,
    points: Sequence[Point] = (),
    negatives: Sequence[Point] = (),
    boxes: Sequence[Box] = (),
    crs: str | None = None,
    prompt_file: PathLike | PromptFile | None = None,
    prompt_layer: str | None = None,
    models: ModelOptions = ModelOptions(),
    raster: RasterOptions = RasterOptions(),
    tiling: Tiling = PROMPT_TILING,
    polygons: PolygonOptions = PolygonOptions(),
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    index_crs: str = INDEX_CRS,
    progress: Progress | None = None,
    engine: PromptEngine = "sam",  # UniGeoSeg (#16)
    unigeoseg: UniGeoSegOptions | None = None,  # UniGeoSeg (#16)
) -> BatchSummary:
    """`prompt` over many scenes: a folder, a glob, a .txt list or a STAC item/collection.

    The same prompts go to every scene. Each prompt reaches the scenes it falls in: a point
    outside a scene is left out for that scene, a box is clipped to it or left out, and an
    object left with no positive point and no box is left out. Pixel coordinates (no `crs`)
    mean the same pixels in every scene. A scene with no prompt inside is *skipped*, not
    failed: nothing is segmented, its report says why (so a re-run skips it too). Prompts
    are checked, and a prompt file read, once before the first scene.

    Args:
        inputs: The scenes (see `scene.expand_inputs`); `raster.asset` picks a STAC asset.
        index_crs: The CRS of `output/index.gpkg`, which holds every scene's polygons.
        Others: as for `prompt`.

    Returns:
        What happened to each scene, the index and the summary file (`output/summary.json`).
        A scene already done (its report exists) is skipped; one left without its report by
        an interrupted run is redone. One scene's failure is recorded and the others go on.

    Raises:
        InputError: Bad options or prompts, or no scene found (before any scene runs).
    """
    from terramask.pipeline.batch import run_batch
    from terramask.scene import check_prompt_options, expand_inputs
    from terramask.scene.index import check_index_crs

    sources = expand_inputs(inputs, asset=raster.asset)
    check_index_crs(index_crs)
    has_coordinates = bool(points or negatives or boxes)
    _check_prompt_engine(engine, models, polygons, unigeoseg, points=points,  # UniGeoSeg (#16)
                         negatives=negatives, boxes=boxes, crs=crs)  # fmt: skip
    check_prompt_options(points=points, negatives=negatives, boxes=boxes, crs=crs)
    prompt_file = _prompt_file(has_coordinates, prompt_file, prompt_layer)
    one_raster = _without_asset(raster)
    settings = _settings(
        "prompt", points=points, negatives=negatives, boxes=boxes, crs=crs,
        prompt_file=_prompt_source(prompt_file, prompt_layer), outside="drop",
        segmenter=_prompt_model_name(engine, models), raster=one_raster, tiling=tiling,
        polygons=polygons, **_prompt_engine_settings(engine, unigeoseg),  # (#16)
    )  # fmt: skip

    def run_one(source: str) -> dict:
        result = prompt(
            source, points=points, negatives=negatives, boxes=boxes, crs=crs,
            prompt_file=prompt_file, prompt_layer=prompt_layer, models=models,
            raster=one_raster, tiling=tiling, polygons=polygons, output=output,
            overwrite=True, outside="drop", engine=engine, unigeoseg=unigeoseg,  # (#16)
        )  # fmt: skip
        return {**result.to_dict(), "found": any(not o["empty"] for o in result.objects)}

    return run_batch(
        sources, run_one, output, settings=settings, overwrite=overwrite, progress=progress,
        index_crs=index_crs,
    )  # fmt: skip


def _prompt_source(prompt_file: PathLike | PromptFile | None, layer: str | None) -> object:
    """How a run's report names its prompt file (and layer)."""
    if prompt_file is None:
        return None
    source = getattr(prompt_file, "source", prompt_file)
    return {"file": os.fspath(source), "layer": layer}


def _prompt_file(
    has_coordinates: bool, prompt_file: PathLike | PromptFile | None, layer: str | None
) -> PromptFile | None:
    """The prompt file read and checked once; an InputError when there is no prompt at all."""
    from terramask.scene import PromptFile, read_prompt_file

    if not has_coordinates and prompt_file is None:
        raise InputError(_NO_PROMPT)
    if prompt_file is None or isinstance(prompt_file, PromptFile):
        return prompt_file
    return read_prompt_file(prompt_file, layer=layer)


# ----------------------------------------------------------------------------------- segment


def segment(
    scene: PathLike,
    classes: Sequence[str],
    *,
    engine: SegmentEngine = "sam+clip",
    threshold: float | None = None,
    background: str | None = None,
    generation: GenerationSettings = GenerationSettings(),
    models: ModelOptions = ModelOptions(),
    raster: RasterOptions = RasterOptions(),
    tiling: Tiling = Tiling(),
    polygons: PolygonOptions = PolygonOptions(),
    ray: RayOptions | None = None,
    predictor: OvssPredictor | None = None,
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SegmentResult:
    """Label every pixel of a scene with one of `classes` (open vocabulary, no training).

    The scene is processed tile by tile; finished tiles are kept under
    `output/.terramask-work/` until the outputs are written, so re-running the same call
    after a crash or Ctrl-C resumes (a store left by other settings is discarded).

    Args:
        scene: A raster path or URL.
        classes: Each "name" or "name,synonym,..."; the first name names the class.
        engine: "clip" (dense CLIP), "sam+clip" (dense CLIP voted by SAM's automatic
            masks) or "sam3" (SAM 3 concepts).
        threshold: Pixels whose best class probability is below it become `background`.
        background: The class name below-threshold pixels get (added if not among
            `classes`); without it they get value 0, "no class".
        generation: SAM's automatic mask generation (sam+clip): grid, pruning, filters.
        models: The models the engine uses, and the device.
        raster: Bands and stretch.
        tiling: Tile size and overlap (see the seam rule in README).
        polygons: Simplification and the smallest polygon kept.
        ray: Run tiles on Ray actors instead of in this process; outputs are the same.
        predictor: A ready predictor, replacing `engine`, `models` and `generation`.
        output: The folder outputs go to, named after the scene.
        overwrite: Replace outputs of the same name.
        progress: Called with (stage, done, total).

    Returns:
        The files written, pixels, area and polygons per class, tiles, timings.

    Raises:
        InputError: Bad options or classes (before any work), an unreadable raster.
        OutputExistsError: Outputs exist and `overwrite` is false.
        ModelNotFoundError, ModelLoadError: A model cannot be found or loaded.
    """
    from terramask.pipeline.engines import PredictorSpec

    _one_scene(scene, "segment_many", raster)
    _check_segment(engine, threshold, generation, models, ray, predictor)
    vocabulary = _vocabulary(classes, background)
    spec = PredictorSpec(engine, models, generation, threshold)
    settings = _segment_settings(vocabulary, spec, predictor, raster, tiling, polygons)

    from terramask.pipeline.segment_run import SEGMENT_OUTPUTS, InProcessRunner, run_segment
    from terramask.scene import open_scene
    with open_scene(scene, raster) as opened:
        outputs = _checked_outputs(opened, output, overwrite, SEGMENT_OUTPUTS)
        if predictor is not None:
            runner = InProcessRunner(opened, predictor, vocabulary, settings["engine"])
        elif ray is not None:
            from terramask.pipeline.ray_backend import RayRunner

            runner = RayRunner(ray, spec, opened, vocabulary)
        else:
            runner = InProcessRunner(opened, spec.build(), vocabulary, spec.description)
        return run_segment(
            opened, vocabulary, runner, outputs, tiling=tiling, polygons=polygons,
            settings=settings, progress=progress,
        )  # fmt: skip


def segment_many(
    inputs: PathLike,
    classes: Sequence[str],
    *,
    engine: SegmentEngine = "sam+clip",
    threshold: float | None = None,
    background: str | None = None,
    generation: GenerationSettings = GenerationSettings(),
    models: ModelOptions = ModelOptions(),
    raster: RasterOptions = RasterOptions(),
    tiling: Tiling = Tiling(),
    polygons: PolygonOptions = PolygonOptions(),
    ray: RayOptions | None = None,
    predictor: OvssPredictor | None = None,
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    index_crs: str = INDEX_CRS,
    progress: Progress | None = None,
) -> BatchSummary:
    """`segment` over many scenes: a folder, a glob, a .txt list or a STAC item/collection.

    Models load once. Each scene gets its own result set in `output`, all polygons also go
    to `output/index.gpkg` (field `scene`, in `index_crs`), and `output/summary.json`
    records what happened. Scenes already done (their report exists) are skipped, and a
    scene interrupted midway resumes from its finished tiles, so re-running the same call
    resumes. Arguments are `segment`'s, plus `index_crs`; `raster.asset` picks a STAC asset.

    Raises:
        InputError: Bad options or classes, or no scene found (before any scene runs).
    """
    from terramask.pipeline.batch import run_batch
    from terramask.scene import expand_inputs
    from terramask.scene.index import check_index_crs

    sources = expand_inputs(inputs, asset=raster.asset)
    check_index_crs(index_crs)
    _check_segment(engine, threshold, generation, models, ray, predictor)
    from terramask.pipeline.engines import PredictorSpec

    vocabulary = _vocabulary(classes, background)
    spec = PredictorSpec(engine, models, generation, threshold)
    one_raster = _without_asset(raster)
    settings = _segment_settings(vocabulary, spec, predictor, one_raster, tiling, polygons)

    def run_one(source: str) -> dict:
        result = segment(
            source, classes, engine=engine, threshold=threshold, background=background,
            generation=generation, models=models, raster=one_raster, tiling=tiling,
            polygons=polygons, ray=ray, predictor=predictor, output=output, overwrite=True,
        )  # fmt: skip
        return result.to_dict()

    return run_batch(
        sources, run_one, output, settings=settings, overwrite=overwrite, progress=progress,
        index_crs=index_crs,
    )  # fmt: skip


def _vocabulary(classes: Sequence[str], background: str | None) -> ClassVocabulary:
    """The classes to label with. One class alone gets a `background` class beside it (as
    `background="background"` would give): an argmax over one class labels every pixel."""
    from terramask.methods.vocabulary import ClassVocabulary

    vocabulary = ClassVocabulary.parse(classes, background=background)
    if len(vocabulary) == 1 and background is None:
        vocabulary = ClassVocabulary.parse(classes, background=AUTO_BACKGROUND)
    return vocabulary


#: The class added beside a single class (see `_vocabulary`).
AUTO_BACKGROUND = "background"


def _segment_settings(
    vocabulary: ClassVocabulary,
    spec: PredictorSpec,
    predictor: OvssPredictor | None,
    raster: RasterOptions,
    tiling: Tiling,
    polygons: PolygonOptions,
) -> dict:
    engine = (
        spec.description
        if predictor is None
        else {"engine": predictor.name, "threshold": predictor.threshold}
    )
    return _settings(
        "segment", classes=vocabulary.classes, background=vocabulary.background,
        engine=engine, raster=raster, tiling=tiling, polygons=polygons,
    )  # fmt: skip


def _check_segment(
    engine: str,
    threshold: float | None,
    generation: GenerationSettings,
    models: ModelOptions,
    ray: RayOptions | None,
    predictor: object,
) -> None:
    from terramask.options import SEGMENT_ENGINES, check_choice, check_probability

    check_choice(engine, SEGMENT_ENGINES, "engine")
    check_probability(threshold, "threshold")
    given = _given(
        models, generation, ray, engine=engine != "sam+clip", threshold=threshold is not None
    )
    rules.refuse(
        given, rules.segment_rules(engine, ray=ray is not None, predictor=predictor is not None)
    )


# ----------------------------------------------------------------------------------- ask


def ask(
    scene: PathLike,
    question: str,
    *,
    engine: AskEngine = "geoseg",
    mllm: MLLMOptions | MLLM = MLLMOptions(),
    models: ModelOptions = ModelOptions(),
    ask_options: AskOptions = AskOptions(),
    raster: RasterOptions = RasterOptions(),
    tile: int = Tiling.tile,
    polygons: PolygonOptions = PolygonOptions(),
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
    unigeoseg: UniGeoSegOptions | None = None,  # UniGeoSeg (#16)
) -> AskResult:
    """Answer a question about a scene with a mask, polygons and the model's words.

    The MLLM sees an overview of the scene; the boxes or clicks it answers with are mapped
    to scene pixels and segmented at full resolution on the windows they cover. "Nothing
    found" is an answer (an empty mask and the model's words), not an error.

    Args:
        scene: A raster path or URL.
        question: What to find, in words.
        engine: "geoseg" (refined box, CLIP-Surgery clicks and SAM 3 or dense CLIP, fused),
            "clicks" (the MLLM's clicks into SAM) or "box" (its box into SAM); "unigeoseg"
            (#16): UniGeoSeg (`ModelOptions.unigeoseg`) reads the question and segments by
            itself, no MLLM (docs/unigeoseg.md).
        mllm: The multimodal LLM: an endpoint or local model to connect to, or a ready
            client (anything with the `MLLM` protocol).
        models: The segmenter, CLIP and SAM 3 (geoseg's semantic route), and the device.
        ask_options: Box refinement and the overview size.
        raster: Bands and stretch.
        tile: The largest window segmented at full resolution, in pixels; larger windows
            are read decimated to it.
        polygons: Simplification of the outline.
        output: The folder outputs go to, named after the scene.
        overwrite: Replace outputs of the same name.
        progress: Called with (stage, done, total).
        unigeoseg: Engine unigeoseg: task, template, explanation, second look, precision.

    Returns:
        The answer, whether something was found, the files written, the raw reply and how
        it was read (boxes and clicks in pixel and map coordinates).

    Raises:
        InputError: Bad options or an empty question (before any work).
        MLLMError: The endpoint failed after its retries, or the reply cannot be used.
        OutputExistsError: Outputs exist and `overwrite` is false.
    """
    from terramask.pipeline.engines import box_refinement, build_ask_models

    _one_scene(scene, "ask_many", raster)
    if engine == "unigeoseg":  # UniGeoSeg (#16)
        return _ask_unigeoseg(scene, question, mllm, models, ask_options, raster, tile,
                              polygons, output, overwrite, progress, unigeoseg)  # fmt: skip
    _check_ask(engine, question, mllm, models, ask_options, tile, polygons, unigeoseg)
    refinement = box_refinement(ask_options)

    from terramask.pipeline.ask_run import ASK_OUTPUTS, run_ask
    from terramask.scene import open_scene
    with open_scene(scene, raster) as opened:
        outputs = _checked_outputs(opened, output, overwrite, ASK_OUTPUTS)
        client = _client(mllm, models.device)
        settings = _ask_settings(
            question, engine, client, models, ask_options, raster, tile, polygons
        )
        return run_ask(
            opened, question, client, build_ask_models(engine, models), outputs, engine=engine,
            refinement=refinement, ask_options=ask_options, tile=tile, polygons=polygons,
            settings=settings, progress=progress,
        )  # fmt: skip


#: Scenes whose overviews are held at once while their replies are fetched (bounds memory).
_ASK_AHEAD = 8


def ask_many(
    inputs: PathLike,
    question: str,
    *,
    engine: AskEngine = "geoseg",
    mllm: MLLMOptions | MLLM = MLLMOptions(),
    models: ModelOptions = ModelOptions(),
    ask_options: AskOptions = AskOptions(),
    raster: RasterOptions = RasterOptions(),
    tile: int = Tiling.tile,
    polygons: PolygonOptions = PolygonOptions(),
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    index_crs: str = INDEX_CRS,
    progress: Progress | None = None,
    unigeoseg: UniGeoSegOptions | None = None,  # UniGeoSeg (#16)
) -> BatchSummary:
    """`ask` over many scenes: the same question about each scene of a folder, glob, list or STAC.

    The MLLM client is made once and models load once. With a reply cache (the default) and
    a client that can ask concurrently (an endpoint), the overviews of all scenes not yet
    done are first sent `MLLMOptions.concurrency` at a time, a few scenes ahead; the scenes
    are then segmented one by one and meet their replies in the cache. A scene whose request
    failed there is recorded as failed without being asked again. "Nothing found" is an
    answer: the scene is processed (its report holds the model's words) and listed under
    `nothing_found`. Outputs, index, summary and resuming are as for `segment_many`.
    Arguments are `ask`'s, plus `index_crs`; `raster.asset` picks a STAC asset.

    Raises:
        InputError: Bad options, an empty question, or no scene found (before any scene runs).
    """
    from terramask.errors import TerraMaskError
    from terramask.pipeline.ask_run import mllm_request, warm_replies
    from terramask.pipeline.batch import run_batch
    from terramask.pipeline.engines import box_refinement
    from terramask.scene import expand_inputs, open_scene
    from terramask.scene.index import check_index_crs

    sources = expand_inputs(inputs, asset=raster.asset)
    check_index_crs(index_crs)
    if engine == "unigeoseg":  # UniGeoSeg (#16)
        return _ask_many_unigeoseg(sources, question, mllm, models, ask_options, raster, tile,
                                   polygons, output, overwrite, index_crs, progress,
                                   unigeoseg)  # fmt: skip
    _check_ask(engine, question, mllm, models, ask_options, tile, polygons, unigeoseg)
    box_refinement(ask_options)
    client = _client(mllm, models.device)
    one_raster = _without_asset(raster)
    failed_asking: dict[str, TerraMaskError] = {}

    def prepare(pending: list[str]) -> None:
        asked: list[str] = []

        def requests():
            for source in pending:
                try:
                    with open_scene(source, one_raster) as opened:
                        request = mllm_request(
                            opened, question, client, engine=engine, ask_options=ask_options
                        )
                except TerraMaskError:
                    continue  # the scene's own run records why
                asked.append(source)
                yield request

        chunk = max(_ASK_AHEAD, getattr(client, "max_concurrency", 1))
        failures = warm_replies(
            client, requests(), chunk=chunk, progress=progress, total=len(pending)
        )
        failed_asking.update({asked[i]: error for i, error in failures.items()})

    def run_one(source: str) -> dict:
        if source in failed_asking:
            raise failed_asking.pop(source)
        result = ask(
            source, question, engine=engine, mllm=client, models=models,
            ask_options=ask_options, raster=one_raster, tile=tile, polygons=polygons,
            output=output, overwrite=True,
        )  # fmt: skip
        return result.to_dict()

    settings = _ask_settings(
        question, engine, client, models, ask_options, one_raster, tile, polygons
    )
    return run_batch(
        sources, run_one, output, settings=settings, overwrite=overwrite, progress=progress,
        prepare=prepare, index_crs=index_crs,
    )  # fmt: skip


def _check_ask(
    engine: str,
    question: str,
    mllm: MLLMOptions | MLLM,
    models: ModelOptions,
    ask_options: AskOptions,
    tile: int,
    polygons: PolygonOptions,
    unigeoseg: UniGeoSegOptions | None = None,  # UniGeoSeg (#16)
) -> None:
    from terramask.options import ASK_ENGINES, MIN_TILE, check_at_least, check_choice

    check_choice(engine, ASK_ENGINES, "engine")
    check_at_least(tile, MIN_TILE, "tile", " px")
    if not question or not question.strip():
        raise InputError("The question is empty: say what to find, e.g. 'the largest pond'.")
    rules.refuse(
        _given(models, ask_options, polygons, mllm, unigeoseg),  # unigeoseg: #16
        rules.ask_rules(engine, local_mllm=_is_local(mllm)),
    )


def _ask_settings(
    question: str,
    engine: str,
    client: MLLM,
    models: ModelOptions,
    ask_options: AskOptions,
    raster: RasterOptions,
    tile: int,
    polygons: PolygonOptions,
) -> dict:
    from terramask.pipeline.engines import ask_models_used

    return _settings(
        "ask", question=question, engine=engine,
        mllm={"model": client.name, "url": getattr(client, "base_url", None)},
        models=ask_models_used(engine, models), ask_options=ask_options, raster=raster,
        tile=tile, polygons=polygons,
    )  # fmt: skip


def _is_local(mllm: object) -> bool:
    """Options naming a local model (no endpoint URL)."""
    return isinstance(mllm, MLLMOptions) and not mllm.url and bool(mllm.model)


def _client(mllm: MLLMOptions | MLLM, device: str) -> MLLM:
    from terramask.models.mllm.factory import make_mllm

    return make_mllm(mllm, device=device) if isinstance(mllm, MLLMOptions) else mllm


# ----------------------------------------------------------------------------------- calibrate


def calibrate(
    dataset: str,
    root: PathLike,
    *,
    mllm: MLLMOptions | MLLM = MLLMOptions(),
    output: PathLike = "refine.json",
    split: str | None = None,
    limit: int | None = 50,
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Fit how an MLLM's boxes are corrected, on a labelled referring/reasoning data set.

    Args:
        dataset: rrsis-d, earthreason, geoseg-bench or unigeoseg-bench.
        root: The data set's folder.
        mllm: The multimodal LLM to fit the correction for.
        output: Where the fit is saved, for `AskOptions(refine="calibrated", calibration=...)`.
        split: The split to use (default: the data set's).
        limit: Use the first N samples (at least 3).
        device: Where a local MLLM runs.
        overwrite: Replace an existing `output`.
        progress: Called with (stage, done, total).

    Returns:
        Mean box IoU with no refinement, GeoSeg's, and the fitted one; the fit; skipped counts.

    Raises:
        InputError: Bad options or data set layout (before any request).
        OutputExistsError: `output` exists and `overwrite` is false.
    """
    from terramask.pipeline.calibrate_run import run_calibration

    ModelOptions(device=device)  # checks the device's name
    if limit is not None and limit < 3:
        raise InputError(f"`limit` must be at least 3 to fit a refinement, not {limit}.")
    rules.refuse(_given(mllm), rules.calibrate_rules(local_mllm=_is_local(mllm)))
    return run_calibration(
        dataset, root, _client(mllm, device), output, split=split, limit=limit,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- evaluate


def evaluate(
    dataset: str,
    root: PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    engine: str | OvssPredictor | SemanticEngine | None = None,
    threshold: float | None = None,
    generation: GenerationSettings | None = None,
    models: ModelOptions = ModelOptions(),
    mllm: MLLMOptions | MLLM | None = None,
    ask_options: AskOptions | None = None,
    protocol: BenchmarkProtocol = "reference",
    judge: MLLMOptions | MLLM | None = None,
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
    unigeoseg: UniGeoSegOptions | None = None,  # UniGeoSeg (#16)
) -> dict:
    """Run a method on a benchmark and report its metrics beside the published numbers.

    OVSS sets (`terramask.eval.presets.list_presets()`) are scored by mIoU with `segment`'s
    engines; referring/reasoning sets (rrsis-d, earthreason, geoseg-bench, unigeoseg-bench)
    by gIoU, cIoU and Pr@t with `ask`'s engines. Options of the other kind are refused.

    Args:
        dataset: The data set's name.
        root: Its folder, in the layout the preset describes (`terramask eval --list`).
        split: The split (default: the data set's).
        limit: Evaluate the first N images (OVSS: by name) or samples only.
        engine: An engine name (OVSS: clip, sam+clip, sam3, default sam+clip; referring:
            geoseg, clicks, box, default geoseg), or for OVSS a ready `OvssPredictor` or
            `SemanticEngine`.
        threshold: OVSS: overrides the preset's background threshold.
        generation: OVSS with sam+clip: SAM's automatic mask generation (default
            `REFERENCE_GENERATION`, segment-anything's generator, as the papers ran it).
        models: The models the engine uses, and the device.
        mllm: Referring: the multimodal LLM (options, or a ready client).
        ask_options: Referring: box refinement and overview size.
        protocol: Referring: "reference" (the published evaluation code's samples — RRSIS-D
            one per object with its first sentence, EarthReason the first question per image,
            UniGeoSeg's set the first instruction with interactive coordinates sent straight
            to SAM — scored on the 512 centred letterbox) or "all-texts" (every sentence or
            question, at the image's size).
        judge: Referring: an MLLM that scores each prediction's faithfulness, localization
            and robustness 1–5 as GeoSeg's judge does (overlap binned from IoU).
        output: Predictions, report.json and report.md go to `output/<dataset>_<split>`.
        overwrite: Replace an earlier evaluation in that folder.
        progress: Called with (stage, done, total).

    Returns:
        The report: metrics overall and per class or group, the published numbers, outputs.

    Raises:
        InputError: Unknown data set, a layout that does not match, options that do not
            apply (all before any model loads).
        OutputExistsError: An earlier evaluation is in the folder and `overwrite` is false.
    """
    from terramask.eval.referring_datasets import referring_dataset_names
    from terramask.options import PROTOCOLS, check_choice

    check_choice(protocol, PROTOCOLS, "protocol")
    name = dataset.strip().lower().replace("_", "-")
    if engine == "unigeoseg" and name in referring_dataset_names():  # UniGeoSeg (#16)
        return _evaluate_unigeoseg(
            dataset, root, split=split, limit=limit, threshold=threshold,
            generation=generation, models=models, mllm=mllm, ask_options=ask_options,
            protocol=protocol, judge=judge, output=output, overwrite=overwrite,
            progress=progress, unigeoseg=unigeoseg,
        )  # fmt: skip
    if unigeoseg is not None:  # UniGeoSeg (#16)
        raise InputError("`unigeoseg` applies to engine 'unigeoseg' on a referring/reasoning "
                         "data set only.")  # fmt: skip
    run = _evaluate_referring if name in referring_dataset_names() else _evaluate_ovss
    return run(
        dataset, root, split=split, limit=limit, engine=engine, threshold=threshold,
        generation=generation, models=models, mllm=mllm, ask_options=ask_options,
        protocol=protocol, judge=judge, output=output, overwrite=overwrite,
        progress=progress,
    )  # fmt: skip


def _evaluate_ovss(
    dataset: str,
    root: PathLike,
    *,
    engine: str | OvssPredictor | SemanticEngine | None,
    threshold: float | None,
    generation: GenerationSettings | None,
    models: ModelOptions,
    mllm: MLLMOptions | MLLM | None,
    ask_options: AskOptions | None,
    protocol: str,
    judge: MLLMOptions | MLLM | None,
    split: str | None,
    output: PathLike,
    **run: Any,
) -> dict:
    from terramask.eval.ovss import evaluate_ovss
    from terramask.eval.presets import load_preset
    from terramask.options import SEGMENT_ENGINES, check_choice, check_probability
    from terramask.pipeline.engines import PredictorSpec

    check_probability(threshold, "threshold")
    preset = load_preset(dataset)
    method = engine or "sam+clip" if engine is None or isinstance(engine, str) else None
    if method is not None:
        check_choice(method, SEGMENT_ENGINES, "engine")
    given = _given(
        models, generation, ask_options, mllm, threshold=threshold is not None,
        protocol=protocol != "reference", judge=judge is not None,
    )  # fmt: skip
    rules.refuse(
        given, rules.evaluate_rules("ovss", method, local_mllm=False, predictor=engine)
    )
    spec = None
    if method is not None:
        spec = PredictorSpec(
            method,
            models,
            REFERENCE_GENERATION if generation is None else generation,
            threshold=preset.threshold if threshold is None else threshold,
            # the SAM-voting paper keeps masks per target class on single-class sets
            single_class=1 if preset.kind == "single-class" else None,
        )
    split = split or preset.layout.split
    folder = preset.name if not preset.layout.has_split else f"{preset.name}_{split}"
    return evaluate_ovss(
        preset,
        root,
        split=split,
        engine=spec.build if spec is not None else engine,
        threshold=threshold,
        output_dir=Path(output) / folder,
        models={} if spec is None else spec.models_used,
        method=method,
        **run,
    )


def _evaluate_referring(
    dataset: str,
    root: PathLike,
    *,
    engine: str | OvssPredictor | SemanticEngine | None,
    threshold: float | None,
    generation: GenerationSettings | None,
    models: ModelOptions,
    mllm: MLLMOptions | MLLM | None,
    ask_options: AskOptions | None,
    judge: MLLMOptions | MLLM | None,
    **run: Any,
) -> dict:
    from terramask.eval.referring import evaluate_asking
    from terramask.options import ASK_ENGINES, check_choice

    engine = "geoseg" if engine is None else engine
    if not isinstance(engine, str):
        raise InputError(
            f"`engine` for {dataset} must be an engine name ({', '.join(ASK_ENGINES)}); a "
            "ready predictor applies to OVSS data sets only."
        )
    check_choice(engine, ASK_ENGINES, "engine")
    mllm = MLLMOptions() if mllm is None else mllm
    ask_options = ask_options or AskOptions()
    given = _given(models, ask_options, mllm, generation, threshold=threshold is not None)
    rules.refuse(given, rules.evaluate_rules("referring", engine, local_mllm=_is_local(mllm)))
    return evaluate_asking(
        dataset, root, engine=engine, mllm=lambda: _client(mllm, models.device),
        models=models, ask_options=ask_options,
        judge=None if judge is None else (lambda: _client(judge, models.device)), **run,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- score


def score(
    pred_dir: PathLike,
    gt_dir: PathLike,
    *,
    classes: str | Sequence[str],
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Score a folder of predicted label maps against ground truth (mIoU, aAcc, per class).

    Predictions are class indices in `classes` order, or `terramask segment`'s label rasters
    as written (`<scene>_labels.tif`, read by their tags: value k+1 is the tagged class k,
    matched to `classes` by name). Ground-truth values are checked: when more than 1 % of
    pixels hold values no class or ignore rule expects, scoring stops and says which.

    Args:
        pred_dir: Predicted label maps (PNG or TIFF), or a `segment` output folder.
        gt_dir: Ground truth of the same names (without extension).
        classes: The class names in index order, a list or one comma-separated string.
        ignore_index: Ground-truth value left out of the scores.
        reduce_zero_label: Ground truth 0 is ignored and other ids move down one (LoveDA,
            ISPRS).
        progress: Called with (stage, done, total).

    Returns:
        mIoU, aAcc and per-class IoU (percent); the files with no partner; how predictions
        were read (`prediction_encodings`); unexpected ground-truth pixels
        (`unexpected_labels`).

    Raises:
        InputError: Missing folders, no pairs, sizes that differ, two files of one name,
            unexpected ground-truth values over 1 %, or a segment class not in `classes`.
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


# ----------------------------------------------------------------------------------- shared


#: Parameters that are options objects or ready models, by the types they accept.
_OBJECT_PARAMS = {
    ModelOptions: "models", GenerationSettings: "generation", AskOptions: "ask_options",
    MLLMOptions: "mllm", RayOptions: "ray", Tiling: "tiling", PolygonOptions: "polygons",
    UniGeoSegOptions: "unigeoseg",  # UniGeoSeg (#16)
}  # fmt: skip


def _given(*objects: object, **plain: bool) -> list[str]:
    """The option names a caller set: the changed fields of options `objects` (None skipped),
    a ready model given for `mllm`, and the plain options marked True in `plain`.

    An options object passed where the default is None counts as given by its parameter
    name too (e.g. `generation`), so that even one at its defaults can be refused.
    """
    names: list[str] = []
    for options in objects:
        if options is None:
            continue
        if type(options) in _OBJECT_PARAMS:
            names += changed(options)
            names.append(_OBJECT_PARAMS[type(options)])
        else:  # a ready client in the place of MLLMOptions
            names.append("mllm")
    return names + [name for name, given in plain.items() if given]


def _settings(verb: str, **parts: object) -> dict:
    """What a run was asked, as the JSON its report records: options objects by their fields
    (`RasterOptions.asset` left out: it chose the scene, it does not change the result)."""
    import dataclasses
    import json

    def plain(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = dataclasses.asdict(value)
            fields.pop("asset", None)
            return fields
        return value

    record = {"verb": verb, **{name: plain(value) for name, value in parts.items()}}
    return json.loads(json.dumps(record, default=str))


def _one_scene(scene: PathLike, twin: str, raster: RasterOptions) -> None:
    """Refuse a set of scenes (or a STAC asset choice) where one scene is expected, and a
    local file that is not there (before the raster libraries load: that takes seconds)."""
    from terramask.scene.inputs import check_source, names_many

    if names_many(scene) or raster.asset is not None:
        raise InputError(
            f"{os.fspath(scene)} names a set of scenes (a folder, glob, .txt list or STAC "
            f"JSON){' with `RasterOptions.asset`' if raster.asset else ''}; this function "
            f"takes one raster. Use `{twin}` for a set of scenes."
        )
    check_source(scene)


def _without_asset(raster: RasterOptions) -> RasterOptions:
    """The raster options one scene of a set is opened with (the asset chose the scenes)."""
    return RasterOptions(bands=raster.bands, stretch=raster.stretch)


def _checked_outputs(
    scene: SceneReader, output: PathLike, overwrite: bool, kinds: Sequence[str]
) -> OutputSet:
    """The scene's output set, checked before any model work (no GeoJSON without a CRS)."""
    from terramask.scene import OutputSet

    outputs = OutputSet(output, scene.name, overwrite=overwrite)
    outputs.check([k for k in kinds if scene.georeferenced or k != "geojson"])
    return outputs


# ------------------------------------------------------------------------------ tuned clicks (#13)


def synthesize_clicks(
    masks: PathLike | Sequence[PathLike],
    *,
    images: PathLike | None = None,
    mask_value: int | None = None,
    settings: ClickSynthesis = ClickSynthesis(),
    models: ModelOptions = ModelOptions(),
    output: PathLike | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> list[dict]:
    """Synthesise clicks for ground-truth masks with the segmenter in the loop (docs/clicks.md).

    The first click is the mask's interior-most pixel; each next one the deepest pixel of the
    larger error region of the segmenter's current mask (positive in a miss, negative in a
    false alarm), up to `ClickSynthesis.clicks`, stopping early when the mask is exact.

    Args:
        masks: One mask file or several (PNG/TIFF; the target is non-zero, or `mask_value`).
        images: The image of each mask: a file (one mask), or a folder holding images of the
            masks' names; None looks in the `images/` folder beside the masks' folder.
        mask_value: The mask value that marks the target (None: any non-zero value).
        settings: How many clicks, and the frame the clicks text is written in.
        models: The segmenter (`ModelOptions.segmenter`) and device.
        output: A JSONL file to write the results to (one line per mask), or None.
        overwrite: Replace `output` when it exists.
        progress: Called with ("clicks", done, total).

    Returns:
        Per mask: `mask`, `image`, `image_size` (H, W), `clicks` (the click engine's text),
        `points`, `labels`, `ious` (IoU after each click) and `stopped_early`.

    Raises:
        InputError: A missing image or mask, a mask of another size than its image, an
            empty mask (before the segmenter loads).
        OutputExistsError: `output` exists and `overwrite` is false.
    """
    from terramask.train.synthesis import synthesize_mask_files

    rules.refuse(_given(models), {"ModelOptions.clip": "click synthesis uses no clip model",
                                  "ModelOptions.sam3": "click synthesis uses no sam3 model",
                                  "ModelOptions.featup": "click synthesis uses no featup"})
    return synthesize_mask_files(
        [masks] if isinstance(masks, str | os.PathLike) else list(masks), images=images,
        mask_value=mask_value, settings=settings, models=models, output=output,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip


def train_clicks(
    data: PathLike,
    *,
    layout: str = "auto",
    split: str | None = None,
    training: ClickTraining = ClickTraining(),
    models: ModelOptions = ModelOptions(),
    output: PathLike = "terramask-adapter",
    cache: PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    merge: bool = False,
    progress: Progress | None = None,
    on_step: Any = None,
) -> dict:
    """LoRA-tune a Qwen-VL to answer instructions with clicks for SAM (docs/clicks.md).

    Clicks are synthesised once per mask with the segmenter (`ModelOptions.segmenter`, SAM
    ViT-L by default) and cached next to the data; the segmenter is released before the
    language model trains. With a segmenter named explicitly, held-out images are scored
    (gIoU) before training and after every epoch.

    Args:
        data: A JSONL file of {"image", "mask", "instruction"}; a folder of images/, masks/,
            instructions/; or an RRSIS-D, EarthReason, UniGeoSeg or GeoSeg-Bench folder.
        layout: "auto" (recognised from the files) or one of `terramask.train.data.LAYOUTS`.
        split: The benchmark split to train on (default "train").
        training: The base model, LoRA and optimisation settings (`ClickTraining`).
        models: The segmenter and the device (GPU in bf16 when present, else CPU).
        output: The adapter folder (checkpoints and train_log.jsonl go there too).
        cache: Where synthesised clicks are kept (default: .terramask-clicks/ beside the
            data when writable, else $TERRAMASK_CACHE/clicks).
        resume: Continue the stopped training in `output` from its newest checkpoint.
        overwrite: Replace a finished adapter (or a stopped run) in `output`.
        merge: Also write base + adapter as one model in `output/merged` (for vLLM/SGLang).
        progress: Called with (stage, done, total): "clicks", "train", "validate".
        on_step: Called with each step's log entry (loss, learning rate, samples/s) and
            each validation's.

    Returns:
        The output folder, base, frame, steps, first and last loss, validation scores, the
        data read and the click cache.

    Raises:
        InputError: Bad options, an unknown layout, a mask that does not match its image, an
            empty mask, a stopped run in `output` without `resume` (before any training).
        OutputExistsError: An adapter exists in `output` and `overwrite` is false.
        ModelNotFoundError, ModelLoadError: The base model or segmenter cannot be loaded.
    """
    from pathlib import Path as _Path

    from terramask.models.mllm.adapters import peft_module
    from terramask.train.clicks import check_output, run_click_training
    from terramask.train.synthesis import prepare_training_data

    rules.refuse(_given(models), {"ModelOptions.clip": "click training uses no clip model",
                                  "ModelOptions.sam3": "click training uses no sam3 model",
                                  "ModelOptions.featup": "click training uses no featup"})
    peft_module()  # says how to install it, before any work
    output = _Path(output)
    check_output(output, resume=resume, overwrite=overwrite)
    prepared = prepare_training_data(
        data, layout=layout, split=split, training=training, models=models, cache=cache,
        progress=progress,
    )  # fmt: skip
    validation_segmenter = None
    if models.segmenter is not None and prepared.validation:
        validation_segmenter = prepared.segmenter
    result = run_click_training(
        prepared.train, prepared.validation, output, training=training, device=models.device,
        segmenter=validation_segmenter, resume=resume, data=prepared.describe(),
        progress=progress, on_step=on_step,
    )  # fmt: skip
    result.update(data=prepared.describe())
    if merge:
        from terramask.train.merge import merge_adapter

        result["merged"] = merge_adapter(output, output / "merged", overwrite=True)["output"]
    return result


def merge_adapter(
    adapter: PathLike,
    output: PathLike,
    *,
    base: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Fold a click adapter into its base model: one folder for vLLM, SGLang or `ask`.

    Args:
        adapter: The folder `train_clicks` wrote.
        output: The merged model's folder (weights, tokenizer, processor, chat template).
        base: The base model (default: the one the adapter records).
        overwrite: Replace `output` when it exists.

    Raises:
        InputError: `adapter` is not an adapter folder.
        ModelLoadError: The base cannot be loaded, or the adapter is for another base.
        OutputExistsError: `output` exists and `overwrite` is false.
    """
    from terramask.train.merge import merge_adapter as merge

    return merge(adapter, output, base=base, overwrite=overwrite)


# ------------------------------------------------------------------------------ end of tuned clicks


# ------------------------------------------------------------------ instruction data (#14)


def build_instruction_data(
    images: PathLike,
    labels: PathLike,
    classes: Sequence[str],
    *,
    recipe: DataRecipe | None = None,
    class_map: PathLike | dict | None = None,
    generator: MLLMOptions | MLLM | None = None,
    judges: Sequence[MLLMOptions | MLLM] = (),
    raster: RasterOptions = RasterOptions(),
    device: str = "auto",
    output: PathLike = "terramask-data",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Make UniGeoSeg-format instruction data from labelled rasters (the GeoSeg-1M recipe).

    Patches (`DataRecipe.patch`, `stride`) → 8-connected instances per class → the rule
    filter (area, crowding, neighbours, a per-patch and a per-class limit) → an MLLM mask
    check (the first judge) → interactive instructions from the mask, referring and
    reasoning ones written by `generator` → cross-evaluation by every judge. See
    docs/data-engine.md for each step, the prompts, rubric and thresholds.

    Args:
        images: The images: a folder, glob, .txt list or one raster.
        labels: Their label rasters, matched by file name (a folder, glob, list or one file).
        classes: The label's classes: "NAME" (value = position), "VALUE=NAME",
            "#RRGGBB=NAME" or "R,G,B=NAME" (colours of RGB or paletted labels).
        recipe: Every rule, threshold and choice of the recipe (`DataRecipe`).
        class_map: A JSON file (or dict) renaming classes into merged categories
            ({"low vegetation": "vegetation", "clutter": null}).
        generator: The MLLM that writes referring and reasoning instructions.
        judges: One or two MLLMs: the first checks each candidate mask (with
            `DataRecipe.mask_check`); all cross-evaluate every written instruction.
        raster: Bands and stretch of the images.
        device: Where local MLLMs run.
        output: The data set's folder (`interactive/`, `ref/`, `reason/`, `stats.json`,
            `instances.gpkg`).
        overwrite: Replace instruction data made with other settings in `output`.
        progress: Called with (stage, done, total): "scan", "patches".

    Returns:
        The statistics written to `output/stats.json`: samples per task and kind, per class,
        what each rule removed, MLLM calls, failures, time and samples per second.

    Raises:
        InputError: Bad options or classes, no image/label pair, prompt files that do not
            load, referring or reasoning asked for without a generator (all before any work);
            `output` made with other settings (without `overwrite`).
        OutputExistsError: `output` holds instruction data this engine did not start.
    """
    from terramask.data.build import build, resolve_tasks

    recipe = DataRecipe() if recipe is None else recipe
    if not isinstance(recipe, DataRecipe):
        raise InputError(f"`recipe` must be a DataRecipe, not {type(recipe).__name__}.")
    ModelOptions(device=device)  # checks the device's name
    clients = [c for c in (generator, *judges) if isinstance(c, MLLMOptions)]
    rules.refuse(
        changed(recipe) + [name for c in clients for name in changed(c)]
        + (["device"] if device != "auto" else []),
        rules.data_rules(generator=generator is not None, judges=bool(judges),
                         local=any(_is_local(c) for c in (generator, *judges))),
    )  # fmt: skip
    tasks = resolve_tasks(recipe, generator is not None)
    return build(
        images, labels, classes, recipe=recipe, class_map=class_map,
        generator=None if generator is None else _client(generator, device),
        judges=[_client(judge, device) for judge in judges], raster=raster, output=output,
        overwrite=overwrite, progress=progress, tasks=tasks,
    )  # fmt: skip


def run_instructions(
    tasks: PathLike | Sequence[dict],
    *,
    engine: AskEngine = "geoseg",
    segment_engine: SegmentEngine = "sam+clip",
    mllm: MLLMOptions | MLLM | None = None,
    models: ModelOptions = ModelOptions(),
    ask_options: AskOptions = AskOptions(),
    generation: GenerationSettings = GenerationSettings(),
    raster: RasterOptions = RasterOptions(),
    polygons: PolygonOptions = PolygonOptions(),
    output: PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """One instruction interface for all tasks: each line of a JSONL file to its route.

    Each line is `{"image", "task", "instruction"?, "points"?, "negatives"?, "boxes"?,
    "classes"?, "mask"?, "id"?}`: interactive lines go to the segmenter (`prompt`; clicks and
    boxes in image pixels, or UniGeoSeg's normalised `x0,y0=[a,b], x1,y1=[c,d]` / `[x,y]`
    inside the instruction), referring and reasoning lines to the `ask` engines, classes
    lines to `segment`. Each line's outputs go to `output/<id>/`; `output/results.jsonl`
    holds one result per line. With a ground-truth `mask`, lines are scored (gIoU, cIoU per
    task as UniGeoSeg's benchmark reports them, on its 512 letterbox). Re-running skips lines
    already done; a line that fails is recorded and the others go on.

    Args:
        tasks: The JSONL file (paths in it relative to it), or the lines as dicts.
        engine: The `ask` engine of referring and reasoning lines.
        segment_engine: The `segment` engine of classes lines.
        mllm: The multimodal LLM of referring and reasoning lines (when `engine` uses one).
        models: The segmenter, CLIP and SAM 3, and the device.
        ask_options, generation, raster, polygons: As for `ask` and `segment`.
        output: The folder of per-line outputs, results.jsonl and report.json.
        overwrite: Redo lines already done.
        progress: Called with ("lines", done, total) (and the verbs' own stages).

    Returns:
        Lines done, failed and skipped, scores per task (with ground truth), and the files.

    Raises:
        InputError: A line that cannot be used (unknown task, missing image or fields),
            referring/reasoning lines without the MLLM their engine needs, or options no
            line's route uses — all before any line runs.
    """
    from terramask.pipeline.run_instructions import run_instruction_lines

    given = _given(models, ask_options, generation, polygons, mllm,
                   engine=engine != "geoseg", segment_engine=segment_engine != "sam+clip")
    return run_instruction_lines(
        tasks, engine=engine, segment_engine=segment_engine,
        mllm=None if mllm is None else _client(mllm, models.device), models=models,
        ask_options=ask_options, generation=generation, raster=raster, polygons=polygons,
        output=output, overwrite=overwrite, progress=progress, given=given,
        local_mllm=_is_local(mllm),
    )  # fmt: skip


# ------------------------------------------------------------ end of instruction data (#14)


__all__ = [
    "ask",
    "ask_many",
    "build_instruction_data",
    "calibrate",
    "evaluate",
    "merge_adapter",
    "prompt",
    "prompt_many",
    "run_instructions",
    "score",
    "segment",
    "segment_many",
    "synthesize_clicks",
    "train_clicks",
]


# ------------------------------------------------------------------ UniGeoSeg (#16) begin


def _check_prompt_engine(
    engine: str,
    models: ModelOptions,
    polygons: PolygonOptions,
    unigeoseg: UniGeoSegOptions | None,
    *,
    points: Sequence[Point],
    negatives: Sequence[Point],
    boxes: Sequence[Box],
    crs: str | None,
) -> None:
    """`prompt`'s engine and the options that apply to it, before any work."""
    from terramask.options import PROMPT_ENGINES, check_choice

    check_choice(engine, PROMPT_ENGINES, "engine")
    has_coordinates = bool(points or negatives or boxes)
    given = _given(models, polygons, unigeoseg, crs=crs is not None,
                   negatives=bool(negatives))  # fmt: skip
    if engine == "sam":
        given = [g for g in given if g != "negatives"]
        rules.refuse(given + (["unigeoseg"] if unigeoseg is not None else []),
                     {**rules.prompt_rules(has_coordinates=has_coordinates),
                      "unigeoseg": "it applies to engine 'unigeoseg' only"})  # fmt: skip
        return
    rules.refuse(given, rules.prompt_rules(has_coordinates=has_coordinates, engine=engine))
    if len(points) > 0 and len(boxes) == 1:
        raise InputError(
            "UniGeoSeg's interactive instruction names either clicks or a box: with one "
            "`boxes` the `points` would join it into one object. Give the clicks or the box."
        )
    from terramask.methods.unigeoseg_prompts import MAX_POINTS

    if len(points) > MAX_POINTS:
        raise InputError(
            f"UniGeoSeg takes 1 to {MAX_POINTS} clicks per object (`points`); {len(points)} "
            "were given. Give fewer clicks, or a box."
        )


def _unigeoseg_segmenter(object_prompts: Sequence, models: ModelOptions,
                         unigeoseg: UniGeoSegOptions | None):  # fmt: skip
    """Check every object's prompts against UniGeoSeg's interactive instruction (before the
    model loads), then load it."""
    import numpy as np

    from terramask.methods.unigeoseg_prompts import MAX_POINTS
    from terramask.pipeline.engines import load_unigeoseg_model

    for prompt in object_prompts:
        labels = np.asarray(prompt.labels)
        where = f"object '{prompt.name}'"
        if (labels == 0).any():
            raise InputError(f"UniGeoSeg takes positive clicks only; {where} of the prompt file "
                             "has negative ones (`engine` sam takes them).")  # fmt: skip
        if len(labels) and prompt.box is not None:
            raise InputError(f"UniGeoSeg's instruction names clicks or a box; {where} has both.")
        if len(labels) > MAX_POINTS:
            raise InputError(f"UniGeoSeg takes 1 to {MAX_POINTS} clicks per object; {where} has "
                             f"{len(labels)}.")  # fmt: skip
    return load_unigeoseg_model(models, (unigeoseg or UniGeoSegOptions()).dtype)


def _prompt_model_name(engine: str, models: ModelOptions) -> str | None:
    if engine == "unigeoseg":
        from terramask.pipeline.engines import model_names

        return model_names(models, ("unigeoseg",))["unigeoseg"]
    return models.describe()["segmenter"]


def _prompt_engine_settings(engine: str, unigeoseg: UniGeoSegOptions | None) -> dict:
    """What a unigeoseg `prompt` adds to its report's settings (nothing for SAM, so that
    earlier SAM outputs still answer the same settings)."""
    if engine != "unigeoseg":
        return {}
    return {"engine": engine, "dtype": (unigeoseg or UniGeoSegOptions()).dtype}


def _check_ask_unigeoseg(
    question: str,
    mllm: MLLMOptions | MLLM,
    models: ModelOptions,
    ask_options: AskOptions,
    tile: int,
    polygons: PolygonOptions,
) -> None:
    """`ask --engine unigeoseg`: no MLLM, no box handling; only what was changed counts."""
    from terramask.options import MIN_TILE, check_at_least

    check_at_least(tile, MIN_TILE, "tile", " px")
    if not question or not question.strip():
        raise InputError("The question is empty: say what to find, e.g. 'the largest pond'.")
    given = _given(models, polygons)
    if mllm is not None:
        given += changed(mllm) if isinstance(mllm, MLLMOptions) else ["mllm"]
    given += changed(ask_options) if ask_options is not None else []
    rules.refuse(given, rules.ask_rules("unigeoseg", local_mllm=False))


def _unigeoseg_ask_settings(question: str, models: ModelOptions, options: UniGeoSegOptions,
                            raster: RasterOptions, tile: int,
                            polygons: PolygonOptions) -> dict:  # fmt: skip
    from terramask.pipeline.engines import ask_models_used

    return _settings(
        "ask", question=question, engine="unigeoseg",
        models=ask_models_used("unigeoseg", models), unigeoseg=options, raster=raster,
        tile=tile, polygons=polygons,
    )  # fmt: skip


def _ask_unigeoseg(scene, question, mllm, models, ask_options, raster, tile, polygons, output,
                   overwrite, progress, unigeoseg) -> AskResult:  # fmt: skip
    """`ask` with engine unigeoseg: UniGeoSeg reads the question and segments by itself."""
    from terramask.models.unigeoseg import UniGeoSegSettings
    from terramask.pipeline.ask_run import ASK_OUTPUTS, run_ask
    from terramask.pipeline.engines import load_unigeoseg_model
    from terramask.pipeline.unigeoseg_ask import locate_unigeoseg
    from terramask.scene import open_scene

    options = unigeoseg or UniGeoSegOptions()
    _check_ask_unigeoseg(question, mllm, models, ask_options, tile, polygons)
    with open_scene(scene, raster) as opened:
        outputs = _checked_outputs(opened, output, overwrite, ASK_OUTPUTS)
        model = load_unigeoseg_model(models, options.dtype)
        located = locate_unigeoseg(
            opened, question, model, settings=UniGeoSegSettings.of(options), tile=tile,
            second_look=options.second_look, progress=progress,
        )  # fmt: skip
        settings = _unigeoseg_ask_settings(question, models, options, raster, tile, polygons)
        return run_ask(opened, question, None, None, outputs,  # type: ignore[arg-type]
                       engine="unigeoseg", tile=tile, polygons=polygons, settings=settings,
                       progress=progress, located=located)  # fmt: skip


def _ask_many_unigeoseg(sources, question, mllm, models, ask_options, raster, tile, polygons,
                        output, overwrite, index_crs, progress,
                        unigeoseg) -> BatchSummary:  # fmt: skip
    """`ask_many` with engine unigeoseg: the model loads once, scenes go one by one."""
    from terramask.pipeline.batch import run_batch

    options = unigeoseg or UniGeoSegOptions()
    _check_ask_unigeoseg(question, mllm, models, ask_options, tile, polygons)
    one_raster = _without_asset(raster)

    def run_one(source: str) -> dict:
        result = ask(source, question, engine="unigeoseg", models=models, raster=one_raster,
                     tile=tile, polygons=polygons, output=output, overwrite=True,
                     unigeoseg=options)  # fmt: skip
        return result.to_dict()

    settings = _unigeoseg_ask_settings(question, models, options, one_raster, tile, polygons)
    return run_batch(sources, run_one, output, settings=settings, overwrite=overwrite,
                     progress=progress, index_crs=index_crs)  # fmt: skip


def _evaluate_unigeoseg(
    dataset: str,
    root: PathLike,
    *,
    split: str | None,
    limit: int | None,
    threshold: float | None,
    generation: GenerationSettings | None,
    models: ModelOptions,
    mllm: MLLMOptions | MLLM | None,
    ask_options: AskOptions | None,
    protocol: BenchmarkProtocol,
    judge: MLLMOptions | MLLM | None,
    output: PathLike,
    overwrite: bool,
    progress: Progress | None,
    unigeoseg: UniGeoSegOptions | None,
) -> dict:
    """`evaluate` with engine unigeoseg: the released evaluation's templates, tasks and fp32
    unless `unigeoseg` says otherwise (its dtype "auto" means fp32 here)."""
    from terramask.eval.unigeoseg_eval import evaluate_unigeoseg
    from terramask.models.unigeoseg import UniGeoSegSettings

    given = _given(models, generation, threshold=threshold is not None, judge=judge is not None)
    given += [] if mllm is None else (changed(mllm) if isinstance(mllm, MLLMOptions)
                                      else ["mllm"])  # fmt: skip
    given += [] if ask_options is None else changed(ask_options)
    table = rules.evaluate_rules("referring", "unigeoseg", local_mllm=False)
    table["judge"] = "engine 'unigeoseg' is scored by gIoU/cIoU only here"
    table["UniGeoSegOptions.second_look"] = "a benchmark sample is one image, looked at once"
    given += changed(unigeoseg) if unigeoseg is not None else []
    rules.refuse(given, table)
    settings = None
    dtype = "fp32"
    if unigeoseg is not None:
        from terramask.methods.unigeoseg_prompts import DATASET_STYLES

        name = dataset.strip().lower().replace("_", "-")
        style = DATASET_STYLES.get(name, ("benchmark", None))[0]
        settings = UniGeoSegSettings.of(unigeoseg, explain=False, prompt=style)
        dtype = "fp32" if unigeoseg.dtype == "auto" else unigeoseg.dtype
    return evaluate_unigeoseg(
        dataset, root, split=split, limit=limit, model=models.unigeoseg, device=models.device,
        dtype=dtype, settings=settings, output=output, overwrite=overwrite, progress=progress,
        protocol=protocol,
    )  # fmt: skip


def train_unigeoseg(
    data: PathLike,
    *,
    output: PathLike = "terramask-unigeoseg",
    training: UniGeoSegTraining | None = None,
    val_data: PathLike | None = None,
    split: str = "train",
    val_split: str = "val",
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_step: Any = None,
) -> dict:
    """Fine-tune UniGeoSeg on UniGeoSeg-format instruction data (`terramask data build`'s, or
    the released `{split}.json` layout); writes checkpoints loadable by engine unigeoseg.

    Args:
        data: The data folder (`{split}.json` list of {img, mask, json}, or a JSONL manifest).
        output: The run folder: `checkpoint-<step>/`, `final/`, `log.jsonl`, `report.json`.
        training: The recipe (`UniGeoSegTraining`; None: its defaults).
        val_data: A separate validation folder (else `training.val_fraction` of `data`).
        split, val_split: The splits read from `data` and `val_data`.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        resume: Continue from the last checkpoint in `output` (same recipe and data).
        overwrite: Replace a finished or foreign run in `output`.
        progress: Called with (stage, done, total).
        on_step: Called with each logged step's record (loss, task mix, learning rate).

    Raises:
        InputError: Bad options or data (before any model loads).
        OutputExistsError: `output` holds a run and neither `resume` nor `overwrite` is set.
    """
    from terramask.train.unigeoseg import train_unigeoseg as run

    ModelOptions(device=device)  # the device name is checked before any work
    return run(data, output=output, training=training or UniGeoSegTraining(),
               val_data=val_data, split=split,
               val_split=val_split, device=device, resume=resume, overwrite=overwrite,
               progress=progress, on_step=on_step)  # fmt: skip


# ------------------------------------------------------------------ UniGeoSeg (#16) end
