"""Read referring/reasoning benchmarks (RRSIS-D, EarthReason, GeoSeg-Bench x2) into samples.

Each loader turns one public layout into `ReferringSample`s: an image, a question, the
target mask (read lazily, so a large split costs little until it is scored) and a group for
the breakdown. Layout mistakes are found while loading, before any model is started, and
reported as one `InputError` naming the file or folder expected.

Two protocols choose the samples and how they are scored (`PROTOCOLS`):

- "reference" (the default) follows the evaluation code behind the published numbers:
  UniGeoSeg's `eval.py` and its loaders (MiliLab/UniGeoSeg, which share RRSIS-D's and
  EarthReason's with SegEarth-R1). One instruction per referring object or image, scored on
  the 512x512 letterbox canvas (`letterbox`, centred), as `REFERENCE_NOTES` says per set.
- "all-texts" is TerraMask's earlier reading: every sentence or question is a sample, scored
  at the image's own size (UniGeoSeg's benchmark letterboxed into the top-left corner).

Format assumptions (we hold no copy of these data sets; they follow the published layouts):

- RRSIS-D: `refs(unc).p` (REFER pickle: a list of refs with ref_id, ann_id, image_id, split,
  sentences [{"sent"/"raw"}]) and `instances.json` (COCO, polygon or RLE segmentations) in
  the root or in `root/rrsisd/` (REFER's own layout); images in `images/rrsisd/JPEGImages/`,
  `images/JPEGImages/`, `images/` or `JPEGImages/`. Reference: one sample per ref, the raw
  text of its first sentence; the "test" split takes every ref whose split contains "test",
  as REFER's `getRefIds` does. All-texts: one sample per sentence ("sent", else "raw").
  Group = the COCO category name.
- EarthReason: `{split}/images/*.jpg|png`, `{split}/labels/*.png` (non-zero = target),
  `{split}/QAs/*.json` with "questions" (list) or "question" (text or list) and "answer";
  splits val and test. Reference: the first question per image; the mask is the label
  whatever the answer says (an empty answer only changes the expected reply, to "There is no
  target object in the image."); a missing label with an empty answer reads as no target.
  All-texts: one sample per question, and an empty answer forces an empty mask. No group.
- GeoSeg-Bench (GeoSeg's): `annotations/<category>.json`, each a list of entries with id,
  difficulty ("Level1", ...), question, file_name; images in `images/<difficulty>/`, masks
  in `masks/<difficulty>/<stem>.png` (0/255; 128 and above = target). Group = difficulty.
  GeoSeg's own evaluation scripts are not published: both protocols read it the same way.
- UniGeoSeg's GeoSeg-Bench: `{split}.json`, a list of {"img", "mask", "json"} paths
  relative to the folder holding it (absolute paths are taken as they are), either in the
  root (one task folder, e.g. `benchmark/ref`) or in task folders under it (the Hugging
  Face release: `interactive/`, `ref/`, `reason/`, each with `{split}.json` or
  `{split}/{split}.json`). The instruction JSON holds the text under one of
  INSTRUCTION_KEYS (a string, a list of strings, or a list of {"sent"/"text"/"raw"}
  objects). Reference: the first text; the task from an explicit folder name
  (`UNIGEOSEG_TASK_FOLDERS`: interactive/intera, ref/referring, reason/reasoning; the
  entry's own path first, then the folder of its list), else reasoning as UniGeoSeg does;
  the target is mask value 255 (or 1), as UniGeoSeg's loader converts only 255 to 1;
  interactive instructions are parsed for coordinates (`parse_interactive`) and go to the
  segmenter, not the MLLM. All-texts: one sample per text; task from the path ("/ref/"
  referring, "/intera/" interactive, otherwise reasoning); any non-zero mask value is
  target. An interactive entry with no text but "points"/"point"/"bbox"/"box" gets a
  sentence naming those pixel coordinates.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError
from terramask.eval.datasets import read_image, read_label
from terramask.methods.interactive import PointBoxPrompt
from terramask.options import PROTOCOLS, BenchmarkProtocol

MaskSource = np.ndarray | Callable[[], np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

#: How samples are chosen and scored: "reference" (the published evaluation code's way) or
#: "all-texts" (every sentence/question a sample, scored at the image's size).

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

#: Side of the square canvas UniGeoSeg's evaluation scores every data set on.
UNIGEOSEG_SIZE = 512
#: How interactive samples are answered when the engine has a segmenter (the report's note;
#: an engine without one, UniGeoSeg, reads their instruction itself).
INTERACTIVE_TO_SEGMENTER = (
    "Interactive instructions go to the segmenter (their box, or 1-3 positive points, "
    "normalised 0-1 and scaled to the image), not to the MLLM."
)
INTERACTIVE_TO_MODEL = (
    "Interactive instructions go to the model with their coordinates in the text (a box, or "
    "1-3 positive points, normalised 0-1), as the released evaluation does."
)
#: The canvas of the reference protocol (UniGeoSeg's `eval.py` passes image_size=512 to the
#: RRSIS-D, EarthReason and GeoSeg-Bench loaders alike).
REFERENCE_SIZE = UNIGEOSEG_SIZE

#: Folder names that state a UniGeoSeg task (the HF release's and the official code's).
UNIGEOSEG_TASK_FOLDERS = {
    "interactive": "interactive",
    "intera": "interactive",
    "ref": "referring",
    "referring": "referring",
    "reason": "reasoning",
    "reasoning": "reasoning",
}

#: UniGeoSeg's expected reply for an EarthReason question whose answer is empty.
NO_TARGET_ANSWER = "There is no target object in the image."

# The interactive instruction formats UniGeoSeg's loader reads (specs/unigeoseg.md §3): a box
# "x0,y0=[a,b], x1,y1=[c,d]" first, else bracketed "[x,y]" points, accepted when 1 to 3;
# numbers are digits and dots only (no sign, exponent or space inside the brackets).
_BOX_PATTERN = re.compile(r"x0,y0=\[([\d.]+),([\d.]+)\],\s*x1,y1=\[([\d.]+),([\d.]+)\]")
_POINT_PATTERN = re.compile(r"\[([\d.]+),([\d.]+)\]")


@dataclass(frozen=True)
class InteractivePrompt:
    """Coordinates read from an interactive instruction, normalised 0-1 (x by the image's
    width, y by its height, origin top-left): one box, or 1-3 points."""

    points: tuple[tuple[float, float], ...] = ()
    box: tuple[float, float, float, float] | None = None

    def in_pixels(self, height: int, width: int) -> PointBoxPrompt:
        """The prompt in the image's pixel frame (x * width, y * height); points positive."""
        scale = np.array([width, height], dtype=float)
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            return PointBoxPrompt(
                points=np.zeros((0, 2)),
                labels=np.zeros(0, dtype=int),
                box=np.array([x0 * width, y0 * height, x1 * width, y1 * height], dtype=float),
            )
        points = np.asarray(self.points, dtype=float).reshape(-1, 2) * scale
        return PointBoxPrompt(points=points, labels=np.ones(len(points), dtype=int))

    def describe(self) -> dict[str, Any]:
        """The normalised coordinates, for reports."""
        if self.box is not None:
            return {"box": list(self.box)}
        return {"points": [list(p) for p in self.points]}


