"""Read referring/reasoning benchmarks (RRSIS-D, EarthReason, GeoSeg-Bench x2) into samples.

Each loader turns one public layout into `ReferringSample`s: an image, a question, the
target mask (read lazily, so a large split costs little until it is scored) and a group for
the breakdown. Layout mistakes are found while loading, before any model is started, and
reported as one `InputError` naming the file or folder expected.

Format assumptions (we hold no copy of these data sets; they follow the published layouts):

- RRSIS-D: `refs(unc).p` (REFER pickle: a list of refs with ref_id, ann_id, image_id, split,
  sentences [{"sent"/"raw"}]) and `instances.json` (COCO, polygon or RLE segmentations) in
  the root; images in `images/rrsisd/JPEGImages/`, `images/JPEGImages/`, `images/` or
  `JPEGImages/`. One sample per sentence; group = the COCO category name.
- EarthReason: `{split}/images/*.jpg|png`, `{split}/labels/*.png` (non-zero = target),
  `{split}/QAs/*.json` with "questions" (list) or "question" (text or list) and "answer".
  One sample per question. An empty answer means no target: the mask is empty whatever
  the label holds (the label may then be absent). No group.
- GeoSeg-Bench (GeoSeg's): `annotations/<category>.json`, each a list of entries with id,
  difficulty ("Level1", ...), question, file_name; images in `images/<difficulty>/`, masks
  in `masks/<difficulty>/<stem>.png` (0/255; 128 and above = target). Group = difficulty.
- UniGeoSeg's GeoSeg-Bench: `{split}.json`, a list of {"img", "mask", "json"} paths
  relative to the root (absolute paths are taken as they are). The instruction JSON holds
  the text under one of INSTRUCTION_KEYS (a string, a list of strings - one sample each -
  or a list of {"sent"/"text"/"raw"} objects, as LISA's "text" list). An interactive entry
  with no text but "points"/"point"/"bbox"/"box" gets a sentence naming those pixel
  coordinates. Task (the group) from the path: "/ref/" referring, "/intera/" interactive,
  otherwise reasoning. Masks: non-zero = target. Scored at 512x512 after `letterbox`.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError
from terramask.eval.datasets import read_image, read_label

MaskSource = np.ndarray | Callable[[], np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

#: Keys of UniGeoSeg's instruction JSON that may hold the instruction text, in the order tried.
INSTRUCTION_KEYS = (
    "question",
    "questions",
    "instruction",
    "instructions",
    "text",
    "texts",
    "sentence",
    "sentences",
    "expression",
    "expressions",
    "query",
    "prompt",
    "ref",
)

#: Side of the square UniGeoSeg's benchmark is scored at.
UNIGEOSEG_SIZE = 512


@dataclass(frozen=True)
class ReferringSample:
    """One question about one image, with its target mask (possibly empty) and its group."""

    id: str
    image_path: Path
    question: str
    mask: MaskSource = field(repr=False)
    group: str | None = None
    answer_text: str | None = None

    def load_mask(self) -> np.ndarray:
        """The (H, W) bool target, read now if it was given as a loader."""
        mask = self.mask() if callable(self.mask) else self.mask
        return np.asarray(mask, dtype=bool)

    def load_image(self) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image."""
        return read_image(self.image_path)


@dataclass(frozen=True)
class ReferringDataset:
    """The samples of one split and how the benchmark scores them."""

    name: str
    display_name: str
    split: str | None
    samples: list[ReferringSample]
    group_name: str | None = None
    score_size: int | None = None
    binary_metrics: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Spec:
    display_name: str
    layout: str
    default_split: str | None
    loader: Callable[[Path, str | None], ReferringDataset]


def referring_dataset_names() -> list[str]:
    """The names `load_referring_dataset` knows."""
    return list(_SPECS)


def load_referring_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
) -> ReferringDataset:
    """The samples of data set `name` under `root` (its default split unless `split`).

    `limit` keeps the first samples in the data set's own order (refs, file names, list).
    """
    key = name.strip().lower().replace("_", "-")
    if key not in _SPECS:
        raise InputError(
            f"No referring benchmark is called {name!r}. Known data sets: {', '.join(_SPECS)}."
        )
    spec = _SPECS[key]
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"The data set root {root} is not a folder. Point `root` at the {spec.display_name} "
            f"folder that holds {spec.layout}."
        )
    if split is not None and spec.default_split is None:
        raise InputError(
            f"{spec.display_name} has no splits: its layout is {spec.layout}. Leave out `split`."
        )
    dataset = spec.loader(root, split or spec.default_split)
    if not dataset.samples:
        raise InputError(
            f"{spec.display_name} under {root} holds no sample"
            + (f" in the {dataset.split} split" if dataset.split else "")
            + f". Expected layout: {spec.layout}."
        )
    if limit is not None:
        dataset = replace(dataset, samples=dataset.samples[:limit])
    return dataset


