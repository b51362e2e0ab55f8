"""Evaluate a question -> mask predictor on a referring/reasoning benchmark, sample by sample."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError, MLLMError
from terramask.eval.judge import JudgeScores, try_judge
from terramask.eval.referring_datasets import (
    INTERACTIVE_TO_MODEL,
    INTERACTIVE_TO_SEGMENTER,
    BenchmarkProtocol,
    ReferringDataset,
    ReferringSample,
    check_protocol,
    letterbox,
    load_referring_dataset,
)
from terramask.eval.referring_metrics import METRIC_CONVENTIONS, ReferringScores
from terramask.eval.report import prepare_output, render_referring_markdown, write_report_files
from terramask.methods.interactive import PointBoxPrompt
from terramask.options import AskEngine, AskOptions, ModelOptions
from terramask.protocols import MLLM, Progress

Predict = Callable[[np.ndarray, str], tuple[np.ndarray, str]]
#: Segments an interactive sample's prompt (pixels of the image) on the image: the mask.
Segment = Callable[[np.ndarray, PointBoxPrompt], np.ndarray]

_SOSA = "Sosa et al. 2026 (training-free RS segmentation)"
_SOSA_BLOG = "specs/sosa.md §5 [3P-blog]"
_SOSA_WIZWAND = "specs/sosa.md §5 [3P-wizwand]"
_UNI_TAB2 = "UniGeoSeg paper Tab. 2 (specs/unigeoseg.md)"
_UNI_TAB3 = "UniGeoSeg paper Tab. 3 (specs/unigeoseg.md)"
_UNI_TAB3_RRSISD = "UniGeoSeg paper Tab. 3 (specs/unigeoseg.md; its RRSIS-D split is not stated)"

#: Published results (real weights) to print beside ours, per data set: each row gives its
#: split (None where the source does not state it, or the set has none), the task group
#: where the source reports by task, its scores in percent under our metric keys (giou,
#: ciou, iou, dice; faithfulness on GeoSeg's 1-5 judge scale) and its source. No row is an
#: average that its source does not publish as such. `metric` is the headline score.
PUBLISHED: dict[str, dict[str, Any]] = {
    "rrsis-d": {
        "metric": "giou",
        "rows": [
            {"method": f"GPT-5 clicks + SAM, zero-shot ({_SOSA})", "split": "test",
             "giou": 24.9, "source": _SOSA_BLOG},
            {"method": f"Qwen3-VL-2B LoRA clicks + SAM ({_SOSA})", "split": "val",
             "giou": 68.1, "source": _SOSA_WIZWAND + ", labelled mIoU there"},
            {"method": f"Qwen3-VL-2B LoRA clicks + SAM ({_SOSA})", "split": "test",
             "giou": 67.6, "source": _SOSA_WIZWAND + ", labelled mIoU there"},
            {"method": "SegEarth-R1", "split": None, "giou": 66.40, "ciou": 67.56,
             "source": _UNI_TAB3_RRSISD + "; Sosa et al. list 66.4 as test"},
            {"method": "GeoPixel", "split": None, "giou": 67.30, "ciou": 83.33,
             "source": _UNI_TAB3_RRSISD + "; Sosa et al. list 67.3 as test"},
            {"method": "UniGeoSeg", "split": None, "giou": 72.23, "ciou": 81.35,
             "source": _UNI_TAB3_RRSISD},
        ],
    },
    "earthreason": {
        "metric": "giou",
        "rows": [
            {"method": f"GPT-5 clicks + SAM, zero-shot ({_SOSA})", "split": "test",
             "giou": 47.4, "source": _SOSA_BLOG},
            {"method": f"Qwen3-VL-2B LoRA clicks + SAM ({_SOSA})", "split": "test",
             "giou": 72.7, "source": _SOSA_BLOG},
            {"method": "SegEarth-R1", "split": "val", "giou": 68.25, "ciou": 64.13,
             "source": _UNI_TAB3},
            {"method": "SegEarth-R1", "split": "test", "giou": 70.75, "ciou": 68.60,
             "source": _UNI_TAB3 + "; Sosa et al. list 70.7"},
            {"method": "UniGeoSeg", "split": "val", "giou": 72.65, "ciou": 73.39,
             "source": _UNI_TAB3},
            {"method": "UniGeoSeg", "split": "test", "giou": 73.12, "ciou": 75.67,
             "source": _UNI_TAB3},
        ],
    },
    "geoseg-bench": {
        "metric": "iou",
        "rows": [
            {"method": "GeoSeg (training-free, Qwen3-VL-32B)", "split": None, "iou": 56.4,
             "dice": 64.2, "source": "specs/geoseg.md §9 [3P-arxivlens; IoU also 3P-wizwand]"},
            {"method": "GeoSeg (training-free, Qwen3-VL-32B)", "split": None,
             "faithfulness": 3.64, "source": "specs/geoseg.md §9 [3P-wizwand], Qwen-8B judge"},
        ],
    },
    "unigeoseg-bench": {
        "metric": "giou",
        "rows": [
            *(
                {"method": method, "split": "test", "group": group, "giou": giou,
                 "ciou": ciou, "source": _UNI_TAB2}
                for method, by_task in (
                    ("GeoPixel, zero-shot", ((18.71, 17.21), (40.14, 37.34), (26.71, 27.36))),
                    ("EarthMind, zero-shot", ((16.57, 16.38), (46.48, 44.53), (28.80, 31.01))),
                    ("UniGeoSeg, trained on GeoSeg-1M",
                     ((76.37, 74.44), (74.25, 72.60), (52.96, 58.20))),
                )
                for group, (giou, ciou) in zip(
                    ("interactive", "referring", "reasoning"), by_task, strict=True
                )
            ),
        ],
    },
}  # fmt: skip

PUBLISHED_NOTE = (
    "From the papers' own tables, each row with its source (real weights, whole evaluation "
    "splits). Rows are shown for this run's split and where the source states no split. Ours "
    "is comparable only under the reference protocol, on the same split, without a `limit`."
)


def published_rows(dataset: str, split: str | None) -> list[dict[str, Any]]:
    """The published rows of `dataset` for `split` (and those whose split is not stated)."""
    rows = PUBLISHED.get(dataset, {"rows": []})["rows"]
    return [dict(row) for row in rows if row.get("split") in (None, split)]


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
    protocol: BenchmarkProtocol = "reference",
    segment: Segment | None = None,
    judge: MLLM | None = None,
    configuration: Callable[[], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Score `predict(image, question) -> (mask, answer)` on `dataset`; write masks and a report.

    `configuration()`, asked once the samples are done, says whether the run was the published
    method's configuration (`{"matches", "differences"}`; None: not compared); the report
    records it.

    `protocol` chooses the samples and the scoring canvas ("reference", the published
    evaluation code's; "all-texts", every sentence or question; see
    `terramask.eval.referring_datasets`). Interactive samples (the reference protocol on
    UniGeoSeg's benchmark) go to `segment(image, prompt)` with the coordinates their
    instruction names, in pixels; one that names none is recorded as failed. Without
    `segment` they go to `predict` like any other.

    The data set and the output folder are checked before the first prediction. A sample
    whose prediction raises `MLLMError` or `InputError` (an endpoint that gave up, a reply
    that cannot be used) is scored as an empty mask and listed with its reason; the run goes
    on. Masks are saved as `output_dir/predictions/<sample id>.png` (0/255, the size of the
    image the model was shown: the 512 canvas under the reference protocol of the sets
    UniGeoSeg scores there, see `ReferringDataset.model_view`); report.json and report.md hold
    overall and per-group scores (percent), a breakdown by whether the ground truth is empty,
    and the published numbers.

    With a `judge` MLLM every prediction is also rated 1-5 for faithfulness, localization
    and robustness, with overlap binned from the IoU (`terramask.eval.judge`); the report
    gives the averages. `method` and `models` (role -> id) only label the report.
    """
    data = load_referring_dataset(dataset, root, split=split, limit=limit, protocol=protocol)
    output_dir = Path(output_dir)
    predictions_dir = prepare_output(output_dir, overwrite)
    scores = ReferringScores(binary=data.binary_metrics)
    by_target = ReferringScores(binary=data.binary_metrics)
    judged = JudgeScores(judge.name) if judge is not None else None
    names = _file_names(data.samples)
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    total = len(data.samples)
    if progress:
        progress("evaluate", 0, total)
    for done, sample in enumerate(data.samples, start=1):
        original = sample.load_image()
        truth = _ground_truth(sample, original.shape[:2])
        image = data.model_view(original)
        if sample.interactive and segment is not None:
            mask, answer, reason = _segment_one(segment, image, sample)
        else:
            mask, answer, reason = _predict_one(predict, image, sample)
        pred_scored, truth_scored = mask, truth
        if data.score_size:
            truth_scored = letterbox(truth, data.score_size, centred=data.letterbox_centred)
            if image is original:  # shown the image itself: its mask goes on the canvas too
                pred_scored = letterbox(mask, data.score_size, centred=data.letterbox_centred)
        iou = scores.update(pred_scored, truth_scored, sample.group)
        by_target.update(pred_scored, truth_scored, "target" if truth.any() else "no target")
        path = predictions_dir / names[sample.id]
        _save_mask(mask, path)
        if reason is not None:
            failures.append({"id": sample.id, "question": sample.question, "reason": reason})
        record: dict[str, Any] = {
            "id": sample.id,
            "group": sample.group,
            "question": sample.question,
            "iou": round(100.0 * iou, 2),
            "answer": answer,
            "expected_answer": sample.answer_text,
            "failed": reason,
            "prediction": path.name,
        }
        if sample.interactive:
            record["interactive"] = (
                sample.coordinates.describe() if sample.coordinates is not None else None
            )
        if judge is not None and judged is not None:
            class_name = sample.target_name or sample.question
            shown_truth = truth if image is original else truth_scored  # the frame the mask is in
            judgement, judge_failure = try_judge(judge, image, shown_truth, mask, class_name)
            judged.add(judgement, sample.group)
            record["judge"] = (
                {**judgement.scores(), "iou": round(100.0 * judgement.iou, 2),
                 "judge_overlap": judgement.judge_overlap}
                if judgement is not None
                else {"failed": judge_failure}
            )  # fmt: skip
        records.append(record)
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
        segmented=segment is not None,
        judged=judged,
        configuration=configuration() if configuration is not None else None,
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
    protocol: BenchmarkProtocol = "reference",
    judge: MLLM | Callable[[], MLLM] | None = None,
) -> dict[str, Any]:
    """Every sample of a referring/reasoning set through the `ask` engines, in memory.

    `protocol`: "reference" (default: the published evaluation code's samples and scoring
    canvas) or "all-texts" (every sentence or question, at the image's size). Under the
    reference protocol the interactive samples of UniGeoSeg's benchmark never reach the
    MLLM: the engine's segmenter takes the box or positive points their instruction names.

    `judge`: an MLLM (or a function making one) that rates every prediction against the
    ground truth (GeoSeg-Bench's judged scores, `terramask.eval.judge`); None skips it.

    The data set is checked and the MLLM clients made (`mllm()`, `judge()`) before any model
    loads; models load at the first sample. With an endpoint, replies are first fetched
    `MLLMOptions.concurrency` at a time into the reply cache; the evaluation then meets them
    as cache hits and segments one sample at a time. Writes to `output/<dataset>_<split>`.
    """
    from terramask.methods.interactive import segment_prompts
    from terramask.pipeline.ask_run import locate, located_mask, mllm_request, warm_replies
    from terramask.pipeline.engines import ask_models_used, box_refinement, build_ask_models
    from terramask.scene.memory import ArrayScene

    check_protocol(protocol)
    refinement = box_refinement(ask_options)
    data = load_referring_dataset(dataset, root, split=split, limit=limit, protocol=protocol)
    asked = [sample for sample in data.samples if not sample.interactive]
    client = mllm() if asked else None
    judge_client = judge if judge is None or isinstance(judge, MLLM) else judge()

    def request(sample: ReferringSample) -> tuple[np.ndarray, str]:
        scene = ArrayScene(data.model_view(sample.load_image()))  # what `predict` will be shown
        return mllm_request(
            scene, sample.question, client, engine=engine, ask_options=ask_options
        )

    if client is not None:
        warm_replies(client, map(request, asked))
    loaded: list = []  # the models load at the first sample, after the data set was checked

    def ask_models():
        if not loaded:
            loaded.append(build_ask_models(engine, models))
        return loaded[0]

    def predict(image: np.ndarray, question: str) -> tuple[np.ndarray, str]:
        if client is None:  # every sample is interactive: predict is never called
            raise InputError("No MLLM was made for this evaluation.")
        located = locate(
            ArrayScene(image), question, client, ask_models(), engine=engine,
            refinement=refinement, ask_options=ask_options,
        )  # fmt: skip
        height, width = image.shape[:2]
        return located_mask(located, height, width), located.answer or ""

    def segment(image: np.ndarray, prompt: PointBoxPrompt) -> np.ndarray:
        found = segment_prompts(ask_models().segmenter, image, [prompt])
        return found[0].mask if found else np.zeros(image.shape[:2], dtype=bool)

    name = dataset.strip().lower().replace("_", "-")
    folder = name if split is None else f"{name}_{split}"
    used: dict[str, Any] = {"mllm": client.name if client is not None else None}
    used.update(ask_models_used(engine, models))
    if judge_client is not None:
        used["judge"] = judge_client.name
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
        models=used,
        protocol=protocol,
        segment=segment,
        judge=judge_client,
        configuration=lambda: _configuration(engine, ask_models(), refinement, ask_options, client),
    )


