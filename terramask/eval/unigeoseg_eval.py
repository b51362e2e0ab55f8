"""UniGeoSeg on RRSIS-D, EarthReason and the GeoSeg-Benches, with the released evaluation's
protocol.

Each sample goes to the model with the conversation template and task the released loaders
use (`DATASET_STYLES`): RRSIS-D the "Referring Segmentation" template and the referring
branch, EarthReason the "Reasoning Segmentation" template and the reasoning branch,
UniGeoSeg's GeoSeg-Bench the "Reasoning Segmentation" template with each sample's task from
its folder (interactive samples keep their instruction text, and their coordinates are read
from it, as the released code does; no SAM is involved). Scoring is
`terramask.eval.referring.evaluate_referring`'s (gIoU, cIoU, Pr@t on the centred 512 canvas
under the reference protocol), with the paper's numbers beside ours.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

from terramask.eval.referring_datasets import load_referring_dataset
from terramask.methods.unigeoseg_prompts import DATASET_STYLES, route_instruction
from terramask.options import BenchmarkProtocol
from terramask.protocols import Progress

#: What the released evaluation runs (eval.sh, eval.py): the released weights in fp32.
RELEASED_NAMES = ("unigeoseg", "nishuo1999/UniGeoSeg")


def evaluate_unigeoseg(
    dataset: str,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    model: Any = None,
    device: str = "auto",
    dtype: str = "fp32",
    settings: Any = None,
    output: str | os.PathLike = "terramask-out",
    overwrite: bool = False,
    progress: Progress | None = None,
    protocol: BenchmarkProtocol = "reference",
) -> dict[str, Any]:
    """Score UniGeoSeg on a referring/reasoning benchmark; writes `output/<dataset>_<split>`.

    Args:
        dataset: "rrsis-d", "earthreason", "unigeoseg-bench" or "geoseg-bench".
        model: The UniGeoSeg checkpoint (`ModelOptions.unigeoseg`: alias, hub id, folder or a
            loaded `UniGeoSeg`; None: nishuo1999/UniGeoSeg). It loads after the data set
            was checked.
        dtype: "fp32" by default, the released evaluation's precision.
        settings: `UniGeoSegSettings`; None takes the data set's template (and, with
            `settings.task` None, each sample's task as the released loaders give it).
    """
    from terramask.eval.referring import evaluate_referring
    from terramask.models.unigeoseg import UniGeoSegSettings, load_unigeoseg

    name = dataset.strip().lower().replace("_", "-")
    samples = load_referring_dataset(
        dataset, root, split=split, limit=limit, protocol=protocol
    ).samples
    style, fixed_task = DATASET_STYLES.get(name, ("benchmark", None))
    settings = settings if settings is not None else UniGeoSegSettings(prompt=style)
    pending = deque(samples)
    loaded: list = []

    def unigeoseg():
        if not loaded:
            loaded.append(load_unigeoseg(model, device=device, dtype=dtype))
        return loaded[0]

    def task_of(question: str) -> str | None:
        # evaluate_referring asks for the samples in the data set's order, once each
        while pending:
            sample = pending.popleft()
            if sample.question == question:
                return fixed_task or sample.group or "reasoning"
        return fixed_task

    def predict(image: np.ndarray, question: str) -> tuple[np.ndarray, str]:
        task = settings.task or task_of(question)
        result = unigeoseg().segment(image, route_instruction(question, task), settings)
        return result.mask, result.explanation or ""

    def configuration() -> dict[str, Any]:
        loaded_model = unigeoseg()
        differences = []
        if loaded_model.name not in RELEASED_NAMES:
            differences.append(f"model {loaded_model.name}, not the released nishuo1999/UniGeoSeg")
        weight = str(loaded_model.model.lm_head.weight.dtype).replace("torch.", "")
        if weight != "float32":
            differences.append(f"{weight} weights (the released evaluation runs in float32)")
        if settings.prompt != style:
            differences.append(f"the {settings.prompt} template (the released {name} loader "
                               f"uses the {style} one)")  # fmt: skip
        if settings.task is not None:
            differences.append(f"every sample as {settings.task}")
        if protocol != "reference":
            differences.append(f"the {protocol} protocol")
        notes = []
        if name == "rrsis-d":
            notes.append(
                "The released RRSIS-D loader sets no task and fails as released; the referring "
                "branch (TATE, λ = 0.2) is used here, as its template says."
            )
        return {"paper": "UniGeoSeg", "matches": not differences, "differences": differences,
                "notes": notes}  # fmt: skip

    folder = name if split is None else f"{name}_{split}"
    return evaluate_referring(
        dataset,
        root,
        split=split,
        limit=limit,
        predict=predict,
        output_dir=os.path.join(os.fspath(output), folder),
        overwrite=overwrite,
        progress=progress,
        method="unigeoseg",
        models={"unigeoseg": str(getattr(model, "name", model) or "nishuo1999/UniGeoSeg")},
        protocol=protocol,
        segment=None,
        configuration=configuration,
    )

