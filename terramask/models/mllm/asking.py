"""What every multimodal LLM client does the same way: refuse empty prompts, ask many items.

Each client supplies its own `ask(image, prompt, system=...)`; `ask_each` runs it over many
items (at most `workers` at once) and returns each item's reply or the error it ended in, so
one failure never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from terramask.errors import InputError, TerraMaskError
from terramask.protocols import MLLMReply

#: An `ask_many` item: (image, prompt) or (image, prompt, system).
AskItem = tuple[np.ndarray, str] | tuple[np.ndarray, str, str | None]
Ask = Callable[..., MLLMReply]


def check_prompt(prompt: str, model: str) -> None:
    """An InputError for an empty or blank prompt, naming the model it was meant for."""
    if not str(prompt).strip():
        raise InputError(
            f"An empty prompt was given for the multimodal LLM '{model}'. Ask a question or "
            "describe what to find."
        )


def ask_each(
    ask: Ask, items: Sequence[AskItem], *, workers: int = 1
) -> list[MLLMReply | TerraMaskError]:
    """`ask(image, prompt, system=system)` for every item, in order, `workers` at a time.

    Results come back in the order of `items`: an `MLLMReply`, or the `TerraMaskError` that
    item ended in (`MLLMError` for an endpoint or reply failure, `InputError` for an unusable
    image or prompt).
    """

    def one(item: AskItem) -> MLLMReply | TerraMaskError:
        image, prompt, system = (*tuple(item), None)[:3]
        try:
            return ask(image, prompt, system=system)
        except TerraMaskError as exc:
            return exc

    if not items:
        return []
    if workers <= 1 or len(items) == 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(
        max_workers=min(workers, len(items)), thread_name_prefix="terramask-mllm"
    ) as pool:
        return list(pool.map(one, items))
