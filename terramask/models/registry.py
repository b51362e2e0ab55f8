"""Finds a model by alias, hub id or path: a local folder, the Hugging Face cache, then the hub.

Weights are never loaded here; this module only decides *which folder* a model lives in and
*what family* it is, so that a missing or misplaced model fails fast with one paragraph that
says where we looked and how to get it (DESIGN.md §3, offline-first).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from terramask.errors import ModelLoadError, ModelNotFoundError

#: The roles a model plays (what it is asked for), and where a resolved one came from: a
#: folder given by path, the Hugging Face cache, or just downloaded from the hub.
ModelKind = Literal["segmenter", "image_text", "concept", "mllm", "unigeoseg"]
ModelOrigin = Literal["local", "cache", "hub"]
KINDS: tuple[str, ...] = get_args(ModelKind)

DEFAULT_MODELS = {
    "segmenter": "facebook/sam-vit-large",
    "image_text": "openai/clip-vit-base-patch16",
    "concept": "facebook/sam3",
    "unigeoseg": "nishuo1999/UniGeoSeg",  # UniGeoSeg (#16)
}

# config.json `model_type` → family. Families are what the loader dispatches on.
_MODEL_TYPE_FAMILY = {
    "sam": "sam",
    "sam_hq": "sam_hq",
    "sam2": "sam2",
    "sam2_video": "sam2",
    "clip": "clip",
    "siglip": "siglip",
    "siglip2": "siglip2",
    "sam3": "sam3",
    "sam3_video": "sam3",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "llava_phi": "unigeoseg",  # UniGeoSeg (#16): PSALM-style checkpoints
}

FAMILY_KIND = {
    "sam": "segmenter",
    "sam_hq": "segmenter",
    "sam2": "segmenter",
    "clip": "image_text",
    "siglip": "image_text",
    "siglip2": "image_text",
    "open_clip": "image_text",
    "sam3": "concept",
    "qwen2_5_vl": "mllm",
    "qwen3_vl": "mllm",
    "unigeoseg": "unigeoseg",  # UniGeoSeg (#16)
}

_KIND_WORDS = {
    "segmenter": "a promptable segmenter (`ModelOptions.segmenter`)",
    "image_text": "an image-text model (`ModelOptions.clip`)",
    "concept": "a concept segmenter (`ModelOptions.sam3`)",
    "mllm": "a multimodal LLM (`MLLMOptions.model`)",
    "unigeoseg": "a UniGeoSeg checkpoint (`ModelOptions.unigeoseg`)",  # UniGeoSeg (#16)
}

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class ModelSpec:
    """A model TerraMask knows by a short alias.

    `files` narrows a download to the named files, for hub repositories that hold several
    checkpoints (the open_clip RS models); empty means the whole repository minus other
    frameworks' weights.
    """

    name: str
    hub_id: str
    family: str
    kind: str
    description: str
    files: tuple[str, ...] = ()
    gated: bool = False


@dataclass(frozen=True)
class ResolvedModel:
    """Where a requested model lives on this machine and what it is.

    `path` is a folder, or for an open_clip checkpoint the checkpoint file itself.
    """

    path: Path
    family: str
    origin: ModelOrigin
    spec: ModelSpec | None
    requested: str


def _spec(name: str, hub_id: str, family: str, kind: str, description: str, **kw) -> ModelSpec:
    return ModelSpec(name, hub_id, family, kind, description, **kw)


KNOWN_MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _spec("sam-vit-base", "facebook/sam-vit-base", "sam", "segmenter", "SAM ViT-B (91M)."),
        _spec("sam-vit-large", "facebook/sam-vit-large", "sam", "segmenter",
              "SAM ViT-L (308M); the default segmenter, best trade-off in the RS voting paper."),
        _spec("sam-vit-huge", "facebook/sam-vit-huge", "sam", "segmenter", "SAM ViT-H (636M)."),
        _spec("sam-hq-vit-base", "syscv-community/sam-hq-vit-base", "sam_hq", "segmenter",
              "SAM-HQ ViT-B: sharper boundaries on thin structures."),
        _spec("sam-hq-vit-large", "syscv-community/sam-hq-vit-large", "sam_hq", "segmenter",
              "SAM-HQ ViT-L."),
        _spec("sam-hq-vit-huge", "syscv-community/sam-hq-vit-huge", "sam_hq", "segmenter",
              "SAM-HQ ViT-H."),
        _spec("sam2.1-hiera-tiny", "facebook/sam2.1-hiera-tiny", "sam2", "segmenter",
              "SAM 2.1 Hiera-T (39M), fastest."),
        _spec("sam2.1-hiera-small", "facebook/sam2.1-hiera-small", "sam2", "segmenter",
              "SAM 2.1 Hiera-S (46M)."),
        _spec("sam2.1-hiera-base-plus", "facebook/sam2.1-hiera-base-plus", "sam2", "segmenter",
              "SAM 2.1 Hiera-B+ (81M)."),
        _spec("sam2.1-hiera-large", "facebook/sam2.1-hiera-large", "sam2", "segmenter",
              "SAM 2.1 Hiera-L (224M)."),
        _spec("sam3", "facebook/sam3", "sam3", "concept",
              "SAM 3 concept segmentation from noun phrases (gated: accept the licence first).",
              gated=True),
        _spec("clip-vit-base-patch16", "openai/clip-vit-base-patch16", "clip", "image_text",
              "OpenAI CLIP ViT-B/16; the default image-text model (SegEarth-OV setting)."),
        _spec("clip-vit-large-patch14", "openai/clip-vit-large-patch14", "clip", "image_text",
              "OpenAI CLIP ViT-L/14."),
        _spec("siglip-base-patch16-224", "google/siglip-base-patch16-224", "siglip",
              "image_text", "SigLIP B/16 at 224 px (needs the sentencepiece package)."),
        _spec("remoteclip-vit-b-32", "chendelong/RemoteCLIP", "open_clip", "image_text",
              "RemoteCLIP ViT-B/32, CLIP tuned on remote-sensing captions (open_clip format).",
              files=("RemoteCLIP-ViT-B-32.pt",)),
        _spec("georsclip-vit-b-32", "Zilun/GeoRSCLIP", "open_clip", "image_text",
              "GeoRSCLIP ViT-B/32 trained on RS5M (open_clip format).",
              files=("ckpt/RS5M_ViT-B-32.pt",)),
        _spec("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", "mllm",
              "Qwen2.5-VL 7B Instruct, local MLLM for referring/reasoning prompts."),
        _spec("qwen3-vl", "Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl", "mllm",
              "Qwen3-VL 8B Instruct, local MLLM."),
        # UniGeoSeg (#16)
        _spec("unigeoseg", "nishuo1999/UniGeoSeg", "unigeoseg", "unigeoseg",
              "UniGeoSeg (Swin-B + Phi-1.5 + Mask2Former): interactive, referring and "
              "reasoning segmentation in one model, no MLLM endpoint needed."),
    )
}

_BY_HUB_ID = {s.hub_id.lower(): s for s in KNOWN_MODELS.values() if not s.files}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# ---------------------------------------------------------------- environment, read per call


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (a CLI may set HF_HOME late)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set, now or when the hub was imported."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "")
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


#: Seconds to wait for the hub to accept a connection before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 2.0
_HUB_PROBES: dict[str, str | None] = {}


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached from here (None when it can), learnt once per process
    by opening one connection to its host: a machine without internet fails in about
    `HUB_PROBE_TIMEOUT_S` instead of the hub client's half a minute of retries."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if endpoint not in _HUB_PROBES:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname, port), HUB_PROBE_TIMEOUT_S):
                _HUB_PROBES[endpoint] = None
        except OSError as exc:
            _HUB_PROBES[endpoint] = f"the hub ({endpoint}) cannot be reached from here ({exc})"
    return _HUB_PROBES[endpoint]


# ---------------------------------------------------------------- family detection


def detect_family(path: Path) -> str | None:
    """The family of a model folder (or open_clip checkpoint file); None when unrecognisable."""
    if path.is_file():
        return "open_clip" if path.suffix in _CHECKPOINT_SUFFIXES else None
    config = path / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        except (OSError, ValueError, AttributeError):
            return None
        return _MODEL_TYPE_FAMILY.get(str(model_type))
    if (path / "open_clip_config.json").is_file():
        return "open_clip"
    checkpoints = [p for p in path.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES]
    return "open_clip" if len(checkpoints) == 1 else None


def _check_family(path: Path, requested: str, kind: str, option: str | None = None) -> str:
    family = detect_family(path)
    if family is None:
        raise ModelLoadError(
            f"The model '{requested}' at {path} is not a model folder TerraMask can read: it has "
            "no config.json with a known model_type (sam, sam_hq, sam2, clip, siglip, sam3, "
            "qwen2_5_vl, qwen3_vl, llava_phi) and no single open_clip checkpoint. Point to the "
            "folder that holds config.json and the weights, e.g. one saved with save_pretrained or "
            "downloaded with `hf download`."
        )
    wanted = FAMILY_KIND[family]
    if wanted != kind:
        raise ModelLoadError(
            f"The model '{requested}' at {path} is a '{family}' model, which is "
            f"{_KIND_WORDS[wanted]}, but it was given as {_given_as(kind, option)}. Pass it to the "
            f"option that expects it, and give {_KIND_WORDS[kind].split(' (')[0]} here instead "
            f"(default: {DEFAULT_MODELS.get(kind, 'see `terramask models list`')})."
        )
    return family


def _given_as(kind: str, option: str | None) -> str:
    """The role in words, naming the option the model was given to (the usual one unless
    `option` says which, e.g. `ClickTraining.base` for a base to tune)."""
    words = _KIND_WORDS[kind]
    return words if option is None else f"{words.split(' (')[0]} (`{option}`)"


# ---------------------------------------------------------------- resolution


def _looks_like_path(text: str) -> bool:
    if text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text in {".", ".."}:
        return True
    return not _HUB_ID.match(text)


def _lookup_spec(requested: str) -> tuple[str, ModelSpec | None]:
    spec = KNOWN_MODELS.get(requested) or _BY_HUB_ID.get(requested.lower())
    return (spec.hub_id if spec else requested), spec


def _cached_snapshot(repo_id: str, spec: ModelSpec | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or a malformed cache entry
        return None
    return _pick_in_snapshot(folder, spec)


def _pick_in_snapshot(folder: Path, spec: ModelSpec | None) -> Path | None:
    """The usable path inside a snapshot: the named checkpoint, or the folder if it has a model."""
    if spec is not None and spec.files:
        target = folder / spec.files[0]
        return target if target.is_file() else None
    return folder if detect_family(folder) is not None else None


def _download(repo_id: str, spec: ModelSpec | None) -> Path:
    from huggingface_hub import snapshot_download

    kwargs: dict = {"cache_dir": hub_cache_dir()}
    if spec is not None and spec.files:
        kwargs["allow_patterns"] = list(spec.files)
    else:
        # Other frameworks' weights are dead weight here, and so are pickled PyTorch weights
        # when the repository also has safetensors (transformers prefers those).
        ignore = [
            "*.msgpack", "*.h5", "*.onnx", "*.ot", "*.tflite", "onnx/*", "coreml/*",
            "*.mlpackage/*", "flax_model*", "tf_model*", "rust_model*",
        ]
        from huggingface_hub import HfApi

        if any(f.endswith(".safetensors") for f in HfApi().list_repo_files(repo_id)):
            ignore += ["*.bin", "*.pt", "*.pth"]
        kwargs["ignore_patterns"] = ignore
    folder = Path(snapshot_download(repo_id, **kwargs))
    picked = _pick_in_snapshot(folder, spec)
    if picked is None:
        raise FileNotFoundError(f"{repo_id} downloaded but holds no model TerraMask can read")
    return picked


def _hub_failure_reason(exc: BaseException) -> str:
    from huggingface_hub import errors as hub_errors

    if isinstance(exc, hub_errors.GatedRepoError):
        return ("the repository is gated: accept its licence on its Hugging Face page, then "
                "run `hf auth login` with a token that has access")
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return "the hub has no such repository (or it is private and you are not logged in)"
    if isinstance(exc, hub_errors.RevisionNotFoundError | hub_errors.EntryNotFoundError):
        return "the repository exists but lacks the expected files"
    if isinstance(exc, hub_errors.OfflineModeIsEnabled):
        return "offline mode forbade the download"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"the download failed ({type(exc).__name__}: {text[:200]})"


def _not_found(
    requested: str,
    repo_id: str | None,
    *,
    folder: Path | None,
    offline: bool,
    reason: str = "",
    spec: ModelSpec | None = None,
) -> ModelNotFoundError:
    looked = []
    if folder is not None:
        looked.append(f"the folder {folder} (it does not exist)")
    if repo_id is not None:
        looked.append(f"the Hugging Face cache at {hub_cache_dir()}")
        if offline:
            looked.append("not the hub, because offline mode is on (HF_HUB_OFFLINE=1)")
        else:
            looked.append(f"the hub ({reason})" if reason else "the hub")
    fixes = []
    if repo_id is not None:
        name = requested if requested in KNOWN_MODELS else repo_id
        files = "".join(f" {f}" for f in spec.files) if spec else ""
        gated = " (accept the model's licence on its hub page and `hf auth login` first)" if (
            spec and spec.gated) else ""
        fixes.append(
            f"run `terramask models pull {name}` on a machine with internet{gated}, or "
            f"`hf download {repo_id}{files}` there and copy its $HF_HOME (or the cache folder) "
            "here"
        )
    if repo_id is None:
        fixes.append("check the path, or pass a folder that holds config.json and the weights "
                      "(as saved by save_pretrained or `hf download`), or a known alias from "
                      "`terramask models list`")
    else:
        fixes.append("or pass the path of a local folder that holds the model")
    where = "; ".join(looked)
    return ModelNotFoundError(
        f"The model '{requested}' was not found. Looked in: {where}. To fix it, "
        + ", ".join(fixes) + "."
    )


def resolve_model(
    id_or_path: str, *, kind: str, allow_download: bool = True, option: str | None = None
) -> ResolvedModel:
    """Find a model by alias, hub id or local path, without loading it.

    Looks in a local folder of that name, then the Hugging Face cache, then (unless offline
    or `allow_download` is false) downloads it.

    Args:
        id_or_path: An alias (`terramask models list`), a hub id or a folder.
        kind: The role it must play: "segmenter", "image_text", "concept" or "mllm".
        allow_download: Whether the hub may be contacted (`terramask models where` never).
        option: The option the model was given to, named when its family cannot play `kind`
            (default: the usual one of `kind`).

    Returns:
        Its folder, family, origin ("local", "cache" or "hub") and known spec.

    Raises:
        ModelNotFoundError: Not found where it was looked for (the message says where, and
            how to get it).
        ModelLoadError: Found, but of a family that cannot play `kind`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    requested = str(id_or_path).strip()
    if not requested:
        raise ModelNotFoundError(
            "An empty model name was given. Pass an alias from `terramask models list`, a hub "
            f"id such as {DEFAULT_MODELS.get(kind, 'facebook/sam-vit-large')}, or a local folder."
        )
    offline = is_offline()

    local = Path(requested).expanduser()
    if local.exists() and (local.is_dir() or local.suffix in _CHECKPOINT_SUFFIXES):
        local = local.resolve()
        return ResolvedModel(local, _check_family(local, requested, kind, option), "local", None,
                             requested)

    repo_id, spec = _lookup_spec(requested)
    if spec is None and _looks_like_path(requested):
        raise _not_found(requested, None, folder=local.absolute(), offline=offline)

    cached = _cached_snapshot(repo_id, spec)
    if cached is not None:
        return ResolvedModel(cached, _check_family(cached, requested, kind, option), "cache", spec,
                             requested)
    if offline:
        raise _not_found(requested, repo_id, folder=None, offline=True, spec=spec)
    if not allow_download:
        raise _not_found(requested, repo_id, folder=None, offline=False, spec=spec,
                         reason="not contacted: this command only looks locally")
    unreachable = hub_unreachable()
    if unreachable:
        raise _not_found(requested, repo_id, folder=None, offline=False, spec=spec,
                         reason=unreachable)
    try:
        fetched = _download(repo_id, spec)
    except Exception as exc:  # every hub failure becomes the same actionable paragraph
        raise _not_found(requested, repo_id, folder=None, offline=False,
                         reason=_hub_failure_reason(exc), spec=spec) from None
    return ResolvedModel(fetched, _check_family(fetched, requested, kind, option), "hub", spec,
                         requested)