# --- masks -------------------------------------------------------------------------------


def _png_mask(path: Path, threshold: int = 1) -> np.ndarray:
    return read_label(path) >= threshold


def _empty_mask(image_path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(image_path) as img:
        width, height = img.size
    return np.zeros((height, width), dtype=bool)


def letterbox(mask: np.ndarray, size: int = UNIGEOSEG_SIZE) -> np.ndarray:
    """`mask` resized (nearest) so its long side is `size`, padded with False to size x size.

    The resized mask sits at the top-left and the padding goes right and below, as SAM's
    ResizeLongestSide + pad does in LISA-style pipelines; padding is background in both the
    prediction and the ground truth, so it adds no intersection or union.
    """
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (new_w, new_h), Image.Resampling.NEAREST
    )
    out = np.zeros((size, size), dtype=bool)
    out[:new_h, :new_w] = np.asarray(resized) > 127
    return out


# --- shared readers ----------------------------------------------------------------------


def _read_json(path: Path, display: str, layout: str) -> Any:
    if not path.is_file():
        raise InputError(
            f"{display} expects the file {path}, which does not exist. Expected layout: {layout}."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"The {display} annotation file {path} is not readable JSON ({exc}). Check that it "
            f"is complete, as distributed. Expected layout: {layout}."
        ) from exc


def _bad_entry(path: Path, display: str, what: str, layout: str) -> InputError:
    return InputError(
        f"The {display} annotation file {path} does not have the expected structure: {what}. "
        f"Expected layout: {layout}."
    )


def _find_image(folders: Iterable[Path], name: str) -> Path | None:
    for folder in folders:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _missing_file(display: str, path: Path, what: str, layout: str) -> InputError:
    return InputError(
        f"The {what} {path} named by {display}'s annotations does not exist. Check that the "
        f"whole data set was extracted under `root`. Expected layout: {layout}."
    )


# --- RRSIS-D -----------------------------------------------------------------------------

RRSISD_LAYOUT = (
    "refs(unc).p and instances.json (COCO) in the root, images in images/rrsisd/JPEGImages/, "
    "images/JPEGImages/, images/ or JPEGImages/"
)


def load_rrsisd(root: Path, split: str | None) -> ReferringDataset:
    """RRSIS-D: one sample per sentence of every ref in `split`; group = category name."""
    display = "RRSIS-D"
    refs = _read_refs(root / "refs(unc).p")
    coco = _read_json(root / "instances.json", display, RRSISD_LAYOUT)
    instances = root / "instances.json"
    try:
        images = {img["id"]: img for img in coco["images"]}
        annotations = {ann["id"]: ann for ann in coco["annotations"]}
        categories = {cat["id"]: cat["name"] for cat in coco.get("categories", [])}
    except (KeyError, TypeError) as exc:
        raise _bad_entry(
            instances,
            display,
            f"COCO images/annotations with ids are needed ({exc!r})",
            RRSISD_LAYOUT,
        ) from exc
    image_dirs = [
        root / "images" / "rrsisd" / "JPEGImages",
        root / "images" / "JPEGImages",
        root / "images",
        root / "JPEGImages",
    ]
    samples: list[ReferringSample] = []
    splits_seen: set[str] = set()
    for ref in refs:
        try:
            splits_seen.add(str(ref["split"]))
            if ref["split"] != split:
                continue
            ann = annotations[ref["ann_id"]]
            info = images[ref["image_id"]]
            file_name, height, width = info["file_name"], int(info["height"]), int(info["width"])
            sentences = ref["sentences"]
            segmentation = ann["segmentation"]
        except (KeyError, TypeError) as exc:
            raise _bad_entry(
                root / "refs(unc).p",
                display,
                f"the ref {str(ref)[:80]} lacks or points to a missing {exc!s} (in the refs "
                "or in instances.json)",
                RRSISD_LAYOUT,
            ) from exc
        image_path = _find_image(image_dirs, file_name)
        if image_path is None:
            raise _missing_file(display, image_dirs[0] / file_name, "image", RRSISD_LAYOUT)
        loader = partial(_coco_mask, segmentation, height, width, instances)
        category = categories.get(ann.get("category_id", ref.get("category_id")))
        for j, sentence in enumerate(sentences):
            text = sentence
            if isinstance(sentence, dict):
                text = sentence.get("sent") or sentence.get("raw")
            if not isinstance(text, str) or not text.strip():
                raise _bad_entry(
                    root / "refs(unc).p",
                    display,
                    f"sentence {j} of ref {ref.get('ref_id')} has no text under 'sent'",
                    RRSISD_LAYOUT,
                )
            samples.append(
                ReferringSample(
                    id=f"{ref.get('ref_id', len(samples))}-{j}",
                    image_path=image_path,
                    question=text.strip(),
                    mask=loader,
                    group=category,
                )
            )
    if not samples and splits_seen and split not in splits_seen:
        raise InputError(
            f"RRSIS-D's refs(unc).p in {root} has no ref in the {split!r} split; it holds "
            f"{', '.join(sorted(splits_seen))}. Choose one of these with `split`."
        )
    return ReferringDataset(
        "rrsis-d", display, split, samples, group_name="category" if categories else None
    )


