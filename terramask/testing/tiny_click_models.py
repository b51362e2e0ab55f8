"""Tiny random Qwen-VL bases that a LoRA adapter can actually teach, for click-tuning tests and
the README walk-through (no weights are downloaded).

`save_tiny_qwen_vl` initialises the output layer as transformers does (std 0.02): with a
width of 32 its logits cannot leave a narrow band around uniform, so no adapter on the
projections could make it say anything with confidence. Here the output layer is re-drawn at
unit gain; everything else is the same tiny model.

For the walk-through in docs/clicks.md, `python -m terramask.testing.tiny_click_models DIR`
writes a tiny Qwen3-VL (`--family qwen2_5_vl` for 2.5) to DIR/qwen and a tiny SAM to DIR/sam.
"""

from __future__ import annotations

from pathlib import Path

import torch

from terramask.testing.tiny_models import save_tiny_qwen_vl

#: Standard deviation of the re-drawn output layer (logits of a few units for a width of 32).
OUTPUT_STD = 0.5


def save_tiny_click_base(path: str | Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A tiny random Qwen2.5-VL / Qwen3-VL (see `save_tiny_qwen_vl`) whose output layer is
    spread out so that LoRA on its projections can fit a click answer in a few dozen steps."""
    from terramask.models.loader import quiet_progress
    from terramask.models.mllm.local_client import qwen_model_class
    from terramask.models.registry import resolve_model

    path = save_tiny_qwen_vl(path, family=family, seed=seed)
    resolved = resolve_model(str(path), kind="mllm")
    with quiet_progress():
        model = qwen_model_class(resolved).from_pretrained(resolved.path)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            weight = model.get_output_embeddings().weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * OUTPUT_STD)
        model.save_pretrained(path)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    """Write a tiny click base and a tiny SAM for trying the commands without weights."""
    import argparse

    from terramask.testing.tiny_models import QWEN_VL_FAMILIES, save_tiny_sam

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path, help="writes FOLDER/qwen and FOLDER/sam")
    parser.add_argument("--family", choices=QWEN_VL_FAMILIES, default="qwen3_vl")
    args = parser.parse_args(argv)
    print(save_tiny_click_base(args.folder / "qwen", args.family))
    print(save_tiny_sam(args.folder / "sam"))


__all__ = ["OUTPUT_STD", "main", "save_tiny_click_base"]

if __name__ == "__main__":
    main()
