"""Synthesises click prompts from a ground-truth mask, with a frozen segmenter in the loop.

The procedure (docs/clicks.md; Sosa et al. §4 as specs/sosa.md reports it, filled in with
RITM's evaluation clicker, `isegm/inference/clicker.py`, where the paper is silent):

1. The first click is positive, at the pixel of the mask farthest from its boundary: the
   argmax of the Euclidean distance transform of the mask padded by one background pixel, so
   that the image border counts as boundary.
2. The segmenter is run with all clicks so far (one prompt; three candidates and the best
   predicted IoU for a single click, one mask for two or more, as `PointBoxPrompt` decides).
3. False negatives (target the mask misses) and false positives (mask outside the target)
   get the same padded distance transform, pixels already clicked set to 0. When the
   false-negative maximum is strictly larger the next click is positive there, otherwise
   negative at the false-positive maximum (equal depths: negative, as RITM's `is_positive =
   fn_max_dist > fp_max_dist`).
4. Repeat from 2 until `clicks` clicks (6, the paper's best), or stop early when both error
   regions are empty (the mask equals the target).

Ties between pixels of equal depth go to the first in row-major order: the topmost row, then
the leftmost column (`np.argmax` over the flattened map, as RITM's `np.where(...)[0]`).
Clicks are pixel indices: x the column, y the row, SAM's convention for a pixel's centre.

`format_clicks` writes clicks as the one text the click engine's prompt asks for and its
parser reads (`terramask.methods.replies.clicks_prompt` / `parse_reply`):
`{"points": [[x, y], ...], "labels": [1, 0, ...]}` in one coordinate frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from terramask.errors import InputError
from terramask.methods.interactive import PointBoxPrompt, pad_points
from terramask.options import COORDINATE_FRAMES, ClickSynthesis, check_choice
from terramask.protocols import ImageEmbedding, Segmenter

#: The answer for "the target is not in the image", as the clicks prompt asks for it.
NO_TARGET_CLICKS = '{"points": [], "labels": []}'
#: The default settings (six clicks, pixel frame).
DEFAULT_SYNTHESIS = ClickSynthesis()


@dataclass(frozen=True)
class ClickTrace:
    """The clicks synthesised for one mask and how the segmenter's mask improved.

    points: float64 (N, 2) x, y pixel indices (column, row), in click order
    labels: int64   (N,)   1 positive, 0 negative
    ious:   IoU of the segmenter's mask with the target after each click (a NoC curve)
    stopped_early: the mask equalled the target before `ClickSynthesis.clicks` clicks
    """

    points: np.ndarray
    labels: np.ndarray
    ious: list[float]
    stopped_early: bool

    def to_dict(self) -> dict:
        return {
            "points": [[int(x), int(y)] for x, y in self.points],
            "labels": [int(v) for v in self.labels],
            "ious": [round(float(v), 6) for v in self.ious],
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClickTrace:
        return cls(
            points=np.asarray(data["points"], dtype=np.float64).reshape(-1, 2),
            labels=np.asarray(data["labels"], dtype=np.int64),
            ious=[float(v) for v in data["ious"]],
            stopped_early=bool(data["stopped_early"]),
        )


def depth_map(region: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel outside `region`, the image
    border counting as outside (the region padded by one background pixel)."""
    padded = np.pad(np.asarray(region, dtype=bool), 1)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def deepest(depth: np.ndarray) -> tuple[int, int, float]:
    """(x, y, depth) of the deepest pixel; ties to the first in row-major order."""
    index = int(np.argmax(depth))
    row, col = divmod(index, depth.shape[1])
    return col, row, float(depth[row, col])


def next_click(
    target: np.ndarray, predicted: np.ndarray, clicked: np.ndarray | None = None
) -> tuple[int, int, int] | None:
    """The next click (x, y, label) for a mask `predicted` of `target`, or None when both
    error regions are empty (or hold only pixels already `clicked`)."""
    fn_depth = depth_map(target & ~predicted)
    fp_depth = depth_map(predicted & ~target)
    if clicked is not None:
        fn_depth[clicked] = 0.0
        fp_depth[clicked] = 0.0
    fx, fy, fn_max = deepest(fn_depth)
    px, py, fp_max = deepest(fp_depth)
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    if fn_max > fp_max:
        return fx, fy, 1
    return px, py, 0


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union; 1.0 when both are empty."""
    union = np.count_nonzero(predicted | target)
    return 1.0 if union == 0 else float(np.count_nonzero(predicted & target) / union)


def check_mask(
    mask: np.ndarray, image_shape: tuple[int, ...], what: str = "the mask"
) -> np.ndarray:
    """The mask as (H, W) bool, refused when empty or of another size than the image."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"{what[0].upper()}{what[1:]} has shape {mask.shape}, not (H, W).")
    if mask.shape != tuple(image_shape[:2]):
        raise InputError(
            f"{what[0].upper()}{what[1:]} is {mask.shape[1]} x {mask.shape[0]} pixels but its "
            f"image is {image_shape[1]} x {image_shape[0]}: masks must match their images."
        )
    mask = mask.astype(bool)
    if not mask.any():
        raise InputError(
            f"{what[0].upper()}{what[1:]} is empty (no target pixel), so no click can be "
            "placed: leave it out, or check which value marks the target."
        )
    return mask