def parse_interactive(text: str) -> InteractivePrompt | None:
    """The box or points an interactive instruction names, as UniGeoSeg's loader reads them.

    A box `x0,y0=[a,b], x1,y1=[c,d]` wins; otherwise every `[x,y]` is a point, accepted when
    there are 1 to 3 of them. None when neither is found (or a number does not parse).
    """
    try:
        box = _BOX_PATTERN.search(text)
        if box:
            x0, y0, x1, y1 = (float(box.group(i)) for i in range(1, 5))
            return InteractivePrompt(box=(x0, y0, x1, y1))
        points = _POINT_PATTERN.findall(text)
        if 1 <= len(points) <= 3:
            return InteractivePrompt(points=tuple((float(x), float(y)) for x, y in points))
    except ValueError:  # "1.2.3" matches the pattern but is no number
        return None
    return None


@dataclass(frozen=True)
class ReferringSample:
    """One question about one image, with its target mask (possibly empty) and its group.

    `interactive` samples are answered by the segmenter from `coordinates` (None: the
    instruction named none), not by the MLLM. `target_name` is the object's class when the
    data set names it (RRSIS-D's COCO category).
    """

    id: str
    image_path: Path
    question: str
    mask: MaskSource = field(repr=False)
    group: str | None = None
    answer_text: str | None = None
    interactive: bool = False
    coordinates: InteractivePrompt | None = None
    target_name: str | None = None

    def load_mask(self) -> np.ndarray:
        """The (H, W) bool target, read now if it was given as a loader."""
        mask = self.mask() if callable(self.mask) else self.mask
        return np.asarray(mask, dtype=bool)

    def load_image(self) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image."""
        return read_image(self.image_path)


@dataclass(frozen=True)
class ReferringDataset:
    """The samples of one split and how the benchmark scores them.

    With `score_size`, prediction and ground truth are scored on a `score_size` square
    canvas (`letterbox`, centred unless `letterbox_centred` is False). With `shown_letterboxed`
    (the reference protocol: UniGeoSeg's evaluation feeds its model `preprocess_image`'s
    canvas) the model is shown the image on that canvas (`model_view`) and its mask is scored
    as it is; otherwise it sees the image itself and its mask is letterboxed for scoring.
    """

    name: str
    display_name: str
    split: str | None
    samples: list[ReferringSample]
    group_name: str | None = None
    score_size: int | None = None
    binary_metrics: bool = False
    notes: tuple[str, ...] = ()
    protocol: str = "reference"
    letterbox_centred: bool = True
    shown_letterboxed: bool = False

    def model_view(self, image: np.ndarray) -> np.ndarray:
        """The image as the model under evaluation is shown it (see the class docstring)."""
        if self.shown_letterboxed and self.score_size:
            return letterbox_image(image, self.score_size)
        return image


@dataclass(frozen=True)
class _Spec:
    display_name: str
    layout: str
    default_split: str | None
    loader: Callable[[Path, str | None, str], ReferringDataset]


def referring_dataset_names() -> list[str]:
    """The names `load_referring_dataset` knows."""
    return list(_SPECS)


def check_protocol(protocol: str) -> str:
    """`protocol` if it is one of `PROTOCOLS`, else an `InputError` naming them."""
    if protocol not in PROTOCOLS:
        raise InputError(
            f"`protocol` must be one of {', '.join(PROTOCOLS)}, not {protocol!r}: "
            "'reference' follows the published evaluation code, 'all-texts' scores every "
            "sentence or question."
        )
    return protocol


def load_referring_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    protocol: BenchmarkProtocol = "reference",
) -> ReferringDataset:
    """The samples of data set `name` under `root` (its default split unless `split`).

    `protocol` chooses the samples and the scoring canvas (see the module notes). `limit`
    keeps the first samples in the data set's own order (refs, file names, list).
    """
    check_protocol(protocol)
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
    dataset = spec.loader(root, split or spec.default_split, protocol)
    if not dataset.samples:
        raise InputError(
            f"{spec.display_name} under {root} holds no sample"
            + (f" in the {dataset.split} split" if dataset.split else "")
            + f". Expected layout: {spec.layout}."
        )
    if limit is not None:
        dataset = replace(dataset, samples=dataset.samples[:limit])
    return replace(dataset, protocol=protocol)


# --- masks -------------------------------------------------------------------------------


def _png_mask(path: Path, threshold: int = 1) -> np.ndarray:
    return read_label(path) >= threshold


def _unigeoseg_mask(path: Path) -> np.ndarray:
    """UniGeoSeg's target: 255 (converted to 1) or 1; other values score as background."""
    values = read_label(path)
    return (values == 255) | (values == 1)


