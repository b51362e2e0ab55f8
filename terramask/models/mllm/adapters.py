"""LoRA adapters of `terramask train clicks`: what they were trained on, and loading them.

An adapter folder is peft's format (`adapter_config.json`, `adapter_model.safetensors`) plus
`terramask_training.json`, which records the base model (its name and a fingerprint of its
architecture and input embeddings), the coordinate frame the targets were written in and
the training settings. Loading checks the fingerprint first, so an adapter for another base
is refused in one line instead of failing deep inside peft or, worse, loading and talking
nonsense.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from terramask.errors import InputError, ModelLoadError

#: TerraMask's record of how an adapter was trained, beside peft's files.
ADAPTER_RECORD = "terramask_training.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Input-embedding values a fingerprint keeps (evenly spread over the first 256 rows).
_SAMPLED = 64
#: Relative tolerance of each of those values (bf16 on a GPU vs fp32 on a CPU: below 0.4 %).
_SAMPLE_TOLERANCE = 1e-2


def peft_module() -> Any:
    """peft, or a one-line InputError saying how to install it."""
    try:
        import peft
    except ImportError:
        raise InputError(
            "LoRA adapters need peft: install the training extra with "
            "`pip install 'terramask[training]'`."
        ) from None
    return peft


def adapter_folder(adapter: str | os.PathLike) -> Path:
    """The adapter's folder, checked to hold peft's files."""
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise InputError(
            f"The adapter {folder} is not a folder. Give `MLLMOptions.adapter` the folder "
            "`terramask train clicks` wrote (its -o)."
        )
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise InputError(
            f"The adapter folder {folder} has no {' or '.join(missing)}: it is not a finished "
            "adapter (a training still running or stopped leaves its state in checkpoints/; "
            "continue it with `--resume`)."
        )
    return folder


def read_record(folder: Path) -> dict:
    """The adapter's `terramask_training.json` ({} for an adapter from elsewhere)."""
    path = folder / ADAPTER_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"The adapter record {path} cannot be read ({exc}).") from None
    return record if isinstance(record, dict) else {}


def adapter_identity(adapter: str | os.PathLike) -> tuple[Path, str]:
    """(folder, digest): the digest of its weights and config keys the reply cache."""
    folder = adapter_folder(adapter)
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return folder.resolve(), digest.hexdigest()[:16]


def adapter_frame(folder: Path, coords: str | None, *, default: str) -> str:
    """The frame the adapter answers in (its record's), refusing a different `coords`."""
    from terramask.protocols import frame_name

    trained = read_record(folder).get("frame") or default
    asked = "auto" if coords is None else frame_name(coords)
    if asked not in ("auto", trained):
        raise InputError(
            f"The adapter {folder} was trained to answer in the '{trained}' frame, but "
            f"`MLLMOptions.coords` asks for '{asked}'; leave `MLLMOptions.coords` at auto."
        )
    return trained


def base_fingerprint(model: Any) -> dict:
    """What identifies a base model: its family, sizes, and 64 values of its input
    embeddings (spread over the first 256 rows), which differ between two checkpoints of one
    shape (even two fine-tunes, unless the embeddings were frozen)."""
    import torch

    config = model.config
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    embeddings = model.get_input_embeddings().weight
    with torch.no_grad():
        flat = embeddings[:256].detach().float().flatten().cpu()
        picked = flat[torch.linspace(0, len(flat) - 1, _SAMPLED).long()]
    return {
        "model_type": str(getattr(config, "model_type", "")),
        "hidden_size": int(getattr(text, "hidden_size", 0)),
        "layers": int(getattr(text, "num_hidden_layers", 0)),
        "vocab_size": int(getattr(text, "vocab_size", 0)),
        "vision_hidden_size": int(getattr(vision, "hidden_size", 0) or 0),
        "embedding_sample": [float(f"{v:.6g}") for v in picked.tolist()],
    }


def _same_values(recorded: Any, actual: list[float]) -> bool:
    """Whether the recorded embedding sample is this model's (within bf16 rounding)."""
    import numpy as np

    if not isinstance(recorded, list) or len(recorded) != len(actual):
        return False
    try:
        expected = np.asarray(recorded, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    scale = float(np.abs(expected).max()) if len(expected) else 0.0
    return bool(np.allclose(actual, expected, rtol=_SAMPLE_TOLERANCE, atol=1e-3 * scale))


def _describe(fingerprint: dict) -> str:
    return (f"{fingerprint.get('model_type')}, hidden {fingerprint.get('hidden_size')}, "
            f"{fingerprint.get('layers')} layers, vocabulary {fingerprint.get('vocab_size')}")


def check_base(folder: Path, model: Any, requested: str,
               field: str = "MLLMOptions.model") -> None:
    """A ModelLoadError when the adapter's record names another base than `model` (given as
    the option `field`)."""
    record = read_record(folder)
    trained = record.get("base_fingerprint")
    if not isinstance(trained, dict):
        return
    actual = base_fingerprint(model)
    shape_keys = ("model_type", "hidden_size", "layers", "vocab_size", "vision_hidden_size")
    same_shape = all(trained.get(k) == actual.get(k) for k in shape_keys)
    same_weights = _same_values(trained.get("embedding_sample"), actual["embedding_sample"])
    if same_shape and same_weights:
        return
    base = record.get("base", "?")
    why = (f"{_describe(actual)}, not {_describe(trained)}" if not same_shape
           else "the same shape but other weights")
    raise ModelLoadError(
        f"The adapter {folder} was trained on the base model '{base}', but '{requested}' "
        f"is another model ({why}). Pass the base it was trained on as `{field}`."
    )


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Without the deprecation notice transformers raises when peft asks whether a model
    checkpoints activations (it names transformers' internals, nothing a user can change)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)  # fmt: skip
        yield


def attach_adapter(model: Any, adapter: str | os.PathLike, resolved: Any,
                   field: str = "MLLMOptions.model") -> Any:
    """`model` with the adapter loaded (peft), after checking it was trained on this base
    (given as the option `field`)."""
    folder = adapter_folder(adapter)
    peft = peft_module()
    check_base(folder, model, getattr(resolved, "requested", str(resolved)), field)
    try:
        with quiet_peft():
            return peft.PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(
            f"The adapter {folder} cannot be loaded into '{resolved.requested}' "
            f"({type(exc).__name__}: {detail}). Was it trained on this base model?"
        ) from None


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_RECORD",
    "ADAPTER_WEIGHTS",
    "adapter_folder",
    "adapter_frame",
    "adapter_identity",
    "attach_adapter",
    "base_fingerprint",
    "check_base",
    "peft_module",
    "quiet_peft",
    "read_record",
]