def _read_refs(path: Path) -> list[dict]:
    """The REFER pickle (trusted input: it is the data set's own file, read as REFER reads it)."""
    if not path.is_file():
        raise InputError(
            f"RRSIS-D expects the REFER pickle {path}, which does not exist. Expected layout: "
            f"{RRSISD_LAYOUT}."
        )
    try:
        with path.open("rb") as handle:
            try:
                refs = pickle.load(handle)
            except UnicodeDecodeError:
                handle.seek(0)
                refs = pickle.load(handle, encoding="latin1")  # a Python 2 pickle
    except Exception as exc:
        raise InputError(
            f"The RRSIS-D refs file {path} cannot be unpickled ({type(exc).__name__}: {exc}). "
            "It should be REFER's refs(unc).p as distributed with the data set."
        ) from exc
    if not isinstance(refs, list):
        raise _bad_entry(path, "RRSIS-D", "a list of refs is needed", RRSISD_LAYOUT)
    return refs


def _coco_mask(segmentation: Any, height: int, width: int, source: Path) -> np.ndarray:
    """A COCO polygon list or RLE (compressed or not) as an (H, W) bool mask."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError as exc:
        raise InputError(
            "RRSIS-D's masks are COCO polygons/RLE, which need pycocotools. Install it with "
            "`pip install 'terramask[eval]'` (or `pip install pycocotools`)."
        ) from exc
    try:
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        with warnings.catch_warnings():
            # pycocotools' Cython arrays predate NumPy 2's copy keyword; harmless here.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = coco_mask.decode(rle)
    except Exception as exc:
        raise InputError(
            f"A segmentation in {source} cannot be decoded ({type(exc).__name__}: {exc}). "
            "COCO polygons ([[x1, y1, ...]]) or RLE ({'size', 'counts'}) are expected."
        ) from exc
    if decoded.ndim == 3:
        decoded = decoded.any(axis=2)
    return decoded.astype(bool)


# --- EarthReason -------------------------------------------------------------------------

EARTHREASON_LAYOUT = (
    "{split}/images/*.jpg|png, {split}/labels/*.png (non-zero = target) and {split}/QAs/*.json "
    "(questions and answer) under the root"
)


def load_earthreason(root: Path, split: str | None) -> ReferringDataset:
    """EarthReason: one sample per question of every QA file, in file-name order."""
    display = "EarthReason"
    layout = EARTHREASON_LAYOUT.replace("{split}", str(split))
    folders = {kind: root / str(split) / kind for kind in ("images", "labels", "QAs")}
    for kind in ("images", "QAs"):
        if not folders[kind].is_dir():
            raise InputError(
                f"EarthReason's {kind} folder {folders[kind]} does not exist. Expected layout: "
                f"{layout}; point `root` at the folder holding the splits, or pick the split "
                "with `split`."
            )
    images = _by_stem(folders["images"], IMAGE_SUFFIXES)
    labels = _by_stem(folders["labels"], (".png",)) if folders["labels"].is_dir() else {}
    samples: list[ReferringSample] = []
    for qa_path in sorted(folders["QAs"].glob("*.json")):
        stem = qa_path.stem
        doc = _read_json(qa_path, display, layout)
        questions, answer = _earthreason_qa(doc, qa_path, layout)
        image_path = images.get(stem)
        if image_path is None:
            raise _missing_file(display, folders["images"] / f"{stem}.jpg", "image", layout)
        if answer is not None and not answer.strip():
            mask: MaskSource = partial(_empty_mask, image_path)
        elif stem in labels:
            mask = partial(_png_mask, labels[stem])
        else:
            raise _missing_file(display, folders["labels"] / f"{stem}.png", "label", layout)
        for j, question in enumerate(questions):
            samples.append(ReferringSample(f"{stem}-{j}", image_path, question, mask, None, answer))
    return ReferringDataset("earthreason", display, split, samples)


def _earthreason_qa(doc: Any, path: Path, layout: str) -> tuple[list[str], str | None]:
    if not isinstance(doc, dict):
        raise _bad_entry(path, "EarthReason", "a JSON object is needed", layout)
    questions = doc.get("questions", doc.get("question"))
    if isinstance(questions, str):
        questions = [questions]
    if not (
        isinstance(questions, list)
        and questions
        and all(isinstance(q, str) and q.strip() for q in questions)
    ):
        raise _bad_entry(
            path, "EarthReason", "'questions' must be a non-empty list of question texts", layout
        )
    answer = doc.get("answer", doc.get("answers"))
    if isinstance(answer, list):
        answer = " ".join(str(a) for a in answer)
    return [q.strip() for q in questions], None if answer is None else str(answer)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes
    }


# --- GeoSeg-Bench (GeoSeg's) -------------------------------------------------------------

GEOSEG_LAYOUT = (
    "annotations/<category>.json (a list of {id, difficulty, question, file_name}), images in "
    "images/<difficulty>/ and masks in masks/<difficulty>/<name>.png (0/255)"
)


def load_geoseg_bench(root: Path, split: str | None) -> ReferringDataset:
    """GeoSeg's GeoSeg-Bench: every entry of every category file; group = difficulty level."""
    display = "GeoSeg-Bench"
    annotations = root / "annotations"
    if not annotations.is_dir():
        raise InputError(
            f"GeoSeg-Bench's annotation folder {annotations} does not exist. Expected layout: "
            f"{GEOSEG_LAYOUT}; point `root` at the folder that holds annotations/."
        )
    samples: list[ReferringSample] = []
    for path in sorted(annotations.glob("*.json")):
        entries = _read_json(path, display, GEOSEG_LAYOUT)
        if not isinstance(entries, list):
            raise _bad_entry(path, display, "a list of entries is needed", GEOSEG_LAYOUT)
        for entry in entries:
            try:
                level, file_name = str(entry["difficulty"]), str(entry["file_name"])
                question, entry_id = str(entry["question"]), entry["id"]
            except (KeyError, TypeError) as exc:
                raise _bad_entry(
                    path, display, f"entry {entry!r:.80} lacks {exc!s}", GEOSEG_LAYOUT
                ) from exc
            image_path = _find_image([root / "images" / level, root / "images"], file_name)
            if image_path is None:
                raise _missing_file(
                    display, root / "images" / level / file_name, "image", GEOSEG_LAYOUT
                )
            mask_dir = root / "masks" / level
            mask_path = _find_image([mask_dir], f"{Path(file_name).stem}.png") or _find_image(
                [mask_dir], file_name
            )
            if mask_path is None:
                raise _missing_file(
                    display, mask_dir / f"{Path(file_name).stem}.png", "mask", GEOSEG_LAYOUT
                )
            samples.append(
                ReferringSample(
                    id=f"{path.stem}-{entry_id}",
                    image_path=image_path,
                    question=question.strip(),
                    mask=partial(_png_mask, mask_path, 128),
                    group=level,
                    answer_text=entry.get("answer"),
                )
            )
    return ReferringDataset(
        "geoseg-bench", display, None, samples, group_name="difficulty", binary_metrics=True
    )


