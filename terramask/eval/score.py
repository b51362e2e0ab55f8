"""Score a folder of predicted label maps against a folder of ground truth, matched by name.

Predictions come in two encodings:

- class ids: value k is class k of `classes` (0..K-1); any other value is "no class".
- `terramask segment` label rasters, recognised by their GDAL tags (`TERRAMASK_CLASSES`,
  `TERRAMASK_FIRST_CLASS_VALUE`, `TERRAMASK_NO_CLASS_VALUE`, written by
  `terramask.pipeline.segment_run.label_raster_tags`): `<scene>_labels.tif` is paired with
  the ground truth `<scene>.*` (a tagged raster of another name keeps its name). Value
  first + i is the tagged class i, which is matched to `classes` *by name* (case-insensitive),
  so a segment run may list its classes in any order; the no-class value is "no class"; the
  raster's nodata is left out of the scores. A tagged class that `classes` does not name is
  refused. The segment run's other rasters beside it (`<scene>_score.tif`,
  `<scene>_preview.png`) are not predictions and are skipped.

The result says which encoding was applied to how many files (`prediction_encodings`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError
from terramask.eval.datasets import LABEL_SUFFIXES, TIFF_SUFFIXES, label_files, read_label
from terramask.eval.label_check import LabelCheck
from terramask.eval.metrics import SegmentationScores
from terramask.protocols import Progress

#: GDAL metadata keys of a `terramask segment` label raster.
CLASSES_TAG = "TERRAMASK_CLASSES"
FIRST_CLASS_TAG = "TERRAMASK_FIRST_CLASS_VALUE"
NO_CLASS_TAG = "TERRAMASK_NO_CLASS_VALUE"
#: File-name suffixes of a segment run's outputs (`<scene>_labels.tif` is the prediction).
SEGMENT_LABELS_SUFFIX = "_labels"
SEGMENT_SIDE_SUFFIXES = ("_score", "_preview")


def score_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    classes: Sequence[str],
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """mIoU, aAcc and per-class IoU (percent) over every prediction that has a ground truth.

    Predictions hold class indices 0..K-1 in `classes` order (any other value is "no class"),
    or are `terramask segment` label rasters (see the module docstring); ground truth is as
    stored, reduced here when `reduce_zero_label`. Files are PNG or TIFF, paired by stem;
    files on one side only are counted, not scored. Ground-truth values are checked as each
    file is read (`terramask.eval.label_check`): a folder in another encoding stops with an
    `InputError`; a few odd pixels are counted in `unexpected_labels`.
    """
    if not classes:
        raise InputError("No class was given: pass the class names in index order, e.g. a,b,c.")
    preds, side_files = _predictions(Path(pred_dir), classes)
    truths = _files(Path(gt_dir), "ground-truth")
    keys = sorted(k for k in preds if k in truths)
    if not keys:
        raise InputError(_no_pairs_message(pred_dir, gt_dir, preds, truths))
    scores = SegmentationScores(
        classes, ignore_index=ignore_index, reduce_zero_label=reduce_zero_label
    )
    check = LabelCheck(classes, ignore_index=ignore_index, reduce_zero_label=reduce_zero_label)
    encodings: dict[str, dict[str, Any]] = {}
    nodata_pixels = 0
    for done, key in enumerate(keys, start=1):
        prediction = preds[key]
        gt = read_label(truths[key])
        check.add(gt, truths[key])
        stored = read_label(prediction.path)
        if stored.shape != gt.shape:
            raise InputError(
                f"The prediction {prediction.path} is {stored.shape[1]}x{stored.shape[0]} "
                f"pixels but its ground truth {truths[key]} is {gt.shape[1]}x{gt.shape[0]}. "
                "Predictions must be at the ground truth's resolution; resample them "
                "(nearest) first."
            )
        pred, leave_out = prediction.decode(stored)
        scores.update(pred, gt, leave_out=leave_out)
        if leave_out is not None:
            nodata_pixels += int(leave_out.sum())
        described = prediction.describe(classes)
        entry = encodings.setdefault(json.dumps(described, sort_keys=True), described)
        entry["files"] = entry.get("files", 0) + 1
        if progress:
            progress("score", done, len(keys))
    check.finish()
    result = scores.result()
    result["unexpected_labels"]["limit_percent"] = 100 * check.limit
    result.update(
        classes=list(classes),
        ignore_index=ignore_index,
        reduce_zero_label=reduce_zero_label,
        unmatched_predictions=len(preds) - len(keys),
        unmatched_ground_truth=len(truths) - len(keys),
        prediction_encodings=list(encodings.values()),
        prediction_nodata_pixels=nodata_pixels,
        segment_side_files=side_files,
    )
    return result


@dataclass(frozen=True)
class SegmentEncoding:
    """How a `terramask segment` label raster stores classes (from its GDAL tags)."""

    classes: tuple[str, ...]
    first_class_value: int
    no_class_value: int
    nodata: int | None


@dataclass(frozen=True)
class Prediction:
    """One prediction file, and the segment encoding it carries (None: class ids)."""

    path: Path
    segment: SegmentEncoding | None = None
    to_class: tuple[int, ...] = ()  # tagged class i -> index in `classes`

    def decode(self, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(class indices, -1 for no class; pixels to leave out, or None)."""
        if self.segment is None:
            return stored, None
        values = stored.astype(np.int64)
        pred = np.full(values.shape, -1, dtype=np.int64)
        for index, target in enumerate(self.to_class):
            pred[values == self.segment.first_class_value + index] = target
        nodata = self.segment.nodata
        leave_out = values == nodata if nodata is not None else None
        return pred, leave_out

    def describe(self, classes: Sequence[str]) -> dict[str, Any]:
        """The mapping applied, for the result (without the file count)."""
        k = len(classes)
        if self.segment is None:
            return {
                "encoding": "class ids",
                "description": f"value k is class k of `classes` (0..{k - 1}); any other "
                "value is no class",
            }
        seg = self.segment
        first = seg.first_class_value
        value_to_class = {str(first + i): classes[target] for i, target in enumerate(self.to_class)}
        offsets = {target - (first + i) for i, target in enumerate(self.to_class)}
        offset = offsets.pop() if len(offsets) == 1 else None
        pairs = ", ".join(
            f"{first + i} {name} -> {target} {classes[target]}"
            for i, (name, target) in enumerate(zip(seg.classes, self.to_class, strict=True))
        )
        how = f"offset {offset:+d}" if offset is not None else "classes matched by name"
        nodata = (
            f"; {seg.nodata} (nodata) is left out of the scores" if seg.nodata is not None else ""
        )
        return {
            "encoding": "terramask segment",
            "classes": list(seg.classes),
            "first_class_value": first,
            "no_class_value": seg.no_class_value,
            "nodata_value": seg.nodata,
            "value_to_class": value_to_class,
            "offset": offset,
            "description": f"terramask segment label raster ({how}): {pairs}; "
            f"{seg.no_class_value} is no class{nodata}",
        }