def _empty_mask(image_path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(image_path) as img:
        width, height = img.size
    return np.zeros((height, width), dtype=bool)


def letterbox(mask: np.ndarray, size: int = UNIGEOSEG_SIZE, *, centred: bool = True) -> np.ndarray:
    """`mask` on a `size` x `size` canvas: long side resized to `size`, the rest padding.

    Centred (the reference protocol), as UniGeoSeg's `preprocess_mask`: the short side is
    `int(short * size / long)` (truncated), nearest-neighbour resampling as OpenCV's
    INTER_NEAREST does it (source index floor(i * src / dst)), zero padding split with
    floor(pad / 2) above/left and the rest below/right.

    Not centred (the all-texts protocol, TerraMask's earlier reading): the short side is
    rounded, PIL's nearest resampling, padding right and below.

    Padding is background in both prediction and ground truth, so it adds no intersection or
    union; the canvas changes cIoU's weights (every image counts at the canvas's scale).
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    if not centred:
        return _letterbox_top_left(mask, size)
    if width > height:
        new_w, new_h = size, int(height * (size / width))
    else:
        new_h, new_w = size, int(width * (size / height))
    new_h, new_w = max(1, new_h), max(1, new_w)
    rows = np.minimum(np.floor(np.arange(new_h) * (1.0 / (new_h / height))), height - 1)
    cols = np.minimum(np.floor(np.arange(new_w) * (1.0 / (new_w / width))), width - 1)
    resized = mask[rows.astype(np.intp)[:, None], cols.astype(np.intp)[None, :]]
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.zeros((size, size), dtype=bool)
    out[top : top + new_h, left : left + new_w] = resized
    return out


def letterbox_image(image: np.ndarray, size: int = UNIGEOSEG_SIZE) -> np.ndarray:
    """An (H, W, 3) uint8 image on the centred `size` canvas, as UniGeoSeg's
    `preprocess_image` gives it to the model: the geometry of `letterbox` (short side
    truncated, padding split floor(pad / 2) above/left, zeros), resampled bilinearly as
    OpenCV's INTER_LINEAR does (half-pixel centres, no antialiasing), rounded to uint8."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    if width > height:
        new_w, new_h = size, int(height * (size / width))
    else:
        new_h, new_w = size, int(width * (size / height))
    new_h, new_w = max(1, new_h), max(1, new_w)
    pixels = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None]
    resized = F.interpolate(pixels, (new_h, new_w), mode="bilinear", align_corners=False)
    resized = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.zeros((size, size, image.shape[2]), dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = resized
    return out


def _letterbox_top_left(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    height, width = mask.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (new_w, new_h), Image.Resampling.NEAREST
    )
    out = np.zeros((size, size), dtype=bool)
    out[:new_h, :new_w] = np.asarray(resized) > 127
    return out


def _canvas_note(size: int) -> str:
    return (
        f"Shown and scored at {size}x{size}, as UniGeoSeg's evaluation does: the model sees "
        f"the image letterboxed (long side to {size}, short side truncated, bilinear; zero "
        "padding centred) and its mask is scored against the ground truth letterboxed the "
        "same way (nearest)."
    )


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
    "refs(unc).p and instances.json (COCO) in the root or in root/rrsisd/, images in "
    "images/rrsisd/JPEGImages/, images/JPEGImages/, images/ or JPEGImages/"
)


