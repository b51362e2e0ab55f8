"""Multimodal LLM clients behind the `MLLM` protocol: OpenAI-compatible endpoints, local Qwen-VL."""

from terramask.models.mllm.cache import ReplyCache, default_cache_folder
from terramask.models.mllm.factory import make_mllm
from terramask.models.mllm.frames import choose_frame, guess_frame
from terramask.models.mllm.images import DEFAULT_MAX_SIDE
from terramask.models.mllm.local_client import LocalQwenVL, load_mllm
from terramask.models.mllm.openai_client import OpenAIChatMLLM, guess_convention

__all__ = [
    "DEFAULT_MAX_SIDE",
    "LocalQwenVL",
    "OpenAIChatMLLM",
    "ReplyCache",
    "choose_frame",
    "default_cache_folder",
    "guess_convention",
    "guess_frame",
    "load_mllm",
    "make_mllm",
]
