"""Runs click synthesis over files: the masks of `terramask clicks`, and the training data of
`terramask train clicks` (read, split, synthesised into the click cache)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terramask.atomic import write_atomic
from terramask.errors import InputError, OutputExistsError
from terramask.methods.click_synthesis import check_mask, format_clicks, synthesize_clicks
from terramask.options import ClickSynthesis, ClickTraining, ModelOptions
from terramask.protocols import Progress, Segmenter
from terramask.stamps import folder_stamps
from terramask.train.data import (
    ClickCache,
    PreparedSample,
    TrainingData,
    default_cache_folder,
    load_training_data,
    prepare_clicks,
    read_target,
    split_held_out,
)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def segmenter_loader(models: ModelOptions) -> Callable[[], Segmenter]:
    """Loads the segmenter when called, outside the process-wide model cache, so that the
    caller's dropping it frees its memory (a loaded `Segmenter` object is used as it is)."""
    spec = models.segmenter
    if spec is not None and not isinstance(spec, str | os.PathLike):
        return lambda: spec

    def load() -> Segmenter:
        from terramask.models.device import choose_device, choose_dtype
        from terramask.models.loader import quiet_progress
        from terramask.models.registry import DEFAULT_MODELS, resolve_model
        from terramask.models.sam import SamSegmenter

        resolved = resolve_model(os.fspath(spec or DEFAULT_MODELS["segmenter"]),
                                 kind="segmenter")  # fmt: skip
        device = choose_device(models.device)
        with quiet_progress():
            try:
                return SamSegmenter(resolved, device=device, dtype=choose_dtype(device))
            except Exception as exc:
                from terramask.errors import TerraMaskError
                from terramask.models.loader import _load_error

                if isinstance(exc, TerraMaskError):
                    raise
                raise _load_error(resolved, exc) from None

    return load


def segmenter_name(models: ModelOptions) -> str:
    """How the click cache names the segmenter: a folder by its absolute path and the names,
    sizes and times of its files (new weights in the same folder are another segmenter), a
    hub id or alias as given, a loaded one by its `name`."""
    import hashlib

    from terramask.models.registry import DEFAULT_MODELS

    spec = models.segmenter
    if spec is not None and not isinstance(spec, str | os.PathLike):
        return str(getattr(spec, "name", type(spec).__name__))
    name = os.fspath(spec or DEFAULT_MODELS["segmenter"])
    folder = Path(name)
    if not folder.is_dir():
        return name
    digest = hashlib.sha256("".join(f"{s};" for s in folder_stamps(folder)).encode())
    return f"{folder.resolve()}@{digest.hexdigest()[:12]}"


# ---------------------------------------------------------------------------- mask files


def _image_for(mask: Path, images: Path | None, single: bool) -> Path:
    if images is not None and images.is_file():
        if not single:
            raise InputError(
                f"One image ({images}) was given for several masks; give a folder of images "
                "named like the masks (`images`)."
            )
        return images
    folder = images if images is not None else mask.parent.parent / "images"
    for suffix in _IMAGE_SUFFIXES:
        for candidate in (folder / f"{mask.stem}{suffix}", folder / f"{mask.stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise InputError(
        f"No image was found for the mask {mask}: looked for {folder}/{mask.stem}.png|jpg|tif. "
        "Give the image (`images`), or a folder of images named like the masks."
    )


