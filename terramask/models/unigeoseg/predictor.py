"""UniGeoSeg as a TerraMask model: an image and an instruction in, a mask at the image's size out.

`UniGeoSeg.segment` letterboxes the image onto the 512 canvas (centred, as the released
evaluation does), builds the conversation for the task, runs the network, upsamples the
decoder's logits to the canvas, keeps foreground = logit > 0 and maps the logits back to the
image. The same object serves the `Segmenter` protocol (`embed`/`predict`/`upsample`), so
clicks and boxes reach it through `prompt` as its interactive instruction: positive clicks
(1-3) or one box, normalised by the image's size.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from terramask.errors import InputError
from terramask.methods.unigeoseg_prompts import (
    MAX_POINTS,
    PROMPT_STYLES,
    RoutedInstruction,
    interactive_instruction,
    route_instruction,
)
from terramask.models.unigeoseg.canvas import (
    Letterbox,
    canvas_to_image,
    letterbox_canvas,
    to_canvas,
)
from terramask.models.unigeoseg.model import encode_prompt
from terramask.options import UniGeoSegOptions
from terramask.protocols import ImageEmbedding, MaskPrediction


@dataclass(frozen=True)
class UniGeoSegSettings:
    """How UniGeoSeg is asked.

    Args:
        task: "interactive", "referring" or "reasoning"; None decides from the instruction
            (coordinates written the benchmark way: interactive; a question: reasoning; else
            referring).
        prompt: The conversation template: "benchmark" (the released GeoSeg-Bench and
            EarthReason one, "Please doing Reasoning Segmentation ...", used for all tasks)
            or "referring" (the released RRSIS-D one).
        explain: Also generate the model's explanation (greedy, after "Sure, It is .");
            costs up to `max_new_tokens` language-model steps.
        max_new_tokens: Longest explanation, in tokens.
    """

    task: str | None = None
    prompt: str = UniGeoSegOptions.prompt
    explain: bool = False
    max_new_tokens: int = UniGeoSegOptions.max_new_tokens

    @classmethod
    def of(cls, options: UniGeoSegOptions, *, explain: bool = True,
           prompt: str | None = None) -> UniGeoSegSettings:  # fmt: skip
        """The settings `options` (the run's) ask for; `explain` when they leave it None,
        `prompt` when they leave the template at its default."""
        if prompt is None or options.prompt != UniGeoSegOptions.prompt:
            prompt = options.prompt
        return cls(task=options.task, prompt=prompt,
                   explain=explain if options.explain is None else options.explain,
                   max_new_tokens=options.max_new_tokens)  # fmt: skip

    def __post_init__(self) -> None:
        from terramask.methods.unigeoseg_prompts import check_task, prompt_style

        if self.task is not None:
            check_task(self.task)
        prompt_style(self.prompt)
        if self.max_new_tokens < 1:
            raise InputError(
                f"`UniGeoSegSettings.max_new_tokens` must be at least 1, not "
                f"{self.max_new_tokens!r}."
            )


@dataclass
class UniGeoSegResult:
    """One answer: the mask and logits at the image's size, and how the request was read."""

    mask: np.ndarray  # (H, W) bool
    logits: np.ndarray  # (H, W) float32
    score: float  # mean foreground probability (0 when nothing was found)
    task: str
    instruction: str
    decided_by: str
    coordinates: list[list[float]] | None = None
    explanation: str | None = None
    canvas_logits: np.ndarray | None = field(default=None, repr=False)  # (S, S) float32
    low_res_logits: np.ndarray | None = field(default=None, repr=False)  # (S/4, S/4) float32

    def record(self) -> dict[str, Any]:
        """What a report keeps of the answer."""
        return {
            "task": self.task,
            "task_decided_by": self.decided_by,
            "instruction": self.instruction,
            "coordinates": self.coordinates,
            "explanation": self.explanation,
            "score": round(float(self.score), 4),
        }


@dataclass
class _Prepared:
    box: Letterbox
    pixels: torch.Tensor  # (1, 3, S, S) normalised
    levels: list[torch.Tensor]
    tokens: torch.Tensor  # (T, d)


def image_key(image: np.ndarray) -> str:
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16)
    digest.update(repr(image.shape).encode())
    return digest.hexdigest()


