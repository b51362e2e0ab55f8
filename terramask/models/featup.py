"""SimFeatUp: SegEarth-OV's learned upsampler of CLIP patch features, and its loader.

SegEarth-OV (CVPR 2025) upsamples the CLIP ViT-B/16 patch features of each sliding window 16x
before they meet the text embeddings, guided by the window's pixels, instead of upsampling the
logits bilinearly. The upsampler is FeatUp's joint bilateral upsampler (JBU) with a learned
range kernel, trained by SegEarth-OV on Million-AID; its released checkpoint
(`simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt` in github.com/likyoo/SegEarth-OV,
selected by `model_name='jbu_one'` in its configs) holds one JBU step applied four times
(weights shared), each doubling the resolution, then a 1x1 convolution added at 0.1.

One JBU step, from features (D, h, w) and a guidance image (3, H, W) average-pooled to twice
the features' size (H', W') = (2h, 2w):

- spatial kernel over the (2r+1)^2 offsets of a window (r = 5 here): exp(-(dx^2 + dy^2) / 2σ^2)
  with dx, dy evenly spaced in [-1, 1] and σ learned;
- range kernel: the guidance projected to 32 channels (1x1 conv, GELU, 1x1 conv), then for
  each pixel the softmax over the offsets of exp(t) * (key at the offset · key at the pixel),
  t learned (exp(t) clamped to [1e-4, 1e4]); keys are padded by reflection;
- kernel = range * spatial, normalised to sum 1 over the offsets, plus 0.1 * a correction
  computed from (kernel, guidance) by 1x1 conv, GELU, 1x1 conv;
- output = the features upsampled bicubically to (H', W'), padded by reflection, and averaged
  over each pixel's window with that pixel's kernel.

SegEarth-OV applies it to the projected patch tokens of the self-self last block (before
normalisation), with the window's pixels normalised by CLIP's mean and std as guidance, then
L2-normalises the upsampled features and takes the logits against the text at full window
resolution (`DenseClip(upsampler=...)`). It runs in fp16 there; here in fp32.

Checkpoints: the PyTorch Lightning file SegEarth-OV releases (`state_dict` with keys
`upsampler.*`), or a bare state dict with or without that prefix, as .ckpt/.pt/.pth/.bin or
.safetensors. The FeatUp-style "jbu_stack" layout (four separate steps of radius 3,
`upsampler.up1.*` ... `up4.*`) is read too. Every tensor is matched through an explicit table
(`key_table`); a tensor the table lacks, a table entry the file lacks, or a shape that differs
stops the load with the full list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from terramask.errors import InputError, ModelLoadError, ModelNotFoundError

#: SegEarth-OV's data preprocessor: CLIP's mean and std in 0-255 units (RGB). The guidance the
#: upsampler was trained and is run with is the window normalised by these.
GUIDANCE_MEAN = (122.771, 116.746, 104.094)
GUIDANCE_STD = (68.501, 66.632, 70.323)

#: Files a checkpoint may be.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")

#: The layouts: radius of each step, and the checkpoint name of the step each doubling uses.
VARIANTS: dict[str, dict[str, Any]] = {
    "jbu_one": {"radius": 5, "steps": ("up", "up", "up", "up")},
    "jbu_stack": {"radius": 3, "steps": ("up1", "up2", "up3", "up4")},
}
#: Guidance channels (RGB) and range-key channels of every released SimFeatUp.
GUIDANCE_DIM = 3
KEY_DIM = 32
#: The checkpoint's key prefix (SegEarth-OV strips these 10 characters before loading).
PREFIX = "upsampler."


class JbuStep(nn.Module):
    """One joint-bilateral 2x upsampling step with a learned range kernel (module doc)."""

    def __init__(self, radius: int, guidance_dim: int = GUIDANCE_DIM, key_dim: int = KEY_DIM):
        super().__init__()
        self.radius = int(radius)
        self.diameter = 2 * self.radius + 1
        taps = self.diameter**2
        self.range_temperature = nn.Parameter(torch.tensor(0.0))
        self.spatial_sigma = nn.Parameter(torch.tensor(1.0))
        self.range_key_in = nn.Conv2d(guidance_dim, key_dim, 1)
        self.range_key_out = nn.Conv2d(key_dim, key_dim, 1)
        self.kernel_fix_in = nn.Conv2d(taps + guidance_dim, taps, 1)
        self.kernel_fix_out = nn.Conv2d(taps, taps, 1)

    def _offsets(self):
        for i in range(self.diameter):
            for j in range(self.diameter):
                yield i, j

    def spatial_kernel(self) -> torch.Tensor:
        """(1, d*d, 1, 1): a Gaussian of the offset, offsets spaced evenly over [-1, 1]."""
        steps = torch.linspace(-1, 1, self.diameter, device=self.spatial_sigma.device)
        squared = steps[:, None] ** 2 + steps[None, :] ** 2  # (d, d): row offset i, col j
        kernel = torch.exp(-squared / (2 * self.spatial_sigma**2))
        return kernel.reshape(1, -1, 1, 1)

    def range_kernel(self, guidance: torch.Tensor) -> torch.Tensor:
        """(B, d*d, H, W): softmax over offsets of the scaled key similarity to each pixel."""
        keys = self.range_key_out(F.gelu(self.range_key_in(guidance)))
        padded = _pad(keys, self.radius)
        height, width = keys.shape[-2:]
        similarity = torch.stack(
            [
                (padded[:, :, i : i + height, j : j + width] * keys).sum(1)
                for i, j in self._offsets()
            ],
            dim=1,
        )
        temperature = self.range_temperature.exp().clamp(1e-4, 1e4)
        return torch.softmax(temperature * similarity, dim=1)

    def forward(self, features: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) features at the guidance's size (H, W)."""
        kernel = self.range_kernel(guidance) * self.spatial_kernel()
        kernel = kernel / kernel.sum(1, keepdim=True).clamp_min(1e-7)
        fix = self.kernel_fix_out(F.gelu(self.kernel_fix_in(torch.cat([kernel, guidance], 1))))
        kernel = kernel + 0.1 * fix
        height, width = guidance.shape[-2:]
        upsampled = F.interpolate(features, (height, width), mode="bicubic", align_corners=False)
        padded = _pad(upsampled, self.radius)
        out = torch.zeros_like(upsampled)
        for tap, (i, j) in enumerate(self._offsets()):  # in place: no temporary per offset
            out.addcmul_(padded[:, :, i : i + height, j : j + width], kernel[:, tap : tap + 1])
        return out