def synthesize_mask_files(
    masks: Sequence[str | os.PathLike],
    *,
    images: str | os.PathLike | None,
    mask_value: int | None,
    settings: ClickSynthesis,
    models: ModelOptions,
    output: str | os.PathLike | None,
    overwrite: bool,
    progress: Progress | None,
) -> list[dict]:
    """`api.synthesize_clicks` over files: every pair is checked before the segmenter loads."""
    from terramask.eval.datasets import read_image

    if not masks:
        raise InputError("No mask was given: name at least one mask file.")
    if output is not None and Path(output).exists() and not overwrite:
        raise OutputExistsError(
            f"The output {output} already exists and was left untouched. Pass `overwrite` to "
            "replace it, or choose another file."
        )
    folder = None if images is None else Path(images)
    if folder is not None and not folder.exists():
        raise InputError(f"The image or image folder {folder} does not exist.")
    pairs = []
    for mask in masks:
        mask = Path(mask)
        if not mask.is_file():
            raise InputError(f"The mask {mask} does not exist.")
        image_path = _image_for(mask, folder, len(masks) == 1)
        image = read_image(image_path)
        target = read_target(mask, mask_value)
        what = f"the mask {mask}" + ("" if mask_value is None else f" (value {mask_value})")
        pairs.append((mask, image_path, image, check_mask(target, image.shape, what)))
    segmenter = segmenter_loader(models)()
    results = []
    for done, (mask, image_path, image, target) in enumerate(pairs, 1):
        trace = synthesize_clicks(segmenter, image, target, settings=settings)
        size = target.shape
        results.append({
            "mask": str(mask), "image": str(image_path), "image_size": list(size),
            "frame": settings.frame,
            "clicks": format_clicks(trace.points, trace.labels, size, frame=settings.frame),
            **trace.to_dict(),
        })  # fmt: skip
        if progress:
            progress("clicks", done, len(pairs))
    if output is not None:
        write_atomic(Path(output), "".join(json.dumps(r) + "\n" for r in results),
                     overwrite=overwrite)  # fmt: skip
    return results


# ---------------------------------------------------------------------------- training data


@dataclass
class PreparedData:
    """Training and held-out samples with their clicks, and what they came from."""

    data: TrainingData
    train: list[PreparedSample]
    validation: list[PreparedSample]
    cache: Path
    segmenter: Callable[[], Segmenter]

    def describe(self) -> dict[str, Any]:
        synthesized = [p.trace for p in self.train + self.validation if p.trace is not None]
        final = [t.ious[-1] for t in synthesized]
        return {
            **self.data.describe(),
            "train_samples": len(self.train),
            "validation_samples": len(self.validation),
            "no_target_samples": sum(p.no_target for p in self.train + self.validation),
            "click_cache": str(self.cache.resolve()),
            "mean_clicks": round(float(np.mean([len(t.labels) for t in synthesized])), 3)
            if synthesized else None,
            "mean_final_click_iou": round(float(np.mean(final)), 4) if final else None,
        }


def prepare_training_data(
    source: str | os.PathLike,
    *,
    layout: str,
    split: str | None,
    training: ClickTraining,
    models: ModelOptions,
    cache: str | os.PathLike | None,
    progress: Progress | None,
) -> PreparedData:
    """Read, split and synthesise (once: the cache keeps what a stopped run finished)."""
    data = load_training_data(source, layout, split)
    train, validation = split_held_out(data.samples, training.val_fraction)
    folder = Path(cache) if cache is not None else default_cache_folder(data.source)
    settings = ClickSynthesis(clicks=training.clicks)
    click_cache = ClickCache(folder, data, segmenter_name(models), settings)
    loader = segmenter_loader(models)
    loaded: list[Segmenter] = []

    def segmenter() -> Segmenter:
        if not loaded:
            loaded.append(loader())
        return loaded[0]

    prepared = prepare_clicks(data, train + validation, click_cache, segmenter,
                              settings=settings, progress=progress)  # fmt: skip
    loaded.clear()  # the language model trains without the segmenter in memory
    by_id = {p.sample.id: p for p in prepared}
    return PreparedData(
        data,
        [by_id[s.id] for s in train],
        [by_id[s.id] for s in validation],
        click_cache.path,
        loader,
    )


__all__ = [
    "PreparedData",
    "prepare_training_data",
    "segmenter_loader",
    "segmenter_name",
    "synthesize_mask_files",
]
