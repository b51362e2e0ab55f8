"""Training samples for click tuning: the data layouts read, the held-out split, and the
click cache (clicks synthesised once per mask, kept next to the data, resumable).

Layouts (`LAYOUTS`; "auto" recognises each by its files):

- `rrsis-d`, `earthreason`, `unigeoseg-bench`, `geoseg-bench`: the benchmark loaders of
  `terramask.eval.referring_datasets`, every sentence or question a sample ("all-texts"),
  split "train" by default (GeoSeg-Bench has no splits). Interactive UniGeoSeg entries
  (coordinates, not words) are left out. EarthReason's questions whose label is empty (or
  whose answer is empty) have no target: they teach the "not in the image" answer.
- `jsonl`: a file with one JSON object a line: `{"image": PATH, "mask": PATH, "instruction":
  TEXT}` (`question` or `text` also name the instruction; paths relative to the file), and
  optionally `"value": V`, the mask value that marks the target (default: any non-zero
  value), so class label maps serve as masks.
- `folder`: `images/NAME.ext`, `masks/NAME.png|tif` (non-zero = target) and
  `instructions/NAME.txt` (each non-empty line an instruction, one sample each).

Outside EarthReason an empty mask is refused, naming it: a click needs a target.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from terramask.atomic import write_atomic
from terramask.errors import InputError
from terramask.methods.click_synthesis import ClickTrace, check_mask, synthesize_clicks
from terramask.options import ClickSynthesis
from terramask.protocols import Progress, Segmenter

#: Data layouts `terramask train clicks` reads ("auto" recognises them).
LAYOUTS = ("auto", "rrsis-d", "earthreason", "unigeoseg-bench", "geoseg-bench", "jsonl",
           "folder")  # fmt: skip
_BENCHMARKS = ("rrsis-d", "earthreason", "unigeoseg-bench", "geoseg-bench")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_MASK_SUFFIXES = (".png", ".tif", ".tiff")
_LAYOUT_HELP = (
    "a JSONL file of {\"image\", \"mask\", \"instruction\"} lines; a folder with images/, "
    "masks/ and instructions/ (NAME.txt); or an RRSIS-D, EarthReason, UniGeoSeg or "
    "GeoSeg-Bench folder"
)


@dataclass(frozen=True)
class TrainingSample:
    """One instruction about one image, with its target mask (read when needed).

    `no_target_allowed`: an empty mask is a "not in the image" example (EarthReason's
    questions without an answer), not an error."""

    id: str
    image_path: Path
    instruction: str
    mask: Callable[[], np.ndarray]
    mask_name: str
    no_target_allowed: bool = False

    def load_mask(self) -> np.ndarray:
        return np.asarray(self.mask(), dtype=bool)

    def load_image(self) -> np.ndarray:
        from terramask.eval.datasets import read_image

        return read_image(self.image_path)


@dataclass(frozen=True)
class TrainingData:
    """The samples read from `source`, and how (for reports and the cache's key)."""

    source: Path
    layout: str
    split: str | None
    samples: list[TrainingSample]

    def describe(self) -> dict:
        return {"source": str(self.source.resolve()), "layout": self.layout, "split": self.split,
                "samples": len(self.samples),
                "images": len({s.image_path for s in self.samples})}  # fmt: skip


def load_training_data(
    source: str | os.PathLike, layout: str = "auto", split: str | None = None
) -> TrainingData:
    """The samples of `source` in `layout` ("auto" recognises it); see the module notes.

    Raises:
        InputError: An unknown or unrecognised layout, a missing file, an entry without
            an instruction, or no sample at all.
    """
    source = Path(source).expanduser()
    if layout not in LAYOUTS:
        raise InputError(f"`layout` must be one of {', '.join(LAYOUTS)}, not {layout!r}.")
    if not source.exists():
        raise InputError(f"The training data {source} does not exist. Give {_LAYOUT_HELP}.")
    if layout == "auto":
        layout = detect_layout(source)
    if layout == "jsonl":
        if split is not None:
            raise InputError("A JSONL file has no splits: leave out `split`.")
        samples = _jsonl_samples(source)
    elif layout == "folder":
        if split is not None:
            raise InputError("A folder of images/, masks/ and instructions/ has no splits: "
                             "leave out `split`.")
        samples = _folder_samples(source)
    else:
        samples, split = _benchmark_samples(source, layout, split)
    if not samples:
        raise InputError(f"The training data {source} ({layout}) holds no sample.")
    return TrainingData(source, layout, split, samples)


def detect_layout(source: Path) -> str:
    """The layout of `source`, recognised by its files; an InputError naming them otherwise."""
    if source.is_file():
        if source.suffix.lower() in (".jsonl", ".ndjson"):
            return "jsonl"
        raise InputError(
            f"The training data {source} is a file but not a .jsonl list; give {_LAYOUT_HELP}."
        )
    if (source / "images").is_dir() and (source / "masks").is_dir():
        return "folder"
    if any((folder / name).is_file() for folder in (source, source / "rrsisd")
           for name in ("refs(unc).p", "refs(umd).p")):  # fmt: skip
        return "rrsis-d"
    if any((source / split / "QAs").is_dir() for split in ("train", "val", "test")):
        return "earthreason"
    if (source / "annotations").is_dir() and (source / "masks").is_dir():
        return "geoseg-bench"
    json_lists = list(source.glob("*.json")) + [
        p for task in ("interactive", "ref", "reason", "intera", "referring", "reasoning")
        for p in (source / task).glob("**/*.json")
    ]  # fmt: skip
    if json_lists:
        return "unigeoseg-bench"
    raise InputError(
        f"The layout of the training data {source} is not one TerraMask knows. Give "
        f"{_LAYOUT_HELP}, or name the layout (`layout`)."
    )


def read_target(path: str | os.PathLike, value: int | None) -> np.ndarray:
    """The target of a mask file: its pixels equal to `value`, or any non-zero one; a TIFF's
    nodata pixels are never target (a 0/1 mask with nodata 255 marks 255 where unknown)."""
    from terramask.eval.datasets import read_label

    labels = read_label(path)
    target = labels != 0 if value is None else labels == value
    nodata = _nodata(Path(path))
    if nodata is not None:
        target &= labels != nodata
    return target


def _nodata(path: Path) -> float | None:
    from terramask.eval.datasets import TIFF_SUFFIXES

    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import rasterio

    with rasterio.open(path) as src:
        return src.nodata


def _jsonl_samples(path: Path) -> list[TrainingSample]:
    samples = []
    base = path.parent
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number} of {path}"
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where[0].upper()}{where[1:]} is not JSON ({exc}).") from None
        if not isinstance(entry, dict):
            raise InputError(f"{where[0].upper()}{where[1:]} is not a JSON object.")
        text = next((entry[k] for k in ("instruction", "question", "text")
                     if isinstance(entry.get(k), str) and entry[k].strip()), None)  # fmt: skip
        if text is None or not entry.get("image") or not entry.get("mask"):
            raise InputError(
                f"{where[0].upper()}{where[1:]} needs \"image\", \"mask\" and \"instruction\" "
                f"(got {sorted(entry)})."
            )
        image, mask = base / str(entry["image"]), base / str(entry["mask"])
        for kind, file in (("image", image), ("mask", mask)):
            if not file.is_file():
                raise InputError(f"The {kind} {file} named on {where} does not exist.")
        value = entry.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InputError(f"\"value\" on {where} must be a whole number, not {value!r}.")
        name = f"{mask}" + (f" (value {value})" if value is not None else "")
        samples.append(TrainingSample(
            f"line-{number}", image, " ".join(text.split()), partial(read_target, mask, value),
            name,
        ))  # fmt: skip
    return samples