class SimFeatUp(nn.Module):
    """SimFeatUp as SegEarth-OV runs it: JBU steps, each doubling, then a 0.1 1x1 correction.

    `variant` "jbu_one" (SegEarth-OV's released checkpoint: one step of radius 5 used four
    times) or "jbu_stack" (four steps of radius 3); `feat_dim` the feature channels (512 for
    CLIP ViT-B/16).
    """

    def __init__(self, feat_dim: int, variant: str = "jbu_one"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
        layout = VARIANTS[variant]
        self.variant = variant
        self.feat_dim = int(feat_dim)
        names = list(dict.fromkeys(layout["steps"]))  # the distinct steps, in order
        self.steps = nn.ModuleList(JbuStep(layout["radius"]) for _ in names)
        self.schedule = tuple(names.index(name) for name in layout["steps"])
        self.output_fix = nn.Conv2d(self.feat_dim, self.feat_dim, 1)

    @property
    def factor(self) -> int:
        """How many times larger the output is than the input, per side (16)."""
        return 2 ** len(self.schedule)

    def forward(self, features: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) features and (B, 3, H, W) normalised guidance -> (B, D, 16h, 16w)."""
        for index in self.schedule:
            height, width = features.shape[-2:]
            small = F.adaptive_avg_pool2d(guidance, (2 * height, 2 * width))
            features = self.steps[index](features, small)
        return features + 0.1 * self.output_fix(features)


def key_table(variant: str, feat_dim: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """checkpoint key (without `PREFIX`) -> (parameter of `SimFeatUp`, shape), every tensor."""
    layout = VARIANTS[variant]
    taps = (2 * layout["radius"] + 1) ** 2
    table: dict[str, tuple[str, tuple[int, ...]]] = {}
    for index, name in enumerate(dict.fromkeys(layout["steps"])):
        ours = f"steps.{index}"
        table.update({
            f"{name}.range_temp": (f"{ours}.range_temperature", ()),
            f"{name}.sigma_spatial": (f"{ours}.spatial_sigma", ()),
            f"{name}.range_proj.0.weight": (f"{ours}.range_key_in.weight",
                                            (KEY_DIM, GUIDANCE_DIM, 1, 1)),
            f"{name}.range_proj.0.bias": (f"{ours}.range_key_in.bias", (KEY_DIM,)),
            f"{name}.range_proj.3.weight": (f"{ours}.range_key_out.weight",
                                            (KEY_DIM, KEY_DIM, 1, 1)),
            f"{name}.range_proj.3.bias": (f"{ours}.range_key_out.bias", (KEY_DIM,)),
            f"{name}.fixup_proj.0.weight": (f"{ours}.kernel_fix_in.weight",
                                            (taps, taps + GUIDANCE_DIM, 1, 1)),
            f"{name}.fixup_proj.0.bias": (f"{ours}.kernel_fix_in.bias", (taps,)),
            f"{name}.fixup_proj.3.weight": (f"{ours}.kernel_fix_out.weight", (taps, taps, 1, 1)),
            f"{name}.fixup_proj.3.bias": (f"{ours}.kernel_fix_out.bias", (taps,)),
        })  # fmt: skip
    table["fixup_proj.1.weight"] = ("output_fix.weight", (feat_dim, feat_dim, 1, 1))
    table["fixup_proj.1.bias"] = ("output_fix.bias", (feat_dim,))
    return table


def to_checkpoint(module: SimFeatUp) -> dict[str, torch.Tensor]:
    """`module`'s weights under the released checkpoint's keys (with `PREFIX`): the inverse of
    loading, for writing test checkpoints in the released layout."""
    ours = module.state_dict()
    return {
        PREFIX + key: ours[name].detach().clone()
        for key, (name, _) in key_table(module.variant, module.feat_dim).items()
    }


class FeatureUpsampler:
    """A loaded SimFeatUp on its device: CLIP patch features of windows -> full-resolution
    features, guided by the windows' pixels (what `DenseClip(upsampler=...)` calls)."""

    def __init__(self, module: SimFeatUp, *, name: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.module = module.to(self.device, torch.float32).eval()
        self.name = name
        self.variant = module.variant
        self.feat_dim = module.feat_dim

    @property
    def factor(self) -> int:
        return self.module.factor

    def guidance(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, 3, H, W) float32 on the device: uint8 RGB windows normalised as SegEarth-OV's."""
        pixels = torch.from_numpy(np.stack([np.asarray(c) for c in crops])).to(self.device)
        pixels = pixels.permute(0, 3, 1, 2).float()
        mean = torch.tensor(GUIDANCE_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(GUIDANCE_STD, device=self.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def __call__(self, features: torch.Tensor, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, D, h, w) features of `crops` (B windows (H, W, 3) uint8, H = patch * h) ->
        (B, D, 16h, 16w) float32 on the device, one window at a time (memory)."""
        if features.shape[1] != self.feat_dim:
            raise InputError(
                f"The feature upsampler '{self.name}' was trained on {self.feat_dim}-channel "
                f"features but the image-text model gives {features.shape[1]}. Use it with the "
                "model it was trained for (SegEarth-OV's: CLIP ViT-B/16, 512), or leave it out."
            )
        out = []
        with torch.inference_mode():
            for index, crop in enumerate(crops):
                source = features[index : index + 1].to(self.device, torch.float32)
                out.append(self.module(source, self.guidance([crop])))
        return torch.cat(out)


# ---------------------------------------------------------------------- loading


def load_featup(
    id_or_path: str | os.PathLike | FeatureUpsampler, *, device: str | torch.device = "auto"
) -> FeatureUpsampler:
    """SimFeatUp from a checkpoint file, a folder holding one, or a Hugging Face hub id.

    A `FeatureUpsampler` is returned as it is. A hub id is `owner/name` (the repository must
    hold exactly one checkpoint) or `owner/name/path/in/repo.ckpt`; it is looked for in the
    Hugging Face cache first and downloaded only when not offline. Loads once per process,
    file and device.

    Raises:
        ModelNotFoundError: Nothing at that path, in the cache or on the hub (says where it
            looked and how to get it).
        ModelLoadError: The file is not a SimFeatUp checkpoint, or a tensor is missing,
            unexpected or of the wrong shape (all of them are listed).
    """
    if isinstance(id_or_path, FeatureUpsampler):
        return id_or_path
    from terramask.models.loader import load_once
    from terramask.models.registry import ResolvedModel

    requested = str(id_or_path).strip()
    path, origin = resolve_checkpoint(requested)
    resolved = ResolvedModel(path, "simfeatup", origin, None, requested)

    def build(dev: torch.device, _dtype: torch.dtype) -> FeatureUpsampler:
        module = load_simfeatup(path, requested=requested)
        return FeatureUpsampler(module, name=f"simfeatup:{requested}", device=dev)

    return load_once("featup", resolved, device, "fp32", build)


def load_simfeatup(path: str | os.PathLike, *, requested: str | None = None) -> SimFeatUp:
    """The `SimFeatUp` a checkpoint file holds, every tensor matched through `key_table`."""
    path = Path(path)
    name = requested or str(path)
    weights = read_state_dict(path, name)
    variant = _variant(weights, name, path)
    output = weights.get("fixup_proj.1.weight")
    if output is None or output.ndim != 4:
        raise ModelLoadError(
            f"The SimFeatUp checkpoint '{name}' ({path}) has no 2-D 1x1 output convolution "
            "'upsampler.fixup_proj.1.weight', so its feature size is unknown. It is not a "
            "SimFeatUp checkpoint as SegEarth-OV releases it."
        )
    feat_dim = int(output.shape[0])
    table = key_table(variant, feat_dim)
    missing = [key for key in table if key not in weights]
    unexpected = [key for key in weights if key not in table]
    misshaped = [
        f"{PREFIX}{key} {tuple(weights[key].shape)} (expected {shape})"
        for key, (_, shape) in table.items()
        if key in weights and tuple(weights[key].shape) != shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(PREFIX + k for k in missing))
        if unexpected:
            parts.append("not SimFeatUp's: " + ", ".join(PREFIX + k for k in unexpected))
        if misshaped:
            parts.append("wrong shape: " + ", ".join(misshaped))
        raise ModelLoadError(
            f"The SimFeatUp checkpoint '{name}' ({path}) does not match the {variant} layout "
            f"for {feat_dim}-channel features; nothing was loaded. " + "; ".join(parts) + ". "
            "Use the checkpoint SegEarth-OV releases "
            "(simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt in github.com/likyoo/"
            "SegEarth-OV)."
        )
    module = SimFeatUp(feat_dim, variant)
    state = {ours: weights[key].to(torch.float32) for key, (ours, _) in table.items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, keys without `PREFIX` (a Lightning file's `state_dict`)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, or pickled objects weights_only refuses
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(
            f"The SimFeatUp checkpoint '{name}' ({path}) could not be read as tensors "
            f"({type(exc).__name__}: {detail}). Point to the .ckpt SegEarth-OV releases, or a "
            "state dict saved with torch.save or safetensors."
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if (
        not isinstance(loaded, dict)
        or not loaded
        or not all(isinstance(v, torch.Tensor) for v in loaded.values())
    ):
        raise ModelLoadError(
            f"The file '{name}' ({path}) holds no state dict of tensors (nor a Lightning "
            "checkpoint with one under 'state_dict'): it is not a SimFeatUp checkpoint."
        )
    keys = [str(k) for k in loaded]
    if all(k.startswith(PREFIX) for k in keys):
        return {k[len(PREFIX) :]: v for k, v in loaded.items()}
    return {str(k): v for k, v in loaded.items()}


def _variant(weights: dict[str, torch.Tensor], name: str, path: Path) -> str:
    found = [v for v, layout in VARIANTS.items()
             if f"{layout['steps'][0]}.range_temp" in weights]  # fmt: skip
    if len(found) != 1:
        shown = ", ".join(sorted(weights)[:8]) + (" ..." if len(weights) > 8 else "")
        raise ModelLoadError(
            f"The checkpoint '{name}' ({path}) is not a SimFeatUp checkpoint: it has neither "
            "'upsampler.up.range_temp' (SegEarth-OV's jbu_one) nor 'upsampler.up1.range_temp' "
            f"(jbu_stack). Its keys begin: {shown}."
        )
    return found[0]


def resolve_checkpoint(requested: str) -> tuple[Path, str]:
    """(checkpoint file, origin "local" | "cache" | "hub") for a path or hub id; see
    `load_featup`."""
    from terramask.models.registry import hub_unreachable, is_offline

    if not requested:
        raise ModelNotFoundError(
            "An empty SimFeatUp checkpoint name was given. Pass the path of the .ckpt "
            "SegEarth-OV releases (simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt), a "
            "folder holding it, or a hub id owner/name."
        )
    local = Path(requested).expanduser()
    if local.is_file():
        return local.resolve(), "local"
    if local.is_dir():
        return _single_checkpoint(local.resolve(), requested), "local"
    parts = requested.split("/")
    hub_like = (
        len(parts) >= 2
        and all(parts)
        and not requested.startswith(("/", ".", "~"))
        and "\\" not in requested
    )
    if not hub_like:
        raise ModelNotFoundError(
            f"The SimFeatUp checkpoint '{requested}' was not found: {local.absolute()} does not "
            "exist. Pass the path of the .ckpt SegEarth-OV releases (simfeatup_dev/weights/"
            "xclip_jbu_one_million_aid.ckpt in github.com/likyoo/SegEarth-OV), a folder "
            "holding one checkpoint, or a Hugging Face hub id owner/name."
        )
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    cached = _from_hub(repo_id, filename, requested, local_only=True)
    if cached is not None:
        return cached, "cache"
    if is_offline():
        raise _hub_not_found(requested, repo_id, "not the hub, because offline mode is on "
                             "(HF_HUB_OFFLINE=1)")  # fmt: skip
    unreachable = hub_unreachable()
    if unreachable:
        raise _hub_not_found(requested, repo_id, unreachable)
    fetched = _from_hub(repo_id, filename, requested, local_only=False)
    assert fetched is not None
    return fetched, "hub"


def _from_hub(repo_id: str, filename: str | None, requested: str, *, local_only: bool):
    from huggingface_hub import hf_hub_download, snapshot_download

    from terramask.models.registry import _hub_failure_reason, hub_cache_dir

    try:
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename, cache_dir=hub_cache_dir(),
                                        local_files_only=local_only))  # fmt: skip
        folder = snapshot_download(
            repo_id, cache_dir=hub_cache_dir(), local_files_only=local_only,
            allow_patterns=[f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES],
        )  # fmt: skip
    except Exception as exc:
        if local_only:
            return None
        raise _hub_not_found(requested, repo_id, _hub_failure_reason(exc)) from None
    return _single_checkpoint(Path(folder), requested)


def _single_checkpoint(folder: Path, requested: str) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(folder)) for p in found[:10]) or "none"
        raise ModelNotFoundError(
            f"The SimFeatUp checkpoint '{requested}' is a folder ({folder}) that must hold "
            f"exactly one checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); it holds {listed}. "
            "Pass the file itself."
        )
    return found[0]


def _hub_not_found(requested: str, repo_id: str, reason: str) -> ModelNotFoundError:
    from terramask.models.registry import hub_cache_dir

    return ModelNotFoundError(
        f"The SimFeatUp checkpoint '{requested}' was not found. Looked in: the Hugging Face "
        f"cache at {hub_cache_dir()}; {reason}. To fix it, run `hf download {repo_id}` on a "
        "machine with internet and copy its cache here, or pass the path of the checkpoint "
        "file (SegEarth-OV releases simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt in "
        "github.com/likyoo/SegEarth-OV)."
    )


def _pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Reflection padding by `radius`, as the reference does; replication where the map is too
    small to reflect (a window thinner than the radius, which SegEarth-OV never sees)."""
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    return F.pad(x, [radius] * 4, mode=mode)
