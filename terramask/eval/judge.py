"""GeoSeg-Bench's judged scores: an MLLM rates a predicted mask against the ground truth, 1-5.

GeoSeg's evaluation server (Tankowa/GeoSeg, `qwen_api_server.py`, `/evaluate`; specs/geoseg.md
§8) shows a judge MLLM (Qwen3-VL-32B/8B in the paper) one overlay of the image, the ground
truth and the prediction, with the target's class name and the image size, and asks for four
integer scores from 1 to 5. This module does the same with any `terramask.protocols.MLLM`:

- Overlay (`judge_overlay`), as the reference computes it, channel by channel: inside the
  ground truth the green channel moves halfway to 255; then inside the prediction the red
  channel moves halfway to 255 (the other channels keep the image); values are truncated
  to uint8. Agreement therefore looks yellowish.
- Faithfulness (the right class, no confusion with look-alikes), localization (edges follow
  the ground truth, no rounded corners or spill-over) and robustness (unaffected by clouds,
  shadows, seasons, similar textures) are the judge's.
- Overlap is computed, not judged: the mask IoU binned <0.2 → 1, <0.4 → 2, <0.6 → 3,
  <0.8 → 4, else 5 (`overlap_score`). The IoU and its bin are written into the prompt. As in
  the reference, an empty union (both masks empty) has IoU 0 here, so overlap 1; the
  judge's own overlap is only kept in the record.
- Reading the reply (`parse_score`): the first digit 1-5 after the metric's name and a ":"
  or "=" (so "4.5" reads 4, as the reference's patterns do), else a number after the quoted
  name, rounded (half to even) and clamped to 1-5; anything else scores 3.
- A judge call that fails (`MLLMError`) leaves the sample unjudged: it is counted and left out
  of the averages.

The class name is the data set's object class where it names one (RRSIS-D's category),
otherwise the question (GeoSeg's caller of `/evaluate` is not published).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from terramask.errors import MLLMError
from terramask.protocols import MLLM

#: The judged scores, in report order; "overlap" is computed from the IoU.
JUDGE_SCORES: tuple[str, ...] = ("faithfulness", "localization", "robustness", "overlap")

#: Upper IoU bounds of overlap scores 1-4; at or above the last bound the score is 5.
OVERLAP_BINS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

#: The score given when the reply does not state one.
UNPARSED_SCORE = 3


def overlay_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """The judge's IoU: |P ∩ G| / |P ∪ G|, and 0 when both are empty (GeoSeg's `compute_iou`)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    union = int(np.count_nonzero(pred | gt))
    return 0.0 if union == 0 else int(np.count_nonzero(pred & gt)) / union


def overlap_score(iou: float) -> int:
    """IoU binned to 1-5: <0.2 → 1, <0.4 → 2, <0.6 → 3, <0.8 → 4, else 5."""
    for score, bound in enumerate(OVERLAP_BINS, start=1):
        if iou < bound:
            return score
    return len(OVERLAP_BINS) + 1