def load_rrsisd(root: Path, split: str | None, protocol: str = "reference") -> ReferringDataset:
    """RRSIS-D; group = category name.

    Reference: one sample per ref in `split` (for "test": every split containing "test"),
    the raw text of its first sentence, scored on the 512 letterbox. All-texts: one sample
    per sentence, at the image's size.
    """
    display = "RRSIS-D"
    reference = protocol == "reference"
    folder = root if (root / "refs(unc).p").is_file() else root / "rrsisd"
    if not (folder / "refs(unc).p").is_file():
        folder = root  # name the root's file in the error
    refs_file, instances = folder / "refs(unc).p", folder / "instances.json"
    refs = _read_refs(refs_file)
    coco = _read_json(instances, display, RRSISD_LAYOUT)
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
            if not _in_split(str(ref["split"]), split, reference):
                continue
            ann = annotations[ref["ann_id"]]
            info = images[ref["image_id"]]
            file_name, height, width = info["file_name"], int(info["height"]), int(info["width"])
            sentences = ref["sentences"]
            segmentation = ann["segmentation"]
        except (KeyError, TypeError) as exc:
            raise _bad_entry(
                refs_file,
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
        if not isinstance(sentences, list) or not sentences:
            raise _bad_entry(
                refs_file,
                display,
                f"ref {ref.get('ref_id')} has no sentences",
                RRSISD_LAYOUT,
            )
        for j, sentence in enumerate(sentences[:1] if reference else sentences):
            text = _sentence_text(sentence, raw_first=reference)
            if text is None:
                raise _bad_entry(
                    refs_file,
                    display,
                    f"sentence {j} of ref {ref.get('ref_id')} has no text under 'raw' or 'sent'",
                    RRSISD_LAYOUT,
                )
            samples.append(
                ReferringSample(
                    id=f"{ref.get('ref_id', len(samples))}-{j}",
                    image_path=image_path,
                    question=text,
                    mask=loader,
                    group=category,
                    target_name=category,
                )
            )
    if not samples and splits_seen and not any(_in_split(s, split, reference) for s in splits_seen):
        raise InputError(
            f"RRSIS-D's refs(unc).p in {folder} has no ref in the {split!r} split; it holds "
            f"{', '.join(sorted(splits_seen))}. Choose one of these with `split`."
        )
    return ReferringDataset(
        "rrsis-d",
        display,
        split,
        samples,
        group_name="category" if categories else None,
        score_size=REFERENCE_SIZE if reference else None,
        notes=(_canvas_note(REFERENCE_SIZE),) if reference else (),
        shown_letterboxed=reference,
    )


def _in_split(ref_split: str, split: str | None, reference: bool) -> bool:
    """REFER's `getRefIds(split="test")` takes every split containing "test" (testA, ...)."""
    if reference and split == "test":
        return "test" in ref_split
    return ref_split == split


def _sentence_text(sentence: Any, *, raw_first: bool) -> str | None:
    """A sentence's text: the reference reads "raw" as written, all-texts "sent" (stripped);
    each falls back on the other key when its own is missing or blank."""
    if isinstance(sentence, dict):
        keys = ("raw", "sent") if raw_first else ("sent", "raw")
        sentence = next(
            (sentence[k] for k in keys if isinstance(sentence.get(k), str) and sentence[k].strip()),
            None,
        )
    if not isinstance(sentence, str) or not sentence.strip():
        return None
    return sentence if raw_first else sentence.strip()


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
    "(questions and answer) under the root; splits val and test"
)