def _folder_samples(root: Path) -> list[TrainingSample]:
    images = _by_stem(root / "images", _IMAGE_SUFFIXES)
    masks = _by_stem(root / "masks", _MASK_SUFFIXES)
    texts = root / "instructions"
    samples = []
    for stem, image in sorted(images.items()):
        if stem not in masks:
            raise InputError(f"The image {image} has no mask: expected {root / 'masks'}/"
                             f"{stem}.png.")
        text_file = texts / f"{stem}.txt"
        if not text_file.is_file():
            raise InputError(f"The image {image} has no instruction: expected {text_file} "
                             "(one instruction a line).")
        lines = [" ".join(t.split()) for t in text_file.read_text(encoding="utf-8").splitlines()]
        lines = [t for t in lines if t]
        if not lines:
            raise InputError(f"The instruction file {text_file} is empty.")
        for j, text in enumerate(lines):
            samples.append(TrainingSample(f"{stem}-{j}", image, text,
                                          partial(read_target, masks[stem], None),
                                          str(masks[stem])))  # fmt: skip
    return samples


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in suffixes}  # fmt: skip


def _benchmark_samples(
    root: Path, layout: str, split: str | None
) -> tuple[list[TrainingSample], str | None]:
    from terramask.eval.referring_datasets import load_referring_dataset, unigeoseg_task_folder

    split = split or (None if layout == "geoseg-bench" else "train")
    dataset = load_referring_dataset(layout, root, split=split, protocol="all-texts")
    samples = []
    for sample in dataset.samples:
        if sample.interactive or (layout == "unigeoseg-bench" and (
                sample.group == "interactive" or unigeoseg_task_folder(
                    sample.image_path.relative_to(root)) == "interactive")):
            continue  # coordinates, not words: the segmenter's task, not the click generator's
        samples.append(TrainingSample(
            sample.id, sample.image_path, " ".join(sample.question.split()),
            sample.load_mask, f"the mask of sample {sample.id} ({sample.image_path.name})",
            no_target_allowed=layout == "earthreason",
        ))  # fmt: skip
    return samples, dataset.split


