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
    GenerationSettings,
    MLLMOptions,
    ModelOptions,
    Outside,
    PolygonOptions,
    RasterOptions,
    RayOptions,
    SegmentEngine,
    Tiling,
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

    Returns:
        The files written and one summary per object (score, area, box, prompts).

    Raises:
        InputError: Bad options or prompts (before any work), an unreadable raster.
        OutputExistsError: Outputs exist and `overwrite` is false.
        ModelNotFoundError, ModelLoadError: The segmenter cannot be found or loaded.
    """
    _one_scene(scene, "prompt_many", raster)
    has_coordinates = bool(points or negatives or boxes)
    rules.refuse(
        _given(models, polygons, crs=crs is not None),
        rules.prompt_rules(has_coordinates=has_coordinates),
    )
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
        segmenter = load_segmenter(models.segmenter, device=models.device)
        settings = _settings(
            "prompt", points=points, negatives=negatives, boxes=boxes, crs=crs,
            prompt_file=_prompt_source(prompt_file, prompt_layer), outside=outside,
            segmenter=models.describe()["segmenter"], raster=raster, tiling=tiling,
            polygons=polygons,
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
    rules.refuse(
        _given(models, polygons, crs=crs is not None),
        rules.prompt_rules(has_coordinates=has_coordinates),
    )
    check_prompt_options(points=points, negatives=negatives, boxes=boxes, crs=crs)
    prompt_file = _prompt_file(has_coordinates, prompt_file, prompt_layer)
    one_raster = _without_asset(raster)
    settings = _settings(
        "prompt", points=points, negatives=negatives, boxes=boxes, crs=crs,
        prompt_file=_prompt_source(prompt_file, prompt_layer), outside="drop",
        segmenter=models.describe()["segmenter"], raster=one_raster, tiling=tiling,
        polygons=polygons,
    )  # fmt: skip

    def run_one(source: str) -> dict:
        result = prompt(
            source, points=points, negatives=negatives, boxes=boxes, crs=crs,
            prompt_file=prompt_file, prompt_layer=prompt_layer, models=models,
            raster=one_raster, tiling=tiling, polygons=polygons, output=output,
            overwrite=True, outside="drop",
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
) -> AskResult:
    """Answer a question about a scene with a mask, polygons and the model's words.

    The MLLM sees an overview of the scene; the boxes or clicks it answers with are mapped
    to scene pixels and segmented at full resolution on the windows they cover. "Nothing
    found" is an answer (an empty mask and the model's words), not an error.

    Args:
        scene: A raster path or URL.
        question: What to find, in words.
        engine: "geoseg" (refined box, CLIP-Surgery clicks and SAM 3 or dense CLIP, fused),
            "clicks" (the MLLM's clicks into SAM) or "box" (its box into SAM).
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
    _check_ask(engine, question, mllm, models, ask_options, tile, polygons)
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
    _check_ask(engine, question, mllm, models, ask_options, tile, polygons)
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
) -> None:
    from terramask.options import ASK_ENGINES, MIN_TILE, check_at_least, check_choice

    check_choice(engine, ASK_ENGINES, "engine")
    check_at_least(tile, MIN_TILE, "tile", " px")
    if not question or not question.strip():
        raise InputError("The question is empty: say what to find, e.g. 'the largest pond'.")
    rules.refuse(
        _given(models, ask_options, polygons, mllm),
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


__all__ = [
    "ask",
    "ask_many",
    "calibrate",
    "evaluate",
    "prompt",
    "prompt_many",
    "score",
    "segment",
    "segment_many",
]