def judge_overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The (H, W, 3) uint8 picture the judge sees: ground truth green, prediction red."""
    out = np.asarray(image, dtype=np.float64)[:, :, :3].copy()
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    out[gt, 1] = 0.5 * 255 + 0.5 * out[gt, 1]
    out[pred, 0] = 0.5 * 255 + 0.5 * out[pred, 0]
    return np.clip(out, 0, 255).astype(np.uint8)


def judge_prompt(class_name: str, width: int, height: int, iou: float) -> str:
    """What the judge is asked: the legend, the four aspects and their 1-5 scales, the IoU."""
    overlap = overlap_score(iou)
    return (
        "You are an expert in remote sensing image analysis. Rate how well a predicted mask "
        f"segments the {class_name} in this remote sensing image.\n\n"
        "In the picture, the image is overlaid with the ground-truth mask in green and the "
        "predicted mask in red; where both agree the colour turns yellowish.\n"
        f"Image size: {width} x {height} pixels. Class: {class_name}.\n\n"
        "Give an integer score from 1 (very poor) to 5 (excellent) for each aspect:\n"
        f"1. faithfulness: does the prediction identify the {class_name} itself, without "
        "confusing it with other classes?\n"
        "2. localization: do the predicted edges follow the ground truth's, without rounded "
        "corners or spill-over?\n"
        "3. robustness: is the prediction unaffected by clouds, shadows, seasonal changes or "
        "similar-looking textures?\n"
        "4. overlap: the pixel IoU of prediction and ground truth (5: IoU >= 0.8, 4: 0.6-0.8, "
        "3: 0.4-0.6, 2: 0.2-0.4, 1: below 0.2).\n\n"
        f"The measured IoU is {iou:.4f}, which is an overlap score of {overlap}.\n\n"
        "Answer with only a JSON object: "
        '{"faithfulness": <1-5>, "localization": <1-5>, "robustness": <1-5>, '
        '"overlap": <1-5>}'
    )


def parse_score(reply: str, name: str) -> int:
    """The 1-5 score the reply gives `name` (see the module notes); 3 when it gives none."""
    key = re.escape(name)
    digit = re.search(rf'"?{key}"?\s*[:=]\s*([1-5])', reply, re.IGNORECASE)
    if digit:
        return int(digit.group(1))
    number = re.search(rf'"{key}"\s*:\s*([0-9.]+)', reply, re.IGNORECASE)
    if number:
        try:
            return int(max(1, min(5, round(float(number.group(1))))))
        except ValueError:
            pass
    return UNPARSED_SCORE


@dataclass(frozen=True)
class Judgement:
    """One sample's judged scores (1-5), the IoU they were given and the judge's overlap."""

    faithfulness: int
    localization: int
    robustness: int
    overlap: int
    iou: float
    judge_overlap: int

    def scores(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in JUDGE_SCORES}


def judge_sample(
    judge: MLLM, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, class_name: str
) -> Judgement:
    """Ask `judge` to rate `pred` against `gt` on `image`; raises MLLMError if it fails."""
    height, width = image.shape[:2]
    iou = overlay_iou(pred, gt)
    reply = judge.ask(judge_overlay(image, gt, pred), judge_prompt(class_name, width, height, iou))
    text = reply.text or ""
    return Judgement(
        faithfulness=parse_score(text, "faithfulness"),
        localization=parse_score(text, "localization"),
        robustness=parse_score(text, "robustness"),
        overlap=overlap_score(iou),
        iou=iou,
        judge_overlap=parse_score(text, "overlap"),
    )


@dataclass
class _JudgeTally:
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(JUDGE_SCORES, 0.0))
    judged: int = 0
    failed: int = 0

    def result(self) -> dict:
        out: dict = {"judged": self.judged, "failed": self.failed}
        for name in JUDGE_SCORES:
            out[name] = round(self.sums[name] / self.judged, 2) if self.judged else None
        return out


class JudgeScores:
    """Averages of the judged scores (1-5, 2 decimals), overall and by group."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._overall = _JudgeTally()
        self._groups: dict[str, _JudgeTally] = {}

    def _tallies(self, group: str | None) -> Iterable[_JudgeTally]:
        yield self._overall
        if group is not None:
            yield self._groups.setdefault(group, _JudgeTally())

    def add(self, judgement: Judgement | None, group: str | None = None) -> None:
        """One sample's judgement, or None when the judge failed on it."""
        for tally in self._tallies(group):
            if judgement is None:
                tally.failed += 1
                continue
            tally.judged += 1
            for name, value in judgement.scores().items():
                tally.sums[name] += value

    def result(self) -> dict:
        """{"model", "judged", "failed", <score>: mean, "groups": {name: {...}}}."""
        return {
            "model": self.model,
            **self._overall.result(),
            "groups": {name: t.result() for name, t in sorted(self._groups.items())},
        }


def try_judge(
    judge: MLLM, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, class_name: str
) -> tuple[Judgement | None, str | None]:
    """(judgement, None), or (None, reason) when the judge's endpoint failed."""
    try:
        return judge_sample(judge, image, gt, pred, class_name), None
    except MLLMError as exc:
        return None, f"{type(exc).__name__}: {exc}"