class UniGeoSeg:
    """A loaded UniGeoSeg model with its tokenizer (see `load_unigeoseg`)."""

    def __init__(self, model, tokenizer, *, name: str = "unigeoseg", cache_size: int = 2):
        from terramask.models.unigeoseg.checkpoint import seg_token_id

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config
        self.seg_id = seg_token_id(tokenizer)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Prepared] = OrderedDict()
        stops = {self.seg_id}
        for token in ("<|endoftext|>", tokenizer.eos_token):
            if token:
                token_id = tokenizer.convert_tokens_to_ids(token)
                if isinstance(token_id, int) and token_id >= 0:
                    stops.add(token_id)
        self.stop_ids = sorted(stops)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def canvas_size(self) -> int:
        return self.config.image_size

    # ----------------------------------------------------------------- images

    @torch.inference_mode()
    def _prepare(self, image: np.ndarray) -> _Prepared:
        image = _check_image(image)
        key = image_key(image)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        canvas, box = letterbox_canvas(image, self.canvas_size)
        raw = torch.from_numpy(canvas).permute(2, 0, 1)[None].to(self.device)
        pixels = self.model.normalize(raw)
        levels = self.model.encode_image(pixels)
        tokens = self.model.projector(levels[-1])[0]
        prepared = _Prepared(box, pixels, levels, tokens)
        self._cache[key] = prepared
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prepared

    # ----------------------------------------------------------------- asking

    def route(self, instruction: str | RoutedInstruction, task: str | None = None):
        if isinstance(instruction, RoutedInstruction):
            return instruction
        return route_instruction(instruction, task)

    @torch.inference_mode()
    def segment(
        self,
        image: np.ndarray,
        instruction: str | RoutedInstruction,
        settings: UniGeoSegSettings = UniGeoSegSettings(),
    ) -> UniGeoSegResult:
        """The mask `instruction` describes on an (H, W, 3) uint8 image.

        A `RoutedInstruction` is used as it is (its task and coordinates); a text is routed
        with `settings.task` (None: decided from the text). Interactive coordinates are
        fractions of this image's width and height.
        """
        routed = self.route(instruction, settings.task)
        prepared = self._prepare(image)
        return self._answer(prepared, [routed], settings)[0]

    def _answer(
        self, prepared: _Prepared, routed: list[RoutedInstruction], settings: UniGeoSegSettings
    ) -> list[UniGeoSegResult]:
        explanations: list[str | None] = [None] * len(routed)
        explain = settings.explain and "<answer>" in PROMPT_STYLES[settings.prompt].reply
        prompts = [
            encode_prompt(
                self.tokenizer, self.seg_id, r.text, r.task, coordinates=r.coordinates,
                style=settings.prompt, upto="answer" if explain else "refer",
            )
            for r in routed
        ]  # fmt: skip
        model = self.model
        if explain:
            states = []
            for i, prompt in enumerate(prompts):
                ids, refer_states = model.generate_text(
                    prepared.tokens, prompt, max_new_tokens=settings.max_new_tokens,
                    stop_ids=self.stop_ids,
                )  # fmt: skip
                explanations[i] = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                states.append(refer_states)
            levels = [lvl.expand(len(routed), *lvl.shape[1:]) for lvl in prepared.levels]
            masks = model.decode_masks(levels, states, [r.task for r in routed])
        else:
            levels = [lvl.expand(len(routed), *lvl.shape[1:]) for lvl in prepared.levels]
            tokens = prepared.tokens.expand(len(routed), *prepared.tokens.shape)
            masks = model(prepared.pixels, prompts, levels=levels, tokens=tokens).masks
        low = masks[-1][:, 0].float().cpu().numpy()
        canvas = to_canvas(masks[-1], self.canvas_size)[:, 0]
        image_logits = canvas_to_image(canvas, prepared.box).float().cpu().numpy()
        results = []
        for i, r in enumerate(routed):
            logits = image_logits[i].astype(np.float32)
            mask = logits > 0
            score = _mean_probability(logits[mask])
            results.append(UniGeoSegResult(
                mask=mask, logits=logits, score=score, task=r.task, instruction=r.text,
                decided_by=r.decided_by,
                coordinates=None if r.coordinates is None else np.round(r.coordinates, 4).tolist(),
                explanation=explanations[i],
                canvas_logits=canvas[i].float().cpu().numpy(), low_res_logits=low[i],
            ))  # fmt: skip
        return results

    # ------------------------------------------------------- Segmenter protocol

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Letterbox and encode an image once; prompts on it reuse the backbone's features."""
        prepared = self._prepare(image)
        return ImageEmbedding(
            image_size=(prepared.box.height, prepared.box.width), data=prepared,
            key=image_key(np.ascontiguousarray(image)),
        )  # fmt: skip

    @torch.inference_mode()
    def predict(
        self,
        embedding: ImageEmbedding,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask: bool = True,
        full_resolution: bool = True,
    ) -> MaskPrediction:
        """One mask per prompt (M = 1) from UniGeoSeg's interactive instruction: 1-3 positive
        clicks or one box per prompt, in pixels of the embedded image. `multimask` is
        ignored (UniGeoSeg gives one mask); the score is the mean foreground probability.

        Raises:
            InputError: A prompt with negative clicks, with both clicks and a box, or with
                more than three clicks, which its instructions cannot say.
        """
        prepared: _Prepared = embedding.data
        height, width = embedding.image_size
        routed = [
            _interactive(b, points, point_labels, boxes, height, width)
            for b in range(_batch_size(points, boxes))
        ]
        settings = UniGeoSegSettings(task="interactive")
        results = self._answer(prepared, routed, settings)
        low = np.stack([r.low_res_logits for r in results])[:, None]
        scores = np.array([[r.score] for r in results], dtype=np.float32)
        if not full_resolution:
            return MaskPrediction(None, None, scores, low)
        logits = np.stack([r.logits for r in results])[:, None]
        return MaskPrediction(logits > 0, logits, scores, low)

    def upsample(self, embedding: ImageEmbedding, low_res_logits: np.ndarray) -> np.ndarray:
        """(N, H, W) logits of the embedded image from (N, h, w) quarter-canvas logits."""
        prepared: _Prepared = embedding.data
        low = torch.as_tensor(np.asarray(low_res_logits, dtype=np.float32))[:, None]
        canvas = to_canvas(low, self.canvas_size)[:, 0]
        return canvas_to_image(canvas, prepared.box).numpy().astype(np.float32)


