"""Merges a click adapter into its base model: one folder that vLLM, SGLang or `ask` serve.

The LoRA weights are added into the base's (peft's `merge_and_unload`), the model is saved
with `save_pretrained` in the base's own dtype, and the base's tokenizer, image-processor and
chat-template files are copied beside it, so the folder is a complete model. Its
`terramask_training.json` records the adapter it came from and the frame to ask it in
(`--mllm-coords`), as serving frameworks do not know it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from terramask.atomic import temp_sibling
from terramask.errors import OutputExistsError
from terramask.models.mllm.adapters import ADAPTER_RECORD, adapter_folder, read_record

#: Files of a model folder that are weights or written by `save_pretrained`; the rest of the
#: base's files (tokenizer, processor, chat template) are copied.
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
_NOT_COPIED = ("config.json", "generation_config.json", "model.safetensors.index.json",
               "pytorch_model.bin.index.json")  # fmt: skip


def merge_adapter(
    adapter: str | os.PathLike,
    output: str | os.PathLike,
    *,
    base: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write base + adapter as one model folder `output` (the record's base unless `base`).

    Raises:
        InputError: Not an adapter folder.
        ModelLoadError: The base cannot be loaded, or the adapter is for another base.
        OutputExistsError: `output` exists and `overwrite` is false.
    """
    from terramask.models.loader import quiet_progress
    from terramask.models.mllm.adapters import attach_adapter
    from terramask.models.mllm.local_client import qwen_model_class
    from terramask.models.registry import resolve_model

    folder = adapter_folder(adapter)
    record = read_record(folder)
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(
            f"The merged model folder {output} already exists and was left untouched. Pass "
            "`overwrite` to replace it, or choose another folder."
        )
    base_name = base or record.get("base")
    if not base_name:
        from terramask.errors import InputError

        raise InputError(
            f"The adapter {folder} does not record its base model; name it (`base`)."
        )
    resolved = resolve_model(str(base_name), kind="mllm", option="base")
    with quiet_progress():
        model = qwen_model_class(resolved).from_pretrained(resolved.path, dtype="auto")
        dtype = next(model.parameters()).dtype
        merged = attach_adapter(model.float(), folder, resolved, "base").merge_and_unload()
        merged = merged.to(dtype)
    staging = temp_sibling(output, "work")
    try:
        with quiet_progress(), torch.no_grad():
            merged.save_pretrained(str(staging))
        for source in Path(resolved.path).iterdir():
            if (source.is_file() and source.name not in _NOT_COPIED
                    and not source.name.endswith(_NOT_COPIED_SUFFIXES)):
                shutil.copy2(source, staging / source.name)
        note = {"merged_from": {"adapter": str(folder), "base": str(base_name)},
                "frame": record.get("frame"), "max_side": record.get("max_side")}
        (staging / ADAPTER_RECORD).write_text(json.dumps(note, indent=2), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {"output": str(output), "base": str(base_name), "adapter": str(folder),
            "frame": record.get("frame")}  # fmt: skip


__all__ = ["merge_adapter"]
