"""The public verbs: prompt, segment, ask, evaluate, score. The CLI mirrors these one to one."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from terramask.errors import InputError, NotImplementedYet

if TYPE_CHECKING:
    from terramask.methods.protocols import Segmenter
    from terramask.pipeline.prompt_run import PromptResult

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
    prompt_file: str | os.PathLike | None = None,
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
    progress: Progress | None = None,
) -> PromptResult:
    """Segment the objects under clicks and boxes; write mask, scores, polygons and preview.

    Points and boxes are in pixels of the scene, or in map coordinates of `crs`; a vector
    file of prompts (`prompt_file`) may add more. All positive and negative clicks form one
    object; each box is its own object (a single box joins the clicks). Outputs go to
    `output`, named after the scene, and are never overwritten unless `overwrite`.
    `segmenter` is a model id, alias or folder, or an already loaded `Segmenter`.
    """
    from terramask.models import load_segmenter
    from terramask.pipeline.prompt_run import PROMPT_OUTPUTS, run_prompts
    from terramask.scene import OutputSet, open_scene, prompts_from_options, prompts_from_vector

    with open_scene(scene, bands=bands, stretch=stretch) as opened:
        outputs = OutputSet(output, opened.name, overwrite=overwrite)
        kinds = [k for k in PROMPT_OUTPUTS if opened.georeferenced or k != "geojson"]
        outputs.check(kinds)
        object_prompts = []
        if points or negatives or boxes:
            object_prompts += prompts_from_options(
                opened, points=points, negatives=negatives, boxes=boxes, crs=crs
            )
        if prompt_file is not None:
            object_prompts += prompts_from_vector(opened, prompt_file, layer=prompt_layer)
        if not object_prompts:
            raise InputError(
                "No prompt was given: add at least one --point X,Y or --box X1,Y1,X2,Y2 "
                "(pixels, or map coordinates with --crs), or a vector file with --prompts."
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


def segment(scene: str | os.PathLike, classes: Sequence[str], **options) -> None:
    """Open-vocabulary semantic segmentation: class names to a label map and polygons."""
    raise NotImplementedYet(
        "`segment` (open-vocabulary semantic segmentation from class names) is not "
        "implemented yet in this release; it is planned as dense CLIP, SAM mask voting and "
        "SAM 3 concepts. Use `terramask prompt` with points or boxes meanwhile."
    )


def ask(scene: str | os.PathLike, question: str, **options) -> None:
    """Referring and reasoning segmentation: a question to a mask and the model's answer."""
    raise NotImplementedYet(
        "`ask` (referring and reasoning segmentation through a multimodal LLM) is not "
        "implemented yet in this release. Use `terramask prompt` with points or boxes meanwhile."
    )


def evaluate(dataset: str, root: str | os.PathLike, **options) -> None:
    """Run a method on a benchmark and report its metrics beside the published numbers."""
    raise NotImplementedYet(
        "`eval` (benchmarks) is not implemented yet in this release; it arrives with the "
        "open-vocabulary and reasoning methods it measures."
    )


def score(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, **options) -> None:
    """Score a folder of predicted label maps against ground truth."""
    raise NotImplementedYet(
        "`score` (mIoU of predicted label maps against ground truth) is not implemented yet "
        "in this release."
    )


__all__ = ["PromptResult", "ask", "evaluate", "prompt", "score", "segment"]
