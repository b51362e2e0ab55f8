"""open_clip checkpoints (RemoteCLIP, GeoRSCLIP) behind the `ImageText` protocol.

open_clip is an optional extra: it is imported only when such a model is loaded. The
architecture comes from `open_clip_config.json` when the folder has one, otherwise from the
checkpoint's file name (e.g. `RemoteCLIP-ViT-B-32.pt` → `ViT-B-32`).

Unlike the transformers CLIP adapter, open_clip's ViT has a fixed positional grid, so
`patch_tokens` sees images resized by the model's own preprocessing (e.g. 224 px).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from terramask.errors import InputError, ModelLoadError
from terramask.models.clip import _check_images, _check_texts, _normalise
from terramask.models.device import choose_device, choose_dtype
from terramask.models.registry import ResolvedModel
from terramask.protocols import RAW_TEMPLATE, fill_template

_ARCH = re.compile(r"(ViT-[A-Za-z]+-\d+(?:-\d+)?(?:-quickgelu)?|RN50x\d+|RN101|RN50)")
_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise InputError(
            "This model is an open_clip checkpoint (RemoteCLIP, GeoRSCLIP and similar), and the "
            "open_clip package is not installed. Install it with "
            '`pip install "terramask[open_clip]"` (it also needs torchvision matching your '
            "torch), or use a transformers CLIP model such as openai/clip-vit-base-patch16."
        ) from None
    return open_clip


def find_checkpoint(path: Path) -> tuple[Path, str | None, Path | None]:
    """The checkpoint file, its architecture name (if the file name says) and config, if any."""
    path = Path(path)
    config = None
    if path.is_file():
        checkpoint = path
    else:
        config = path / "open_clip_config.json"
        config = config if config.is_file() else None
        candidates = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
        if len(candidates) != 1:
            raise ModelLoadError(
                f"The open_clip folder {path} holds {len(candidates)} checkpoint files "
                f"({', '.join(p.name for p in candidates) or 'none'}); TerraMask needs exactly "
                "one. Pass the checkpoint file itself instead of the folder."
            )
        checkpoint = candidates[0]
    match = _ARCH.search(checkpoint.name)
    return checkpoint, (match.group(1) if match else None), config


class OpenClipImageText:
    """An open_clip model as an `ImageText`; `name` is the id the user asked for."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        architecture: str | None = None,
    ):
        open_clip = _import_open_clip()
        self.name = resolved.requested
        self.family = "open_clip"
        self.device = choose_device(device)
        self.dtype = choose_dtype(self.device, dtype)
        checkpoint, arch, config = find_checkpoint(Path(resolved.path))
        arch = architecture or arch
        if arch is not None:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(checkpoint)
            )
        elif config is not None:
            # An hf-hub style folder (open_clip_config.json + weights); open_clip reads both.
            model, _, preprocess = open_clip.create_model_and_transforms(
                f"local-dir:{config.parent}"
            )
            arch = f"local-dir:{config.parent}"
        else:
            raise ModelLoadError(
                f"Cannot tell the open_clip architecture of {checkpoint}: its name does not "
                "contain one (e.g. ViT-B-32) and there is no open_clip_config.json beside it. "
                "Rename the file to include the architecture, or add the config."
            )
        self.model = model.to(self.device, self.dtype).eval()
        self._preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)

    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        images = _check_images(images, same_size=False)
        batch = torch.stack([self._preprocess(Image.fromarray(image)) for image in images])
        return batch.to(self.device, self.dtype)

    def encode_text(
        self, texts: Sequence[str], templates: Sequence[str] | None = None
    ) -> np.ndarray:
        """(K, D) normalised text embeddings, each the re-normalised mean over `templates`."""
        texts = _check_texts(texts)
        templates = tuple(templates) if templates is not None else RAW_TEMPLATE
        if not templates or any("{}" not in t for t in templates):
            raise InputError("Every prompt template needs a '{}' where the class name goes.")
        prompts = [fill_template(t, text) for text in texts for t in templates]
        with torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(prompts).to(self.device)).float()
        features = _normalise(features).reshape(len(texts), len(templates), -1)
        return _normalise(features.mean(dim=1)).cpu().numpy()

    def encode_image(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) normalised image embeddings."""
        with torch.inference_mode():
            features = self.model.encode_image(self._pixels(images)).float()
        return _normalise(features).cpu().numpy()

    def patch_tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, h, w, D) post-layernorm patch tokens through the visual projection."""
        visual = self.model.visual
        previous = getattr(visual, "output_tokens", False)
        visual.output_tokens = True
        try:
            with torch.inference_mode():
                _, tokens = visual(self._pixels(images))
                if getattr(visual, "proj", None) is not None:
                    tokens = tokens @ visual.proj
        finally:
            visual.output_tokens = previous
        height, width = getattr(visual, "grid_size", (round(tokens.shape[1] ** 0.5),) * 2)
        return tokens.reshape(tokens.shape[0], height, width, -1).float().cpu().numpy()

