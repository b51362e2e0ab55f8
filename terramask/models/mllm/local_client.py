"""Runs Qwen2.5-VL / Qwen3-VL locally through transformers, behind the `MLLM` protocol.

The inputs are assembled here from the tokenizer, its chat template and the image processor
rather than through `AutoProcessor`, because the Qwen-VL processors insist on a video
processor that needs torchvision, which TerraMask does not depend on. What the processor
would do for one image is small: expand the template's single `<|image_pad|>` into one token
per merged patch and mark those tokens for the model's multimodal rotary positions.

The image is given at its native resolution, shrunk first only when its long side exceeds
`max_side` (1024 by default; `MLLMOptions.max_side`); Qwen's own processor then rounds it to
multiples of 28 (2.5) or 32 (3) within its pixel budget. The size the model saw is read from
the processor's output (`image_grid_thw` × patch size), and `shown_size(image_size)` tells a
caller that size before asking, so the prompt can state it: Qwen2.5-VL's pixel coordinates
refer to that resized image. The coordinate frame follows the family (Qwen2.5-VL "pixel",
Qwen3-VL "norm1000", see `terramask.models.mllm.frames`) unless `coords=` names one.

Decoding is greedy and stops after `max_new_tokens` (256 by default); only the new tokens are
decoded, so a reply is at most that many tokens long whatever the model says.

A LoRA adapter that `terramask train clicks` wrote (`adapter=`, `MLLMOptions.adapter`) is
loaded into the base model through peft; its folder records the base it was trained on
(`terramask_training.json`), and an adapter for another base is refused. The inputs a
question becomes (`QwenInputs`) are the ones training builds, so a tuned model is asked
exactly as it was taught.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terramask.errors import InputError, MLLMError, ModelLoadError, TerraMaskError
from terramask.models.device import choose_device, choose_dtype
from terramask.models.loader import load_once
from terramask.models.mllm.asking import AskItem, ask_each, check_prompt
from terramask.models.mllm.cache import ReplyCache, cached
from terramask.models.mllm.frames import FAMILY_FRAME, choose_frame
from terramask.models.mllm.images import (
    DEFAULT_MAX_SIDE,
    as_rgb,
    fit_long_side,
    fitted_size,
    image_digest,
)
from terramask.models.registry import ResolvedModel, resolve_model
from terramask.protocols import MLLMReply

_IMAGE_PAD = "<|image_pad|>"


def qwen_model_class(resolved: ResolvedModel) -> Any:
    """The transformers class of a Qwen-VL folder; a ModelLoadError for other families."""
    if resolved.family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration as model_class
    elif resolved.family == "qwen3_vl":
        from transformers import Qwen3VLForConditionalGeneration as model_class
    else:
        raise ModelLoadError(
            f"The model '{resolved.requested}' at {resolved.path} is a '{resolved.family}' "
            "model, but the local multimodal LLM runs only Qwen2.5-VL and Qwen3-VL. Pass "
            "one of those (e.g. Qwen/Qwen2.5-VL-7B-Instruct), or serve another model "
            "behind an OpenAI-compatible endpoint (`MLLMOptions.url`)."
        )
    return model_class


class QwenInputs:
    """Turns (image, prompt[, answer]) into a Qwen-VL model's inputs, as its processor would.

    The one place questions are encoded: asking (`LocalQwenVL`) and click training
    (`terramask.train`) share it, so a tuned model sees exactly what it was taught on.
    """

    def __init__(self, resolved: ResolvedModel, image_token_id: int) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        self.image_processor = AutoImageProcessor.from_pretrained(resolved.path)
        self.chat_template = _chat_template(resolved, self.tokenizer)
        self.image_token_id = int(image_token_id)
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id) or _IMAGE_PAD
        self.name = resolved.requested

    def processed(self, image: np.ndarray) -> tuple[Any, tuple[int, int]]:
        """The image processor's output for one image and the (H, W) the model sees."""
        vision = self.image_processor(images=[image], return_tensors="pt")
        grid = vision["image_grid_thw"][0]
        patch = int(getattr(self.image_processor, "patch_size", 14))
        return vision, (int(grid[1]) * patch, int(grid[2]) * patch)

    def _messages(self, prompt: str, system: str | None) -> list[dict]:
        messages: list[dict] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": prompt}]})
        return messages

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, add_generation_prompt=generation_prompt,
            tokenize=False)

    def answer_text(self, prompt: str, answer: str, system: str | None = None) -> str:
        """What follows the generation prompt when the assistant answers `answer`: the
        template's own rendering of the turn (up to and including its end token), else the
        answer and the tokenizer's end-of-sequence token."""
        messages = self._messages(prompt, system)
        head = self._render(messages, True)
        try:
            full = self._render([*messages, {"role": "assistant", "content": answer}], False)
        except Exception:  # a template that cannot render an assistant turn
            full = ""
        eos = self.tokenizer.eos_token or ""
        if full.startswith(head) and answer in full[len(head):]:
            tail = full[len(head):]
            end = tail.find(eos, tail.find(answer) + len(answer)) if eos else -1
            return tail[: end + len(eos)] if end >= 0 else tail
        return answer + eos

    def encode(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        system: str | None = None,
        answer: str | None = None,
    ) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        """(inputs, shown size): `input_ids`, `attention_mask`, `mm_token_type_ids`,
        `pixel_values`, `image_grid_thw` for one image already fitted to the client's
        `max_side`, plus `labels` (-100 except on the answer's tokens) when `answer` is given.
        Tensors are on the CPU."""
        text = self._render(self._messages(prompt, system), True)
        vision, shown = self.processed(image)
        grid = vision["image_grid_thw"][0]
        merge = int(getattr(self.image_processor, "merge_size", 2))
        if text.count(self.image_token) != 1:
            raise MLLMError(
                f"The chat template of the local multimodal LLM '{self.name}' did not place "
                f"exactly one image token ({self.image_token}) in the prompt, so the image "
                "cannot be shown. Use the model's own chat_template files."
            )
        text = text.replace(self.image_token, self.image_token * (int(grid.prod()) // merge**2))
        encoded = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        input_ids = encoded["input_ids"]
        attention = encoded["attention_mask"]
        inputs = {}
        if answer is not None:
            tail = self.tokenizer([self.answer_text(prompt, answer, system)],
                                  return_tensors="pt", add_special_tokens=False)["input_ids"]
            inputs["labels"] = torch.cat(
                [torch.full_like(input_ids, -100), tail], dim=1)
            input_ids = torch.cat([input_ids, tail], dim=1)
            attention = torch.ones_like(input_ids)
        inputs.update({
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
        })
        return inputs, shown


class _QwenWeights:
    """The model, tokenizer and image processor of one folder (and adapter), loaded once per
    process."""

    def __init__(self, resolved: ResolvedModel, device: torch.device, dtype: torch.dtype,
                 adapter: Path | None = None):
        model_class = qwen_model_class(resolved)
        model = model_class.from_pretrained(resolved.path, dtype=dtype)
        if adapter is not None:
            from terramask.models.mllm.adapters import attach_adapter

            model = attach_adapter(model, adapter, resolved)
        self.model = model.to(device).eval()
        self.inputs = QwenInputs(resolved, int(self.model.config.image_token_id))
        self.tokenizer = self.inputs.tokenizer
        self.image_processor = self.inputs.image_processor
        self.chat_template = self.inputs.chat_template
        self.image_token_id = self.inputs.image_token_id
        self.image_token = self.inputs.image_token
        self.device = device
        self.lock = threading.Lock()


def _chat_template(resolved: ResolvedModel, tokenizer: Any) -> str:
    """The processor's template (chat_template.jinja / .json), else the tokenizer's."""
    folder = Path(resolved.path)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        try:
            template = json.loads((folder / "chat_template.json").read_text(encoding="utf-8"))
            if isinstance(template.get("chat_template"), str):
                return template["chat_template"]
        except (OSError, ValueError, AttributeError):
            pass
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        return tokenizer.chat_template
    raise ModelLoadError(
        f"The model '{resolved.requested}' at {resolved.path} has no chat template "
        "(chat_template.jinja, chat_template.json or one in tokenizer_config.json), so it "
        "cannot be prompted. Download the complete model folder, including those files."
    )


class LocalQwenVL:
    """A local Qwen-VL `MLLM`: greedy decoding, one image per question."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_side: int = DEFAULT_MAX_SIDE,
        max_new_tokens: int = 256,
        coords: str | None = "auto",
        cache: ReplyCache | None = None,
        adapter: str | Path | None = None,
    ) -> None:
        """Loads the weights (once per folder, adapter, device and dtype in a process).

        `max_side` is the longest side, in pixels, of the image given to the model
        (`MLLMOptions.max_side`): a smaller image goes at its native resolution (then Qwen's
        processor rounds it to its patch grid). `coords` is the coordinate frame the model is
        asked to answer in: "auto" (Qwen2.5-VL pixel, Qwen3-VL norm1000; with an adapter,
        the frame it was trained in), "pixel", "norm1000" or "norm1" (`MLLMOptions.coords`).
        `adapter` is a LoRA adapter folder of `terramask train clicks` (`MLLMOptions.adapter`),
        refused when it was trained on another base model or in another frame than `coords`."""
        if int(max_side) < 28 or int(max_new_tokens) < 1:
            raise InputError(
                f"The local multimodal LLM '{resolved.requested}' got max_side={max_side} and "
                f"max_new_tokens={max_new_tokens}; use max_side ≥ 28 and max_new_tokens ≥ 1."
            )
        self.resolved = resolved
        self.name = resolved.requested
        guess = FAMILY_FRAME.get(resolved.family, "pixel")
        self.adapter: Path | None = None
        self._adapter_digest = ""
        if adapter is not None:
            from terramask.models.mllm.adapters import adapter_frame, adapter_identity

            self.adapter, self._adapter_digest = adapter_identity(adapter)
            guess = adapter_frame(self.adapter, coords, default=guess)
            self.name = f"{resolved.requested}+{self.adapter.name}"
        self.frame = choose_frame(coords, guess=guess, model=resolved.requested)
        self.max_side = int(max_side)
        self.max_new_tokens = int(max_new_tokens)
        self.cache = cache
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        dev = choose_device(device)
        self._dtype = choose_dtype(dev, dtype)
        kind = "mllm" if self.adapter is None else f"mllm+adapter:{self._adapter_digest}"
        self._weights: _QwenWeights = load_once(
            kind, resolved, dev, self._dtype,
            lambda d, t: _QwenWeights(resolved, d, t, self.adapter))

    @property
    def convention(self) -> str:
        """The frame under its former name (read-only)."""
        return self.frame

    def shown_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) the model will see an image of `image_size` (H, W) at: shrunk to
        `max_side`, then rounded by Qwen's processor to its patch grid. Pixel coordinates in
        the reply refer to this size; the prompt should state it."""
        fitted = fitted_size(image_size, self.max_side)
        if fitted not in self._sizes:
            blank = np.zeros((*fitted, 3), dtype=np.uint8)
            self._sizes[fitted] = self._processed(blank)[1]
        return self._sizes[fitted]

    def ask(self, image: np.ndarray, prompt: str, *, system: str | None = None) -> MLLMReply:
        """Show the image with the prompt and decode greedily; MLLMError if generation fails.

        The reply carries the size the model saw (`shown_size`) and this client's frame."""
        check_prompt(prompt, self.name)
        resized = fit_long_side(as_rgb(image), self.max_side)

        def compute() -> MLLMReply:
            try:
                text, shown = self._generate(resized, prompt, system)
            except TerraMaskError:
                raise
            except Exception as exc:
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise MLLMError(
                    f"The local multimodal LLM '{self.name}' ({self.resolved.path}) failed while "
                    f"answering ({type(exc).__name__}: {detail}). If memory ran out, show "
                    "smaller images (`AskOptions.overview_size`) or use a smaller model "
                    "(`MLLMOptions.model`); otherwise re-download the model folder."
                ) from None
            return MLLMReply(text=text, shown_size=shown, frame=self.frame, model=self.name)

        fields = dict(
            image_digest=image_digest(resized), prompt=prompt, system=system,
            model=f"local:{self.resolved.path}"
            + (f"+adapter:{self._adapter_digest}" if self.adapter else ""),
            temperature=0.0, max_side=self.max_side,
            frame=self.frame, extra=f"greedy:{self.max_new_tokens}",
        )
        return cached(self.cache, fields, compute)

    def ask_many(self, items: Sequence[AskItem]) -> list[MLLMReply | TerraMaskError]:
        """Ask one after another (one GPU); each item's failure is returned, not raised."""
        return ask_each(self.ask, items)

    def _processed(self, image: np.ndarray) -> tuple[Any, tuple[int, int]]:
        """The image processor's output for one image and the (H, W) the model sees."""
        return self._weights.inputs.processed(image)

    def _generate(self, image: np.ndarray, prompt: str,
                  system: str | None) -> tuple[str, tuple[int, int]]:
        weights = self._weights
        encoded, shown = weights.inputs.encode(image, prompt, system=system)
        inputs = {key: value.to(weights.device) for key, value in encoded.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        input_ids = inputs["input_ids"]
        with weights.lock, torch.inference_mode():
            output = weights.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                            do_sample=False)
        new_tokens = output[0, input_ids.shape[1]:]
        return weights.tokenizer.decode(new_tokens, skip_special_tokens=True), shown

    def __repr__(self) -> str:
        return f"LocalQwenVL({self.name!r}, frame={self.frame!r}, max_side={self.max_side})"


def load_mllm(
    id_or_path: str,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    max_side: int = DEFAULT_MAX_SIDE,
    max_new_tokens: int = 256,
    coords: str | None = "auto",
    cache: ReplyCache | None = None,
    adapter: str | Path | None = None,
) -> LocalQwenVL:
    """A local Qwen-VL `MLLM` from an alias (qwen2.5-vl-7b, qwen3-vl), hub id or folder;
    `max_side`, `coords` and `adapter` (a LoRA folder of `terramask train clicks`) as in
    `LocalQwenVL`."""
    resolved = resolve_model(id_or_path, kind="mllm")
    return LocalQwenVL(resolved, device=device, dtype=dtype, max_side=max_side,
                       max_new_tokens=max_new_tokens, coords=coords, cache=cache,
                       adapter=adapter)