def synthesize_clicks(
    segmenter: Segmenter,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    settings: ClickSynthesis = DEFAULT_SYNTHESIS,
    embedding: ImageEmbedding | None = None,
) -> ClickTrace:
    """Clicks for `mask` on `image` by simulated interactive segmentation (module notes).

    Args:
        segmenter: The frozen segmenter in the loop (SAM family).
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) target, non-zero (True) on the object.
        settings: How many clicks (`ClickSynthesis.clicks`).
        embedding: The image already embedded by `segmenter` (embedded here otherwise).

    Raises:
        InputError: The mask is empty or not the image's size.
    """
    target = check_mask(mask, np.asarray(image).shape)
    if embedding is None:
        embedding = segmenter.embed(image)
    clicked = np.zeros_like(target)
    x, y, _ = deepest(depth_map(target))
    points: list[tuple[int, int]] = [(x, y)]
    labels: list[int] = [1]
    ious: list[float] = []
    stopped = False
    while True:
        clicked[points[-1][1], points[-1][0]] = True
        predicted = _segment(segmenter, embedding, points, labels)
        ious.append(mask_iou(predicted, target))
        if len(points) >= settings.clicks:
            break
        click = next_click(target, predicted, clicked)
        if click is None:
            stopped = True
            break
        points.append(click[:2])
        labels.append(click[2])
    return ClickTrace(
        points=np.asarray(points, dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.int64),
        ious=ious,
        stopped_early=stopped,
    )


def _segment(
    segmenter: Segmenter, embedding: ImageEmbedding, points: list, labels: list
) -> np.ndarray:
    """The segmenter's mask for all clicks so far, as one prompt (best candidate of three
    for a single click)."""
    prompt = PointBoxPrompt(np.asarray(points, np.float64), np.asarray(labels, np.int64))
    batch_points, batch_labels = pad_points([prompt])
    prediction = segmenter.predict(
        embedding, points=batch_points, point_labels=batch_labels,
        multimask=prompt.wants_multimask,
    )  # fmt: skip
    best = int(np.argmax(prediction.iou_scores[0]))
    return np.asarray(prediction.masks[0, best], dtype=bool)


# ---------------------------------------------------------------------------- the text


def format_clicks(
    points: np.ndarray,
    labels: np.ndarray,
    image_size: tuple[int, int],
    *,
    frame: str = "pixel",
    shown_size: tuple[int, int] | None = None,
) -> str:
    """Clicks as the click engine's answer: `{"points": [[x, y], ...], "labels": [1, 0]}`.

    Args:
        points: (N, 2) x, y in pixels of the image (column, row).
        labels: (N,) 1 positive, 0 negative.
        image_size: (H, W) of that image.
        frame: "pixel" (pixels of the image as the model is shown it, whole numbers),
            "norm1000" (whole numbers 0-1000) or "norm1" (0-1, four decimals).
        shown_size: (H, W) the model is shown the image at ("pixel" frame); None: the
            image's own size.

    No clicks give the "not in the image" answer, `NO_TARGET_CLICKS`. `parse_reply` reads the
    text back to within half a unit of the frame.
    """
    check_choice(frame, COORDINATE_FRAMES, "ClickSynthesis.frame")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return NO_TARGET_CLICKS
    height, width = int(image_size[0]), int(image_size[1])
    if frame == "pixel":
        shown_h, shown_w = shown_size if shown_size is not None else (height, width)
        scale_x, scale_y = shown_w / width, shown_h / height
    elif frame == "norm1000":
        scale_x, scale_y = 1000 / width, 1000 / height
    else:
        scale_x, scale_y = 1 / width, 1 / height
    written = []
    for x, y in points:
        fx, fy = x * scale_x, y * scale_y
        if frame == "norm1":
            written.append([round(fx, 4), round(fy, 4)])
        else:
            written.append([round(fx), round(fy)])
    return json.dumps({"points": written, "labels": [int(v) for v in labels]})


__all__ = [
    "DEFAULT_SYNTHESIS",
    "NO_TARGET_CLICKS",
    "ClickTrace",
    "check_mask",
    "deepest",
    "depth_map",
    "format_clicks",
    "mask_iou",
    "next_click",
    "synthesize_clicks",
]