def load_earthreason(
    root: Path, split: str | None, protocol: str = "reference"
) -> ReferringDataset:
    """EarthReason, in file-name order.

    Reference: the first question of every QA file; the mask is the label (non-zero) even
    when the answer is empty (the empty answer only sets the expected reply to
    `NO_TARGET_ANSWER`; its label, when absent, reads as no target); scored on the 512
    letterbox. All-texts: one sample per question; an empty answer forces an empty mask.
    """
    display = "EarthReason"
    reference = protocol == "reference"
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
        questions, answer = _earthreason_qa(doc, qa_path, layout, raw=reference)
        image_path = images.get(stem)
        if image_path is None:
            raise _missing_file(display, folders["images"] / f"{stem}.jpg", "image", layout)
        no_answer = answer is not None and (not answer if reference else not answer.strip())
        mask: MaskSource
        if stem in labels and not (no_answer and not reference):
            mask = partial(_png_mask, labels[stem])
        elif no_answer:
            mask = partial(_empty_mask, image_path)
        else:
            raise _missing_file(display, folders["labels"] / f"{stem}.png", "label", layout)
        if reference:
            expected = NO_TARGET_ANSWER if no_answer else answer
            samples.append(
                ReferringSample(f"{stem}-0", image_path, questions[0], mask, None, expected)
            )
            continue
        for j, question in enumerate(questions):
            samples.append(ReferringSample(f"{stem}-{j}", image_path, question, mask, None, answer))
    return ReferringDataset(
        "earthreason",
        display,
        split,
        samples,
        score_size=REFERENCE_SIZE if reference else None,
        notes=(_canvas_note(REFERENCE_SIZE),) if reference else (),
        shown_letterboxed=reference,
    )


