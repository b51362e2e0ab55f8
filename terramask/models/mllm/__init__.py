"""Multimodal LLM clients behind the `MLLM` protocol: OpenAI-compatible endpoints, local Qwen-VL."""

from terramask.models.mllm.cache import ReplyCache, default_cache_folder
from terramask.models.mllm.factory import make_mllm
from terramask.models.mllm.local_client import LocalQwenVL, load_mllm
from terramask.models.mllm.openai_client import OpenAIChatMLLM, guess_convention

__all__ = [
    "LocalQwenVL",
    "OpenAIChatMLLM",
    "ReplyCache",
    "default_cache_folder",
    "guess_convention",
    "load_mllm",
    "make_mllm",
]