def _configuration(
    engine: str, models: Any, refinement: Any, ask_options: AskOptions, client: MLLM | None
) -> dict[str, Any] | None:
    """Whether a geoseg run was GeoSeg's published configuration (None for other engines,
    which no paper publishes in this form)."""
    from terramask.methods.geoseg import geoseg_configuration

    if engine != "geoseg":
        return None
    matches, differences = geoseg_configuration(
        models.route, refinement, ask_options.boxes,
        mllm=None if client is None else client.name,
    )  # fmt: skip
    return {"paper": "GeoSeg", "matches": matches, "differences": differences}


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
    judged: JudgeScores | None = None,
    configuration: dict[str, Any] | None = None,
    segmented: bool = True,
) -> dict[str, Any]:
    """Assemble the result, write report.json and report.md, return the result (the notes say
    where interactive samples went: to the segmenter, or, when `segmented` is false, to the
    model itself)."""
    metrics = scores.result()
    published = PUBLISHED.get(data.name, {"metric": "giou", "rows": []})
    result: dict[str, Any] = {
        "dataset": data.name,
        "display_name": data.display_name,
        "root": str(Path(root)),
        "split": data.split,
        "protocol": data.protocol,
        "limit": limit,
        "method": method,
        "models": dict(models or {}),
        "score_size": data.score_size,
        **metrics["overall"],
        "failed": len(failures),
        "group_name": data.group_name,
        "groups": metrics["groups"],
        "by_target": by_target.result()["groups"],
        "judge": judged.result() if judged is not None else None,
        "published_configuration": configuration,
        "metric_conventions": dict(METRIC_CONVENTIONS),
        "published_metric": published["metric"],
        "published": published_rows(data.name, data.split),
        "published_note": PUBLISHED_NOTE,
        "notes": [INTERACTIVE_TO_MODEL if note == INTERACTIVE_TO_SEGMENTER and not segmented
                  else note for note in data.notes],
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


def _segment_one(
    segment: Segment, image: np.ndarray, sample: ReferringSample
) -> tuple[np.ndarray, str | None, str | None]:
    """An interactive sample through the segmenter: (mask, None, failure reason)."""
    height, width = image.shape[:2]
    empty = np.zeros((height, width), dtype=bool)
    if sample.coordinates is None:
        return (
            empty,
            None,
            (
                "InputError: the interactive instruction names no coordinates the reference "
                "reads (a box 'x0,y0=[a,b], x1,y1=[c,d]' or 1-3 points '[x,y]', normalised 0-1), "
                "so there was nothing to give the segmenter."
            ),
        )
    try:
        mask = np.asarray(segment(image, sample.coordinates.in_pixels(height, width)))
    except (MLLMError, InputError) as exc:
        return empty, None, f"{type(exc).__name__}: {exc}"
    if mask.shape != (height, width):
        raise ValueError(
            f"segment returned a mask of shape {mask.shape} for sample {sample.id}, expected "
            f"{(height, width)}"
        )
    return mask.astype(bool), None, None


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