def _earthreason_qa(
    doc: Any, path: Path, layout: str, *, raw: bool = False
) -> tuple[list[str], str | None]:
    """The questions and the answer. `raw`: questions as written and the first item of an
    answer list (the reference's `answer[0]`); otherwise stripped questions and the items
    of an answer list joined."""
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
        answer = (str(answer[0]) if answer else "") if raw else " ".join(str(a) for a in answer)
    questions = questions if raw else [q.strip() for q in questions]
    return questions, None if answer is None else str(answer)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes
    }


# --- GeoSeg-Bench (GeoSeg's) -------------------------------------------------------------

GEOSEG_LAYOUT = (
    "annotations/<category>.json (a list of {id, difficulty, question, file_name}), images in "
    "images/<difficulty>/ and masks in masks/<difficulty>/<name>.png (0/255)"
)


def load_geoseg_bench(
    root: Path, split: str | None, protocol: str = "reference"
) -> ReferringDataset:
    """GeoSeg's GeoSeg-Bench: every entry of every category file; group = difficulty level.

    GeoSeg's evaluation scripts are not published, so both protocols read every entry and
    score it at the image's size.
    """
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
    '{split}.json (a list of {"img", "mask", "json"} paths relative to its folder, the json '
    "holding the instruction under 'question', 'text', 'instruction' or 'sentence') in the "
    "root, or in task folders under it (interactive/, ref/, reason/, as the Hugging Face "
    "release; each with {split}.json or {split}/{split}.json)"
)


def unigeoseg_task(path: str) -> str:
    """The task an entry belongs to by the all-texts rule, from its path: referring,
    interactive or reasoning ("/ref/", "/intera/", else reasoning; UniGeoSeg's own test)."""
    normal = "/" + str(path).replace("\\", "/").lstrip("/")
    if "/ref/" in normal:
        return "referring"
    if "/intera/" in normal:
        return "interactive"
    return "reasoning"


def unigeoseg_task_folder(*paths: str | os.PathLike) -> str | None:
    """The task stated by a folder name (`UNIGEOSEG_TASK_FOLDERS`) in `paths`, tried in order
    and each from its deepest folder up; None when no folder states one."""
    for path in paths:
        parts = str(path).replace("\\", "/").split("/")[:-1]
        for part in reversed(parts):
            task = UNIGEOSEG_TASK_FOLDERS.get(part.lower())
            if task is not None:
                return task
    return None


