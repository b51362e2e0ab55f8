"""Evaluate an open-vocabulary semantic engine on one OVSS benchmark, one image at a time."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError
from terramask.eval.datasets import Sample, find_samples, read_image, read_label
from terramask.eval.label_check import LabelCheck
from terramask.eval.metrics import SegmentationScores
from terramask.eval.presets import OvssPreset
from terramask.eval.report import (
    comparable_score,
    prepare_output,
    published_rows,
    write_report,
)
from terramask.methods.vocabulary import ClassVocabulary
from terramask.protocols import Progress, SemanticEngine

Labeller = Callable[[np.ndarray], np.ndarray]

#: Pixel value of "no class" in the saved prediction PNGs (outside every class id).
PREDICTION_NO_CLASS = 255


def evaluate_ovss(
    preset: OvssPreset,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    engine: Any,
    threshold: float | None = None,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    progress: Progress | None = None,
    models: dict[str, str] | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """Score `engine` on `preset`'s images under `root`; write predictions and a report.

    `engine` is a `SemanticEngine` (its probabilities are thresholded here; `threshold`
    overrides the preset's), or a predictor with `predict(image, vocabulary) -> (labels,
    confidence)` such as `methods.ovss.OvssPredictor`, which thresholds (and votes with SAM
    masks) itself. It may also be a function building either: it is called only once the
    data set and the output folder have been checked, so a bad path fails before any model
    loads. Predictions are class indices in label order (after `reduce_zero_label`), 255
    where no class was given, saved as `output_dir/predictions/<name>.png`; `terramask
    score` on that folder against the labels reproduces the numbers. `method` (clip,
    sam+clip, sam3) names the run beside the published numbers; `models` (role -> id) too.

    Beside ours the report shows the published numbers of this data set (and the averages
    only under their published labels; `report.published_rows`), ours in their metric
    (`comparable`: mIoU, or the foreground class's IoU on single-class sets), and how the
    run was configured (`configuration`: AMG mode, pruning, feature upsampler), saying
    whether that is the configuration the published number was measured with.

    Ground-truth values are checked against the preset's (`terramask.eval.label_check`):
    the first label maps before any model loads or anything is written, then each as it is
    read; a data set in another encoding stops the run with an `InputError`, and the few
    unexpected pixels of a good one are counted in `unexpected_labels`.
    """
    split = split or preset.layout.split
    found = find_samples(preset, root, split=split, limit=limit)
    _check_first_labels(found.samples, preset)
    output_dir = Path(output_dir)
    predictions_dir = prepare_output(output_dir, overwrite)
    vocabulary = preset.vocabulary()
    chosen_threshold = preset.threshold if threshold is None else threshold
    if not hasattr(engine, "probabilities") and not hasattr(engine, "predict"):
        engine = engine()
    if hasattr(engine, "predict"):
        chosen_threshold = getattr(engine, "threshold", None)
    label_image = _labeller(engine, vocabulary, chosen_threshold)
    scores = SegmentationScores(
        preset.labels,
        ignore_index=preset.ignore_index,
        reduce_zero_label=preset.reduce_zero_label,
    )
    check = _label_check(preset)
    total = len(found.samples)
    if progress:
        progress("evaluate", 0, total)
    for done, sample in enumerate(found.samples, start=1):
        label = read_label(sample.label)
        check.add(label, sample.label)
        image = read_image(sample.image)
        if label.shape != image.shape[:2]:
            raise InputError(
                f"The label {sample.label} is {label.shape[1]}x{label.shape[0]} pixels but its "
                f"image {sample.image} is {image.shape[1]}x{image.shape[0]}. Labels must cover "
                "their image pixel for pixel; check the data set's conversion."
            )
        predicted = np.asarray(label_image(image))
        if predicted.shape != label.shape:
            raise ValueError(
                f"engine {engine.name!r} labelled {sample.image} with shape {predicted.shape}, "
                f"expected {label.shape}"
            )
        scores.update(predicted, label)
        _save_prediction(predicted, predictions_dir / f"{sample.key}.png")
        if progress:
            progress("evaluate", done, total)
    check.finish()

    metrics = scores.result()
    metrics["unexpected_labels"]["limit_percent"] = 100 * check.limit
    result: dict[str, Any] = {
        "dataset": preset.name,
        "display_name": preset.display_name,
        "root": str(Path(root)),
        "split": split if preset.layout.has_split else None,
        "limit": limit,
        "engine": method or engine.name,
        "predictor": engine.name,
        "models": dict(models or {}),
        "threshold": chosen_threshold,
        "background_index": preset.background_index,
        "reduce_zero_label": preset.reduce_zero_label,
        "unmatched_images": found.unmatched_images,
        **metrics,
        "configuration": run_configuration(engine, method),
        "published": published_rows(preset, method or engine.name),
        "preset_source": preset.source,
        "preset_notes": list(preset.notes),
    }
    result["comparable"] = comparable_score(result, preset)
    result["outputs"] = write_report(result, output_dir, overwrite=overwrite)
    result["outputs"]["predictions"] = str(predictions_dir)
    return result


#: The dense-CLIP settings of SegEarth-OV's published runs (its configs and DESIGN.md 1.1).
PUBLISHED_DENSE = {
    "short_side": 448,
    "crop": 224,
    "stride": 112,
    "cls_lambda": -0.3,
    "logit_scale": 50.0,
    "templates": 80,
}


def run_configuration(engine: Any, method: str | None) -> dict[str, Any]:
    """How `engine` labels (its `configuration`, when it has one) and whether that is the
    published configuration of `method`'s paper (`published_configuration`)."""
    described = getattr(engine, "configuration", None)
    configuration = dict(described) if isinstance(described, dict) else {}
    configuration["published_configuration"] = published_configuration(method, configuration)
    return configuration


def published_configuration(method: str | None, configuration: dict[str, Any]) -> dict[str, Any]:
    """{"paper", "matches" (True, False, or None when not compared), "differences", "notes"}.

    clip is compared with SegEarth-OV (SimFeatUp upsampling, its window and prompt settings);
    sam+clip with the SAM-voting paper as its spec reads it (SAM's automatic mask generator
    with its defaults on a 29 grid, no pruning; the dense settings of SegEarth-OV, whose
    debiasing it follows; the paper does not say whether it upsamples with SimFeatUp).
    """
    from terramask.methods.mask_generation import reference_differences

    dense = configuration.get("dense")
    generation = configuration.get("generation")
    if method == "clip" and dense is not None:
        differences = _dense_differences(dense)
        if dense.get("upsampler") == "bilinear":
            differences.insert(0, _BILINEAR)
        return {"paper": "SegEarth-OV (CVPR 2025)", "matches": not differences,
                "differences": differences, "notes": []}  # fmt: skip
    if method == "sam+clip" and dense is not None and generation is not None:
        differences = [f"mask generation {d}" for d in reference_differences(generation)]
        differences += _dense_differences(dense)
        return {"paper": "SAM mask voting (Sosa et al.)", "matches": not differences,
                "differences": differences, "notes": [_SOSA_NOTE]}  # fmt: skip
    return {"paper": None, "matches": None, "differences": [], "notes": []}


_BILINEAR = (
    "bilinear upsampling of the logits instead of SimFeatUp (SegEarth-OV upsamples the CLIP "
    "features with SimFeatUp)"
)
_SOSA_NOTE = (
    "The SAM-voting paper publishes no AMG settings: the reference is SAM's automatic mask "
    "generator with its defaults on the paper's 29 x 29 grid (specs/sosa.md section 1); whether "
    "it upsamples CLIP features with SimFeatUp is not published either."
)


def _dense_differences(dense: dict[str, Any]) -> list[str]:
    return [
        f"dense CLIP {name} {dense.get(name)!r} (published {value!r})"
        for name, value in PUBLISHED_DENSE.items()
        if name in dense and dense[name] != value
    ]


def _label_check(preset: OvssPreset) -> LabelCheck:
    return LabelCheck(
        preset.labels,
        ignore_index=preset.ignore_index,
        reduce_zero_label=preset.reduce_zero_label,
        preset_name=preset.display_name,
    )


def _check_first_labels(samples: list[Sample], preset: OvssPreset) -> None:
    """Judge the label maps read until the check's minimum is reached (or all of them)."""
    check = _label_check(preset)
    for sample in samples:
        check.add(read_label(sample.label), sample.label)
        if check.pixels >= check.min_pixels:
            break
    check.finish()


def _save_prediction(labels: np.ndarray, path: Path) -> None:
    from PIL import Image

    from terramask.atomic import atomic_output

    pixels = np.where(labels < 0, PREDICTION_NO_CLASS, labels).astype(np.uint8)
    with atomic_output(path, overwrite=True) as temp:
        Image.fromarray(pixels, mode="L").save(temp, format="PNG")


def _labeller(engine: Any, vocabulary: ClassVocabulary, threshold: float | None) -> Labeller:
    """image -> (H, W) class indices (NO_CLASS allowed), whichever kind `engine` is."""
    if hasattr(engine, "predict"):
        return lambda image: engine.predict(image, vocabulary)[0]

    from terramask.methods.labels import labels_from_probabilities

    semantic: SemanticEngine = engine

    def label(image: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(semantic.probabilities(image, vocabulary))
        expected = (len(vocabulary), *image.shape[:2])
        if probabilities.shape != expected:
            raise ValueError(
                f"engine {semantic.name!r} returned probabilities of shape "
                f"{probabilities.shape}, expected {expected}"
            )
        return labels_from_probabilities(probabilities, vocabulary, threshold)

    return label
