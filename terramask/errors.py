"""Errors a user can act on: each message is one plain paragraph, shown without a traceback.

Each class also inherits the built-in exception it is a kind of (as rasterio's errors do), so
callers may catch `ValueError`, `FileExistsError` or `OSError` without knowing TerraMask.

Messages name options by their Python name in backticks (`overwrite`, `Tiling.tile`,
`MLLMOptions.url`); the command line shows its own flag for each instead (`--overwrite`,
`--tile`, `--mllm-url`), so one message serves both audiences.
"""

from __future__ import annotations


class TerraMaskError(Exception):
    """Base class for failures caused by input, models or the environment, not by a bug."""


class InputError(TerraMaskError, ValueError):
    """A raster, prompt, option or vector file that cannot be used as given."""


class NothingToDo(InputError):
    """A scene that holds nothing to work on, such as no prompt inside it. Alone it is an input
    error; in a run over many scenes the scene is recorded as skipped, with this reason."""


class ModelNotFoundError(TerraMaskError, FileNotFoundError):
    """A model that is neither a local folder, in the Hugging Face cache, nor downloadable."""


class ModelLoadError(TerraMaskError, RuntimeError):
    """A model folder that exists but cannot be loaded (wrong family, corrupt files)."""


class OutputError(TerraMaskError, OSError):
    """An output that cannot be written (folder missing or read-only, disk full)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output that exists already and would be replaced without `overwrite`."""


class MLLMError(TerraMaskError, RuntimeError):
    """A multimodal LLM endpoint that failed for one item after its retries, or a reply that
    cannot be used; a batch goes on without that item."""
