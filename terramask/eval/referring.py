"""Evaluate a question -> mask predictor on a referring/reasoning benchmark, sample by sample."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError, MLLMError
from terramask.eval.referring_datasets import (
    ReferringDataset,
    ReferringSample,
    letterbox,
    load_referring_dataset,
)
from terramask.eval.referring_metrics import ReferringScores
from terramask.eval.report import prepare_output, render_referring_markdown, write_report_files
from terramask.options import AskEngine, AskOptions, ModelOptions
from terramask.protocols import MLLM, Progress

Predict = Callable[[np.ndarray, str], tuple[np.ndarray, str]]

#: Published results (real weights) to print beside ours, from DESIGN.md §1.4.
PUBLISHED: dict[str, dict[str, Any]] = {
    "rrsis-d": {
        "metric": "giou",
        "rows": [
            {"method": "Zero-shot GPT-5 clicks + SAM (training-free paper)", "value": 24.9},
            {"method": "LoRA-tuned Qwen-VL clicks + SAM (training-free paper)", "value": 67.6},
            {"method": "UniGeoSeg", "value": 69.25},
        ],
    },
    "earthreason": {
        "metric": "giou",
        "rows": [
            {"method": "Zero-shot GPT-5 clicks + SAM (training-free paper)", "value": 47.4},
            {"method": "LoRA-tuned Qwen-VL clicks + SAM (training-free paper)", "value": 72.7},
            {"method": "SegEarth-R1", "value": 70.7},
        ],
    },
    "geoseg-bench": {
        "metric": "iou",
        "rows": [{"method": "GeoSeg (training-free, Qwen3-VL-32B)", "value": 56.4}],
    },
    "unigeoseg-bench": {"metric": "giou", "rows": []},
}

PUBLISHED_NOTE = (
    "From the papers, as listed in DESIGN.md §1.4 (real weights, whole evaluation splits). Ours is "
    "comparable only on the same split without a `limit`."
)


def evaluate_referring(
    dataset: str,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    predict: Predict,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    progress: Progress | None = None,
    method: str | None = None,
    models: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score `predict(image, question) -> (mask, answer)` on `dataset`; write masks and a report.

    The data set and the output folder are checked before the first prediction. A sample
    whose prediction raises `MLLMError` or `InputError` (an endpoint that gave up, a reply
    that cannot be used) is scored as an empty mask and listed with its reason; the run goes
    on. Masks are saved as `output_dir/predictions/<sample id>.png` (0/255, the image's
    size); report.json and report.md hold overall and per-group scores (percent), a
    breakdown by whether the ground truth is empty, and the published numbers.
    `method` and `models` (role -> id) only label the report.
    """
    data = load_referring_dataset(dataset, root, split=split, limit=limit)
    output_dir = Path(output_dir)
    predictions_dir = prepare_output(output_dir, overwrite)
    scores = ReferringScores(binary=data.binary_metrics)
    by_target = ReferringScores(binary=data.binary_metrics)
    names = _file_names(data.samples)
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    total = len(data.samples)
    if progress:
        progress("evaluate", 0, total)
    for done, sample in enumerate(data.samples, start=1):
        image = sample.load_image()
        truth = _ground_truth(sample, image.shape[:2])
        mask, answer, reason = _predict_one(predict, image, sample)
        pred_scored, truth_scored = mask, truth
        if data.score_size:
            pred_scored, truth_scored = (
                letterbox(mask, data.score_size),
                letterbox(truth, data.score_size),
            )
        iou = scores.update(pred_scored, truth_scored, sample.group)
        by_target.update(pred_scored, truth_scored, "target" if truth.any() else "no target")
        path = predictions_dir / names[sample.id]
        _save_mask(mask, path)
        if reason is not None:
            failures.append({"id": sample.id, "question": sample.question, "reason": reason})
        records.append(
            {
                "id": sample.id,
                "group": sample.group,
                "question": sample.question,
                "iou": round(100.0 * iou, 2),
                "answer": answer,
                "expected_answer": sample.answer_text,
                "failed": reason,
                "prediction": path.name,
            }
        )
        if progress:
            progress("evaluate", done, total)
    return _finish(
        data,
        root,
        limit,
        scores,
        by_target,
        records,
        failures,
        output_dir,
        overwrite,
        method=method,
        models=models,
        predictions_dir=predictions_dir,
    )


