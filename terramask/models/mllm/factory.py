"""Make the multimodal LLM client an `MLLMOptions` describes: an endpoint or a local Qwen-VL."""

from __future__ import annotations

from pathlib import Path

from terramask.errors import InputError
from terramask.models.mllm.images import DEFAULT_MAX_SIDE
from terramask.options import MLLMOptions
from terramask.protocols import MLLM


def make_mllm(options: MLLMOptions, *, device: str = "auto") -> MLLM:
    """An OpenAI-compatible client when `options.url` is given, else a local Qwen-VL.

    Replies are cached (keyed by image, prompt, model and settings) unless `options.cache`
    is off, so re-running a question or an evaluation costs nothing. The client's coordinate
    frame comes from `options.coords` ("auto" guesses from the model) and its image limit
    from `options.max_side` (long side in pixels; None keeps the client's 1024, or with an
    adapter, or a folder merged from one, the size it was trained at, `ClickTraining.max_side`).

    Args:
        options: The endpoint or local model and how to talk to it.
        device: Where a local model runs ("auto", "cpu", "cuda", ...).

    Returns:
        The client, behind the `MLLM` protocol.

    Raises:
        InputError: Neither an endpoint nor a model was named, or an endpoint without its
            model name.
        ModelNotFoundError, ModelLoadError: A local model that cannot be found or loaded.
    """
    from terramask.models.mllm.cache import ReplyCache

    cache = ReplyCache() if options.cache else None
    max_side = options.max_side
    merged_from = _merged_record(options.model).get("merged_from") if not options.url else None
    if options.adapter is not None and merged_from:
        raise InputError(
            f"The model {options.model} already holds the adapter "
            f"{merged_from.get('adapter')} (merged by `terramask train merge`): leave out "
            "`MLLMOptions.adapter`, or give the base model "
            f"{merged_from.get('base')} as `MLLMOptions.model`."
        )
    if max_side is None and options.adapter is not None and not options.url:
        # a tuned model is shown images at the size it was trained on
        from terramask.models.mllm.adapters import read_record

        trained = read_record(Path(options.adapter).expanduser()).get("max_side")
        max_side = trained if isinstance(trained, int) and trained >= 28 else None
    elif max_side is None and options.model and not options.url:
        # a merged model (`terramask train merge`) records the size its adapter was trained at
        max_side = _merged_max_side(options.model)
    settings = {
        "coords": options.coords,
        "max_side": DEFAULT_MAX_SIDE if max_side is None else max_side,
    }
    if options.url:
        from terramask.models.mllm.openai_client import OpenAIChatMLLM

        if options.adapter is not None:
            raise InputError(
                "`MLLMOptions.adapter` is loaded into a local model, but `MLLMOptions.url` "
                "names an endpoint; serve the merged model there (`terramask train merge`), "
                "or leave out the URL to run the base model locally with the adapter."
            )
        if not options.model:
            raise InputError(
                f"`MLLMOptions.url` {options.url} needs `MLLMOptions.model`: the model name "
                "that endpoint serves (e.g. gpt-5, or the name a vLLM/Ollama server was "
                "started with)."
            )
        return OpenAIChatMLLM(
            options.url,
            options.model,
            api_key=options.key,
            timeout_s=options.timeout,
            max_retries=options.retries,
            max_concurrency=options.concurrency,
            cache=cache,
            **settings,
        )
    if options.model:
        from terramask.models.mllm.local_client import load_mllm

        return load_mllm(options.model, device=device, cache=cache, adapter=options.adapter,
                         **settings)
    raise InputError(
        "A multimodal LLM is needed: `MLLMOptions.url` and `MLLMOptions.model` for an "
        "OpenAI-compatible endpoint (GPT-5, vLLM, SGLang, Ollama), or `MLLMOptions.model` "
        "alone (a folder or hub id) for a local Qwen2.5-VL / Qwen3-VL."
    )


def _merged_record(model: str | None) -> dict:
    """The `terramask_training.json` of a folder written by `terramask train merge` ({} for
    any other model)."""
    from terramask.models.mllm.adapters import read_record

    folder = Path(model).expanduser() if model else None
    if folder is None or not folder.is_dir():
        return {}
    record = read_record(folder)
    return record if isinstance(record.get("merged_from"), dict) else {}


def _merged_max_side(model: str) -> int | None:
    """The training image size a folder written by `terramask train merge` records, if any."""
    trained = _merged_record(model).get("max_side")
    return trained if isinstance(trained, int) and trained >= 28 else None