def split_held_out(
    samples: Sequence[TrainingSample], fraction: float
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """(train, validation): round(images x `fraction`) whole images held out, chosen by a
    hash of their path so the split never moves between runs (all sentences of an image
    stay on one side)."""
    images = sorted({str(s.image_path) for s in samples},
                    key=lambda p: hashlib.sha256(p.encode()).hexdigest())  # fmt: skip
    held = set(images[: round(len(images) * fraction)])
    train = [s for s in samples if str(s.image_path) not in held]
    validation = [s for s in samples if str(s.image_path) in held]
    if not train:
        raise InputError(
            f"Holding out {fraction:g} of {len(images)} images leaves nothing to train on; "
            "lower `ClickTraining.val_fraction`."
        )
    return train, validation


# ---------------------------------------------------------------------------- click cache


def mask_key(sample: TrainingSample, mask: np.ndarray) -> str:
    """Identifies one (image, mask) pair: sentences that share them share their clicks."""
    digest = hashlib.sha256(str(sample.image_path.resolve()).encode())
    digest.update(str(mask.shape).encode())
    digest.update(np.packbits(mask).tobytes())
    return digest.hexdigest()[:24]


def default_cache_folder(source: Path) -> Path:
    """`.terramask-clicks/` next to the data when that folder is writable, else
    `$TERRAMASK_CACHE/clicks/` (default ~/.cache/terramask/clicks/)."""
    beside = (source if source.is_dir() else source.parent)
    if os.access(beside, os.W_OK):
        return beside / ".terramask-clicks"
    root = os.environ.get("TERRAMASK_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "terramask"
    return base / "clicks"


class ClickCache:
    """The clicks of each (image, mask) pair of one data set, segmenter and click count, in
    one JSONL file rewritten atomically every `flush_every` new entries (so a stopped run
    keeps what it finished and continues from there)."""

    def __init__(self, folder: Path, data: TrainingData, segmenter_name: str,
                 settings: ClickSynthesis, flush_every: int = 16) -> None:
        key = json.dumps({"source": str(data.source.resolve()), "layout": data.layout,
                          "split": data.split, "segmenter": segmenter_name,
                          "clicks": settings.clicks}, sort_keys=True)  # fmt: skip
        self.path = Path(folder) / f"clicks-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"
        self.flush_every = flush_every
        self.entries: dict[str, dict] = {}
        self._unsaved = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and "key" in entry:
                    self.entries[entry["key"]] = entry

    def add(self, entry: dict) -> None:
        self.entries[entry["key"]] = entry
        self._unsaved += 1
        if self._unsaved >= self.flush_every:
            self.save()

    def save(self) -> None:
        if not self._unsaved and self.path.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.entries.values())
        write_atomic(self.path, lines)
        self._unsaved = 0


@dataclass(frozen=True)
class PreparedSample:
    """A training sample with its clicks (none for a "not in the image" example)."""

    sample: TrainingSample
    image_size: tuple[int, int]
    trace: ClickTrace | None

    @property
    def no_target(self) -> bool:
        return self.trace is None


def prepare_clicks(
    data: TrainingData,
    samples: Iterable[TrainingSample],
    cache: ClickCache,
    segmenter: Callable[[], Segmenter],
    *,
    settings: ClickSynthesis,
    progress: Progress | None = None,
) -> list[PreparedSample]:
    """Each sample with its clicks: from the cache, else synthesised (`segmenter()` is
    called only when something is missing) and added to it. Progress: ("clicks", done,
    total), counting cached ones as done."""
    samples = list(samples)
    keyed: list[tuple[TrainingSample, str]] = []  # masks are re-read: all would not fit
    for sample in samples:
        keyed.append((sample, mask_key(sample, sample.load_mask())))
    missing = {key for _, key in keyed if key not in cache.entries}
    done, total = len({k for _, k in keyed}) - len(missing), len({k for _, k in keyed})
    if progress:
        progress("clicks", done, total)
    model: Segmenter | None = None
    embedded: tuple[Path, object] | None = None
    try:
        for sample, key in sorted(keyed, key=lambda k: str(k[0].image_path)):
            if key not in missing:
                continue
            missing.discard(key)
            mask = sample.load_mask()
            image = sample.load_image()
            if not mask.any() and sample.no_target_allowed:
                check_size(mask, image, sample)
                cache.add({"key": key, "image_size": list(mask.shape), "no_target": True})
            else:
                check_mask(mask, image.shape, sample.mask_name)
                if model is None:
                    model = segmenter()
                if embedded is None or embedded[0] != sample.image_path:
                    embedded = (sample.image_path, model.embed(image))
                trace = synthesize_clicks(model, image, mask, settings=settings,
                                          embedding=embedded[1])  # fmt: skip
                cache.add({"key": key, "image_size": list(mask.shape), "no_target": False,
                           **trace.to_dict()})  # fmt: skip
            done += 1
            if progress:
                progress("clicks", done, total)
    finally:
        cache.save()
    prepared = []
    for sample, key in keyed:
        entry = cache.entries[key]
        trace = None if entry.get("no_target") else ClickTrace.from_dict(entry)
        prepared.append(PreparedSample(sample, tuple(entry["image_size"]), trace))
    return prepared


def check_size(mask: np.ndarray, image: np.ndarray, sample: TrainingSample) -> None:
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"{sample.mask_name} is {mask.shape[1]} x {mask.shape[0]} pixels but its image "
            f"{sample.image_path} is {image.shape[1]} x {image.shape[0]}: masks must match "
            "their images."
        )


__all__ = [
    "LAYOUTS",
    "ClickCache",
    "PreparedSample",
    "TrainingData",
    "TrainingSample",
    "default_cache_folder",
    "detect_layout",
    "load_training_data",
    "mask_key",
    "prepare_clicks",
    "read_target",
    "split_held_out",
]