def evaluate_asking(
    dataset: str,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    engine: AskEngine = "geoseg",
    mllm: Callable[[], MLLM],
    models: ModelOptions = ModelOptions(),
    ask_options: AskOptions = AskOptions(),
    output: str | os.PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every sample of a referring/reasoning set through the `ask` engines, in memory.

    The data set is checked and the MLLM client made (`mllm()`) before any model loads;
    models load at the first sample. With an endpoint, replies are first fetched
    `MLLMOptions.concurrency` at a time into the reply cache; the evaluation then meets them
    as cache hits and segments one sample at a time. Writes to `output/<dataset>_<split>`.
    """
    from terramask.pipeline.ask_run import locate, located_mask, mllm_request, warm_replies
    from terramask.pipeline.engines import ask_models_used, box_refinement, build_ask_models
    from terramask.scene.memory import ArrayScene

    refinement = box_refinement(ask_options)
    samples = load_referring_dataset(dataset, root, split=split, limit=limit).samples
    client = mllm()

    def request(sample: ReferringSample) -> tuple[np.ndarray, str]:
        scene = ArrayScene(sample.load_image())
        return mllm_request(scene, sample.question, engine=engine, ask_options=ask_options)

    warm_replies(client, map(request, samples))
    loaded: list = []  # the models load at the first sample, after the data set was checked

    def predict(image: np.ndarray, question: str) -> tuple[np.ndarray, str]:
        if not loaded:
            loaded.append(build_ask_models(engine, models))
        located = locate(
            ArrayScene(image), question, client, loaded[0], engine=engine,
            refinement=refinement, ask_options=ask_options,
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
        method=engine,
        models={"mllm": client.name, **ask_models_used(engine, models)},
    )


def _finish(
    data: ReferringDataset,
    root: str | os.PathLike,
    limit: int | None,
    scores: ReferringScores,
    by_target: ReferringScores,
    records: list[dict[str, Any]],
    failures: list[dict[str, str]],
    output_dir: Path,
    overwrite: bool,
    *,
    method: str | None,
    models: dict[str, str] | None,
    predictions_dir: Path,
) -> dict[str, Any]:
    """Assemble the result, write report.json and report.md, return the result."""
    metrics = scores.result()
    published = PUBLISHED.get(data.name, {"metric": "giou", "rows": []})
    result: dict[str, Any] = {
        "dataset": data.name,
        "display_name": data.display_name,
        "root": str(Path(root)),
        "split": data.split,
        "limit": limit,
        "method": method,
        "models": dict(models or {}),
        "score_size": data.score_size,
        **metrics["overall"],
        "failed": len(failures),
        "group_name": data.group_name,
        "groups": metrics["groups"],
        "by_target": by_target.result()["groups"],
        "published_metric": published["metric"],
        "published": [dict(row) for row in published["rows"]],
        "published_note": PUBLISHED_NOTE,
        "notes": list(data.notes),
        "failures": failures,
        "per_sample": records,
    }
    markdown = render_referring_markdown(result)
    result["outputs"] = write_report_files(result, markdown, output_dir, overwrite=overwrite)
    result["outputs"]["predictions"] = str(predictions_dir)
    return result


def _ground_truth(sample: ReferringSample, shape: tuple[int, ...]) -> np.ndarray:
    truth = sample.load_mask()
    if truth.shape != tuple(shape):
        raise InputError(
            f"The ground-truth mask of sample {sample.id} is {truth.shape[1]}x{truth.shape[0]} "
            f"pixels but its image {sample.image_path} is {shape[1]}x{shape[0]}. Masks must "
            "cover their image pixel for pixel; check the data set's files."
        )
    return truth


def _predict_one(
    predict: Predict, image: np.ndarray, sample: ReferringSample
) -> tuple[np.ndarray, str | None, str | None]:
    """(mask, answer, failure reason): a failed item becomes an empty mask, not a stopped run."""
    try:
        output = predict(image, sample.question)
    except (MLLMError, InputError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return np.zeros(image.shape[:2], dtype=bool), None, reason
    mask, answer = output if isinstance(output, tuple) else (output, None)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"predict returned a mask of shape {mask.shape} for sample {sample.id}, expected "
            f"{image.shape[:2]}"
        )
    return mask.astype(bool), None if answer is None else str(answer), None


def _file_names(samples: list[ReferringSample]) -> dict[str, str]:
    """A distinct, filesystem-safe PNG name per sample id."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for sample in samples:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", sample.id).strip("._") or "sample"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        names[sample.id] = f"{name}.png"
    return names


def _save_mask(mask: np.ndarray, path: Path) -> None:
    from PIL import Image

    from terramask.atomic import atomic_output

    with atomic_output(path, overwrite=True) as temp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(temp, format="PNG")
