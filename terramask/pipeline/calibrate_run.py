"""`calibrate`: fit the MLLM box refinement on a labelled referring/reasoning sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from terramask.atomic import exists_error
from terramask.errors import MLLMError
from terramask.methods.calibration import fit_refinement
from terramask.protocols import MLLM, Progress


def mask_box(mask: np.ndarray) -> list[float] | None:
    """The x1, y1, x2, y2 pixel box around a mask's pixels (None when empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def run_calibration(
    dataset: str,
    root: str | Path,
    mllm: MLLM,
    output: str | Path,
    *,
    split: str | None = None,
    limit: int | None = 50,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Ask the MLLM for a box per sample, fit the refinement to the true boxes, save it.

    Samples without a target, or whose reply has no box, are left out (and counted).
    """
    from terramask.atomic import atomic_output
    from terramask.eval.referring_datasets import load_referring_dataset
    from terramask.methods.replies import parse_reply, prompt_for

    output = Path(output)
    if output.exists() and not overwrite:
        raise exists_error(output)
    data = load_referring_dataset(dataset, root, split=split, limit=limit)
    predicted, truth, sizes = [], [], []
    skipped = {"no_target": 0, "no_box": 0, "failed": 0, "interactive": 0}
    for done, sample in enumerate(data.samples):
        if progress:
            progress("calibrate", done, len(data.samples))
        if getattr(sample, "interactive", False):  # coordinates given, not a question
            skipped["interactive"] += 1
            continue
        true_box = mask_box(sample.load_mask())
        if true_box is None:
            skipped["no_target"] += 1
            continue
        image = sample.load_image()
        try:
            reply = mllm.ask(image, prompt_for(mllm, sample.question, image.shape[:2]))
            parsed = parse_reply(reply, image.shape[:2])
        except MLLMError:
            skipped["failed"] += 1
            continue
        if parsed.no_target or len(parsed.boxes) == 0:
            skipped["no_box"] += 1
            continue
        boxes = np.asarray(parsed.boxes, dtype=np.float64)
        union = [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]
        predicted.append(union)
        truth.append(true_box)
        sizes.append(image.shape[:2])
    if progress:
        progress("calibrate", len(data.samples), len(data.samples))
    refinement, summary = fit_refinement(predicted, truth, sizes)
    with atomic_output(output, overwrite=overwrite) as tmp:
        refinement.save(tmp)
    return {
        "output": str(output),
        "refinement": {k: round(v, 4) for k, v in vars(refinement).items()},
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()},
        "skipped": skipped,
        "mllm": mllm.name,
        "dataset": data.name,
    }