def _predictions(folder: Path, classes: Sequence[str]) -> tuple[dict[str, Prediction], int]:
    """Predictions by pairing key, and how many segment side files were skipped."""
    files = _files(folder, "prediction")
    segment = {
        stem: encoding
        for stem, path in files.items()
        if (encoding := segment_encoding(path)) is not None
    }
    scenes = {_scene_name(stem) for stem in segment}
    side = {
        stem
        for stem in files
        if any(stem.endswith(s) and stem[: -len(s)] in scenes for s in SEGMENT_SIDE_SUFFIXES)
    }
    found: dict[str, Prediction] = {}
    for stem, path in files.items():
        if stem in side:
            continue
        if stem in segment:
            key = _scene_name(stem)
            prediction = Prediction(
                path, segment[stem], _match_classes(segment[stem], classes, path)
            )
        else:
            key, prediction = stem, Prediction(path)
        if key in found:
            raise InputError(
                f"Both {found[key].path} and {path} would be scored against the ground truth "
                f"called {key}. Keep one prediction per ground-truth file in the folder."
            )
        found[key] = prediction
    return found, len(side)


def _scene_name(stem: str) -> str:
    """A segment label raster's stem without `_labels`: the name its ground truth has."""
    return stem.removesuffix(SEGMENT_LABELS_SUFFIX)