# --- UniGeoSeg's GeoSeg-Bench ------------------------------------------------------------

UNIGEOSEG_LAYOUT = (
    '{split}.json in the root: a list of {"img", "mask", "json"} paths relative to the '
    "root, the json holding the instruction under 'question', 'text', 'instruction' or "
    "'sentence'"
)


def unigeoseg_task(path: str) -> str:
    """The task an entry belongs to, from its path: referring, interactive or reasoning."""
    normal = "/" + str(path).replace("\\", "/").lstrip("/")
    if "/ref/" in normal:
        return "referring"
    if "/intera/" in normal:
        return "interactive"
    return "reasoning"


def load_unigeoseg_bench(root: Path, split: str | None) -> ReferringDataset:
    """UniGeoSeg's benchmark: one sample per instruction text; group = task."""
    display = "UniGeoSeg's GeoSeg-Bench"
    list_path = root / f"{split}.json"
    layout = UNIGEOSEG_LAYOUT.replace("{split}", str(split))
    entries = _read_json(list_path, display, layout)
    if not isinstance(entries, list):
        raise _bad_entry(list_path, display, "a list of entries is needed", layout)
    samples: list[ReferringSample] = []
    for index, entry in enumerate(entries):
        try:
            img, mask, instruction = (str(entry[k]) for k in ("img", "mask", "json"))
        except (KeyError, TypeError) as exc:
            raise _bad_entry(list_path, display, f"entry {index} lacks {exc!s}", layout) from exc
        paths = {"image": root / img, "mask": root / mask, "instruction": root / instruction}
        for what, path in paths.items():
            if not path.is_file():
                raise _missing_file(display, path, what, layout)
        doc = _read_json(paths["instruction"], display, layout)
        task = _entry_task(instruction, img, mask)
        texts = _instruction_texts(doc)
        if not texts:
            raise _bad_entry(
                paths["instruction"],
                display,
                f"no instruction text under any of {', '.join(INSTRUCTION_KEYS)} (nor points/"
                "box for an interactive entry)",
                layout,
            )
        answer = doc.get("answer") if isinstance(doc, dict) else None
        for j, text in enumerate(texts):
            samples.append(
                ReferringSample(
                    id=f"{index}-{Path(img).stem}" + (f"-{j}" if len(texts) > 1 else ""),
                    image_path=paths["image"],
                    question=text,
                    mask=partial(_png_mask, paths["mask"]),
                    group=task,
                    answer_text=None if answer is None else str(answer),
                )
            )
    return ReferringDataset(
        "unigeoseg-bench",
        display,
        split,
        samples,
        group_name="task",
        score_size=UNIGEOSEG_SIZE,
        notes=(
            f"Scored at {UNIGEOSEG_SIZE}x{UNIGEOSEG_SIZE}: prediction and ground truth are "
            "letterboxed (long side resized, nearest; padded right and below).",
        ),
    )


