"""Errors a user can act on: each message is one plain paragraph, shown without a traceback."""

from __future__ import annotations


class TerraMaskError(Exception):
    """Base class for failures caused by input, models or the environment, not by a bug."""


class InputError(TerraMaskError):
    """A raster, prompt, option or vector file that cannot be used as given."""


class NothingToDo(InputError):
    """A scene that holds nothing to work on, such as no prompt inside it. Alone it is an input
    error; in a run over many scenes the scene is recorded as skipped, with this reason."""


class ModelNotFoundError(TerraMaskError):
    """A model that is neither a local folder, in the Hugging Face cache, nor downloadable."""


class ModelLoadError(TerraMaskError):
    """A model folder that exists but cannot be loaded (wrong family, corrupt files)."""


class OutputError(TerraMaskError):
    """An output that exists already (without --overwrite) or cannot be written."""


class NotImplementedYet(TerraMaskError):
    """A command whose method lands in a later release."""


class MLLMError(TerraMaskError):
    """A multimodal LLM endpoint that failed for one item after its retries, or a reply that
    cannot be used; a batch goes on without that item."""
