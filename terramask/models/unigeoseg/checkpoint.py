"""Reading and writing UniGeoSeg checkpoint folders in the released layout.

A folder holds config.json (`model_type` llava_phi), the weights under the released key
names (model.safetensors, sharded safetensors with an index, or pytorch_model*.bin) and the
tokenizer. Weights are mapped onto `UniGeoSegModel` through the explicit key table
(`keys.convert_released`); any missing, unexpected or mis-shaped weight stops the load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from terramask.errors import ModelLoadError
from terramask.models.unigeoseg.config import UniGeoSegConfig
from terramask.models.unigeoseg.keys import KeyReport, convert_released, to_released

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)  # fmt: skip


def read_config(folder: Path) -> UniGeoSegConfig:
    """The model's configuration from `folder`/config.json."""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"The UniGeoSeg folder {folder} has no readable config.json ({exc}). Point "
            "`ModelOptions.unigeoseg` at a complete copy of nishuo1999/UniGeoSeg."
        ) from None
    return UniGeoSegConfig.from_checkpoint(raw, str(path))


def weight_files(folder: Path) -> list[Path]:
    """The weight files of `folder`, shards in their index's order."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            index = json.loads(path.read_text(encoding="utf-8"))
            shards = sorted(set(index.get("weight_map", {}).values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ModelLoadError(
                    f"The UniGeoSeg folder {folder} is incomplete: its {name} lists "
                    f"{', '.join(missing)}, which are not there. Download the checkpoint again "
                    "(`terramask models pull unigeoseg`)."
                )
            return [folder / s for s in shards]
        return [path]
    raise ModelLoadError(
        f"The UniGeoSeg folder {folder} holds no weights ({' or '.join(WEIGHT_FILES)}). "
        "Download the checkpoint again (`terramask models pull unigeoseg`)."
    )


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files, by released key."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(path)))
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    return state


def build_model(config: UniGeoSegConfig, *, initialise: bool = True):
    """A `UniGeoSegModel`; without `initialise`, transformers' random initialisation is
    skipped (every weight is about to be loaded)."""
    from contextlib import nullcontext

    from terramask.models.unigeoseg.model import UniGeoSegModel

    context = nullcontext()
    if not initialise:
        try:
            from transformers.initialization import no_init_weights

            context = no_init_weights()
        except ImportError:  # older transformers: initialise, it only costs time
            pass
    with context:
        return UniGeoSegModel(config)


def load_weights(model, folder: Path, config: UniGeoSegConfig) -> KeyReport:
    """Map the folder's released weights onto `model` through the key table."""
    released = read_state_dict(folder)
    converted, report = convert_released(released, model, config, source=str(folder))
    model.load_state_dict(converted, strict=True)
    return report


def load_tokenizer(folder: Path):
    """The checkpoint's tokenizer (Phi-1.5's CodeGen tokenizer for the released one)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer warns that llava_phi is no known config
    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except Exception as exc:  # every failure gets the same actionable paragraph
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(
            f"The tokenizer of the UniGeoSeg folder {folder} could not be loaded ({detail}). "
            "The folder needs its tokenizer files (tokenizer.json or vocab.json + merges.txt); "
            "download the checkpoint again (`terramask models pull unigeoseg`)."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def seg_token_id(tokenizer) -> int:
    """The id that closes the instruction: the first id of `[SEG]`, as the released code
    takes it (`tokenizer.encode("[SEG]")[0]`)."""
    from terramask.methods.unigeoseg_prompts import SEG_TOKEN

    ids = tokenizer.encode(SEG_TOKEN, add_special_tokens=False)
    if not ids:
        raise ModelLoadError("The UniGeoSeg tokenizer encodes '[SEG]' to nothing.")
    return int(ids[0])


def save_checkpoint(model, tokenizer, folder: Path) -> Path:
    """Write `model` and `tokenizer` as a checkpoint folder in the released layout (which
    `load_unigeoseg` and the released code read)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config: UniGeoSegConfig = model.config
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    released = to_released(state, config)
    save_file(released, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config.to_checkpoint(), indent=2) + "\n")
    tokenizer.save_pretrained(str(folder))
    return folder