def list_models() -> list[tuple[ModelSpec, ResolvedModel | None]]:
    """Every known model with where it is cached, or None; never touches the network."""
    rows = []
    for spec in KNOWN_MODELS.values():
        path = _cached_snapshot(spec.hub_id, spec)
        found = None
        if path is not None and detect_family(path) is not None:
            found = ResolvedModel(path, detect_family(path) or spec.family, "cache", spec,
                                  spec.name)
        rows.append((spec, found))
    return rows


def pull_model(id_or_path: str) -> ResolvedModel:
    """Download a model into the Hugging Face cache (or confirm it is there) for offline use.

    Args:
        id_or_path: An alias or hub id (a local model folder is already local: returned as
            it is, with origin "local").

    Returns:
        Where it now is (origin "hub" when just downloaded, "cache" or "local" when it was
        already here).

    Raises:
        ModelNotFoundError: The hub does not have it, or it cannot be reached.
    """
    local = Path(str(id_or_path).strip()).expanduser()
    if local.exists() and detect_family(local) is not None:
        # a folder (or checkpoint) on this machine: nothing to download
        return ResolvedModel(local.resolve(), detect_family(local), "local", None, str(id_or_path))
    repo_id, spec = _lookup_spec(str(id_or_path).strip())
    kind = spec.kind if spec else None
    if kind is None:
        cached = _cached_snapshot(repo_id, None)
        if cached is None:
            if is_offline():
                raise _not_found(id_or_path, repo_id, folder=None, offline=True)
            unreachable = hub_unreachable()
            if unreachable:
                raise _not_found(id_or_path, repo_id, folder=None, offline=False,
                                 reason=unreachable)
            try:
                cached = _download(repo_id, None)
            except Exception as exc:
                raise _not_found(id_or_path, repo_id, folder=None, offline=False,
                                 reason=_hub_failure_reason(exc)) from None
            origin = "hub"
        else:
            origin = "cache"
        family = detect_family(cached)
        if family is None:
            raise ModelLoadError(
                f"The model '{id_or_path}' was downloaded to {cached} but TerraMask cannot tell "
                "what it is (no config.json with a known model_type). Check the hub id."
            )
        return ResolvedModel(cached, family, origin, None, str(id_or_path))
    return resolve_model(str(id_or_path), kind=kind)