def _mean_probability(logits: np.ndarray) -> float:
    if logits.size == 0:
        return 0.0
    return float((1 / (1 + np.exp(-np.clip(logits, -50, 50)))).mean())


def _batch_size(points, boxes) -> int:
    if points is not None:
        return len(points)
    if boxes is not None:
        return len(boxes)
    raise InputError("A prompt needs clicks or a box.")


def _interactive(b, points, labels, boxes, height: int, width: int) -> RoutedInstruction:
    """Prompt `b` as UniGeoSeg's interactive instruction (coordinates normalised 0-1)."""
    clicks = np.zeros((0, 2))
    if points is not None:
        pts = np.asarray(points[b], dtype=np.float64).reshape(-1, 2)
        lab = np.asarray(labels[b]).reshape(-1) if labels is not None else np.ones(len(pts))
        if (lab == 0).any():
            raise InputError(
                "UniGeoSeg cannot take negative clicks: its interactive instruction names 1 to "
                f"{MAX_POINTS} positive clicks or one box. Leave the negative clicks out, or "
                "use a SAM segmenter for them."
            )
        clicks = pts[lab == 1]
    box = None if boxes is None else np.asarray(boxes[b], dtype=np.float64).reshape(4)
    if len(clicks) and box is not None:
        raise InputError(
            "UniGeoSeg's interactive instruction names either clicks or a box, not both: give "
            "one object its clicks or its box."
        )
    scale = np.array([width, height], dtype=np.float64)
    if box is not None:
        unit = np.clip(box.reshape(2, 2) / scale, 0, 1).reshape(4)
        return interactive_instruction(box=unit)
    return interactive_instruction(points=np.clip(clicks / scale, 0, 1))


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"UniGeoSeg takes an (H, W, 3) uint8 RGB image, not {image.shape} {image.dtype}."
        )
    return image