def _entry_task(*paths: str) -> str:
    """Referring or interactive when any of the entry's paths says so, else reasoning."""
    tasks = {unigeoseg_task(path) for path in paths}
    for task in ("referring", "interactive"):
        if task in tasks:
            return task
    return "reasoning"


def _instruction_texts(doc: Any) -> list[str]:
    """The instruction sentences of one UniGeoSeg JSON (see INSTRUCTION_KEYS)."""
    if isinstance(doc, str):
        return [doc.strip()] if doc.strip() else []
    if not isinstance(doc, dict):
        return []
    for key in INSTRUCTION_KEYS:
        texts = _as_texts(doc.get(key))
        if texts:
            return texts
    for key in ("points", "point"):
        if doc.get(key) is not None:
            return [f"Segment the object at the point(s) {json.dumps(doc[key])} (pixel x, y)."]
    for key in ("bbox", "box"):
        if doc.get(key) is not None:
            return [f"Segment the object in the box {json.dumps(doc[key])} (pixel x1, y1, x2, y2)."]
    return []


def _as_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list):
        texts = []
        for item in value:
            if isinstance(item, dict):
                item = item.get("sent") or item.get("text") or item.get("raw")
            if isinstance(item, str) and item.strip():
                texts.append(item.strip())
        return texts
    return []


_SPECS: dict[str, _Spec] = {
    "rrsis-d": _Spec("RRSIS-D", RRSISD_LAYOUT, "test", load_rrsisd),
    "earthreason": _Spec("EarthReason", EARTHREASON_LAYOUT, "test", load_earthreason),
    "geoseg-bench": _Spec("GeoSeg-Bench", GEOSEG_LAYOUT, None, load_geoseg_bench),
    "unigeoseg-bench": _Spec(
        "UniGeoSeg's GeoSeg-Bench", UNIGEOSEG_LAYOUT, "test", load_unigeoseg_bench
    ),
}