def segment_encoding(path: Path) -> SegmentEncoding | None:
    """The encoding a `terramask segment` label raster's tags declare; None for other files."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                tags, nodata = src.tags(), src.nodata
    except Exception as exc:
        raise InputError(
            f"The prediction {path} cannot be read ({type(exc).__name__}: {exc}). Check that "
            "it is a complete TIFF file, or remove it from the folder."
        ) from exc
    if CLASSES_TAG not in tags:
        return None
    try:
        names = json.loads(tags[CLASSES_TAG])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("not a list of names")
        return SegmentEncoding(
            tuple(names),
            int(tags.get(FIRST_CLASS_TAG, "1")),
            int(tags.get(NO_CLASS_TAG, "0")),
            None if nodata is None else int(nodata),
        )
    except ValueError as exc:
        raise InputError(
            f"The prediction {path} carries TerraMask tags that cannot be read ({exc}): "
            f"{CLASSES_TAG} must be a JSON list of class names and {FIRST_CLASS_TAG}, "
            f"{NO_CLASS_TAG} integers. Write it again with `terramask segment`."
        ) from exc


def _match_classes(
    encoding: SegmentEncoding, classes: Sequence[str], path: Path
) -> tuple[int, ...]:
    """For each tagged class, the index of the class of that name in `classes`."""
    index: dict[str, int] = {}
    for i, name in enumerate(classes):
        index.setdefault(name.strip().casefold(), i)
    missing = [n for n in encoding.classes if n.strip().casefold() not in index]
    if missing:
        raise InputError(
            f"The prediction {path} was written by `terramask segment` for the classes "
            f"{', '.join(encoding.classes)} ({CLASSES_TAG}), but `classes` "
            f"({', '.join(classes)}) does not name {', '.join(missing)}. Its values are matched "
            "to `classes` by name: name the ground truth's classes in id order with the names "
            "the segment run used (each class's first synonym)."
        )
    return tuple(index[n.strip().casefold()] for n in encoding.classes)


def _files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(
            f"The {what} folder {folder} does not exist or is not a folder. Give the folder "
            "that holds the PNG or TIFF label maps."
        )
    files = label_files(folder)
    if not files:
        raise InputError(
            f"The {what} folder {folder} holds no PNG or TIFF label map. Give the folder "
            "that holds them (single-band class ids)."
        )
    stems = [p.stem for p in folder.iterdir() if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        names = ", ".join(p.name for p in sorted(folder.iterdir()) if p.stem == twice[0])
        raise InputError(
            f"The {what} folder {folder} holds more than one label map called {twice[0]} "
            f"({names}); files are paired by name without extension, so only one may stay."
        )
    return files


def _no_pairs_message(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    preds: dict[str, Prediction],
    truths: dict[str, Path],
) -> str:
    example = next(iter(preds), "(none)")
    message = (
        f"No prediction in {pred_dir} has a ground truth of the same name in {gt_dir} "
        f"(e.g. {example} vs {next(iter(truths))}). Files are paired by name without "
        "extension; rename them to match."
    )
    untagged = [
        k
        for k, p in preds.items()
        if k.endswith(SEGMENT_LABELS_SUFFIX) and k[: -len(SEGMENT_LABELS_SUFFIX)] in truths
    ]
    if untagged:
        message += (
            f" {preds[untagged[0]].path.name} looks like a `terramask segment` label raster "
            f"without its {CLASSES_TAG} tags (written by an older version): its values are "
            "classes 1..K and 0 no class, not class ids; run segment again to score it."
        )
    return message