def _unigeoseg_listings(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(list file, folder its paths are relative to): the root's own, else its task folders'."""
    own = root / f"{split}.json"
    if own.is_file():
        return [(own, root)]
    found = []
    for name in UNIGEOSEG_TASK_FOLDERS:
        folder = root / name
        for listing in (folder / f"{split}.json", folder / split / f"{split}.json"):
            if listing.is_file():
                found.append((listing, listing.parent))
                break
    return found or [(own, root)]  # the missing root file is named in the error


def load_unigeoseg_bench(
    root: Path, split: str | None, protocol: str = "reference"
) -> ReferringDataset:
    """UniGeoSeg's benchmark; group = task.

    Reference: the first instruction of each entry, the task from a folder name, interactive
    coordinates parsed for the segmenter, target = 255 (or 1), centred 512 letterbox.
    All-texts: one sample per instruction text, task from "/ref/" and "/intera/" in the
    paths, target = non-zero, letterboxed into the top-left corner.
    """
    display = "UniGeoSeg's GeoSeg-Bench"
    reference = protocol == "reference"
    layout = UNIGEOSEG_LAYOUT.replace("{split}", str(split))
    listings = _unigeoseg_listings(root, str(split))
    samples: list[ReferringSample] = []
    untasked = 0
    for list_path, base in listings:
        prefix = "" if base == root else f"{base.relative_to(root).as_posix().replace('/', '-')}-"
        entries = _read_json(list_path, display, layout)
        if not isinstance(entries, list):
            raise _bad_entry(list_path, display, "a list of entries is needed", layout)
        for index, entry in enumerate(entries):
            try:
                img, mask, instruction = (str(entry[k]) for k in ("img", "mask", "json"))
            except (KeyError, TypeError) as exc:
                raise _bad_entry(
                    list_path, display, f"entry {index} lacks {exc!s}", layout
                ) from exc
            paths = {"image": base / img, "mask": base / mask, "instruction": base / instruction}
            for what, path in paths.items():
                if not path.is_file():
                    raise _missing_file(display, path, what, layout)
            doc = _read_json(paths["instruction"], display, layout)
            texts = _instruction_texts(doc)
            if not texts:
                raise _bad_entry(
                    paths["instruction"],
                    display,
                    f"no instruction text under any of {', '.join(INSTRUCTION_KEYS)} (nor points/"
                    "box for an interactive entry)",
                    layout,
                )
            sample_id = f"{prefix}{index}-{Path(img).stem}"
            if reference:
                task = unigeoseg_task_folder(img, mask, instruction, list_path)
                if task is None:
                    untasked += 1
                    task = "reasoning"
                interactive = task == "interactive"
                samples.append(
                    ReferringSample(
                        id=sample_id,
                        image_path=paths["image"],
                        question=texts[0],
                        mask=partial(_unigeoseg_mask, paths["mask"]),
                        group=task,
                        answer_text=_unigeoseg_reason(doc),
                        interactive=interactive,
                        coordinates=parse_interactive(texts[0]) if interactive else None,
                    )
                )
                continue
            task = _entry_task(instruction, img, mask)
            answer = doc.get("answer") if isinstance(doc, dict) else None
            for j, text in enumerate(texts):
                samples.append(
                    ReferringSample(
                        id=sample_id + (f"-{j}" if len(texts) > 1 else ""),
                        image_path=paths["image"],
                        question=text,
                        mask=partial(_png_mask, paths["mask"]),
                        group=task,
                        answer_text=None if answer is None else str(answer),
                    )
                )
    if reference:
        notes = [
            _canvas_note(UNIGEOSEG_SIZE),
            INTERACTIVE_TO_SEGMENTER,
        ]
        if untasked:
            notes.append(
                f"{untasked} entries had no task folder (interactive, intera, ref, reason) in "
                "their paths and were scored as reasoning, as UniGeoSeg's code does."
            )
    else:
        notes = [
            f"Scored at {UNIGEOSEG_SIZE}x{UNIGEOSEG_SIZE}: prediction and ground truth are "
            "letterboxed (long side resized, nearest; padded right and below)."
        ]
    return ReferringDataset(
        "unigeoseg-bench",
        display,
        split,
        samples,
        group_name="task",
        score_size=UNIGEOSEG_SIZE,
        notes=tuple(notes),
        letterbox_centred=reference,
        shown_letterboxed=reference,
    )


def _unigeoseg_reason(doc: Any) -> str | None:
    """The explanation UniGeoSeg teacher-forces: "reason"[0] ("" when empty), else "answer"."""
    if not isinstance(doc, dict):
        return None
    reason = doc.get("reason")
    if isinstance(reason, list):
        return str(reason[0]) if reason else ""
    if reason is not None:
        return str(reason)
    answer = doc.get("answer")
    return None if answer is None else str(answer)


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
