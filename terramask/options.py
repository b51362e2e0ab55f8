"""The options a run takes, as small frozen objects: each default is written here, once.

The command line builds these objects from its flags, `terramask.api` takes them, and the
pipelines and methods receive them unchanged. Each object checks its own values when it is
made, so a bad value fails before any file is read or model loaded; errors name the field as
`Class.field`, which the command line shows as its flag.

A field left at its default counts as "not given": a verb refuses an object whose changed
fields do not apply to the chosen engine or data set (`changed` lists them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from terramask.errors import InputError

#: Open-vocabulary engines of `segment` and OVSS evaluation (DESIGN.md §1.1).
SegmentEngine = Literal["clip", "sam+clip", "sam3"]
#: Engines of `ask` and referring/reasoning evaluation (DESIGN.md §1.2).
AskEngine = Literal["geoseg", "clicks", "box"]
#: How an MLLM's box is corrected before segmenting: GeoSeg's published expansion, none, or
#: a fit from `terramask calibrate`.
Refine = Literal["geoseg", "none", "calibrated"]
#: What to do with a prompt outside the scene: refuse the run, or leave the prompt out.
Outside = Literal["error", "drop"]
#: How a multimodal LLM writes coordinates: pixels of the image it was shown, 0-1000 on both
#: axes (Qwen3-VL's grounding grid), or 0-1.
CoordinateFrame = Literal["pixel", "norm1000", "norm1"]
#: The frame to ask an MLLM for: "auto" guesses it from the model, or one frame.
Coords = Literal["auto", "pixel", "norm1000", "norm1"]
#: Which of an MLLM's boxes GeoSeg segments: the first, as its reference does, or all of them.
BoxesMode = Literal["one", "all"]
#: How SAM's automatic masks are made: segment-anything's own generator ("reference"), or
#: TerraMask's faster variant ("fast"; see `methods.mask_generation`).
AmgMode = Literal["reference", "fast"]
#: Which samples of a referring/reasoning benchmark are scored, and on which canvas: the
#: published evaluation code's ("reference"), or every sentence/question at the image's size.
BenchmarkProtocol = Literal["reference", "all-texts"]

#: The CRS of the index of a run over many scenes: the one every georeferenced scene fits.
INDEX_CRS = "EPSG:4326"

SEGMENT_ENGINES: tuple[str, ...] = get_args(SegmentEngine)
ASK_ENGINES: tuple[str, ...] = get_args(AskEngine)
REFINEMENTS: tuple[str, ...] = get_args(Refine)
PROTOCOLS: tuple[str, ...] = get_args(BenchmarkProtocol)
AMG_MODES: tuple[str, ...] = get_args(AmgMode)
BOXES_MODES: tuple[str, ...] = get_args(BoxesMode)
COORDINATE_FRAMES: tuple[str, ...] = get_args(CoordinateFrame)
COORDS: tuple[str, ...] = get_args(Coords)


def check_choice(value: object, choices: tuple[str, ...], name: str) -> None:
    """An InputError naming the option `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise InputError(f"`{name}` must be one of {', '.join(choices)}, not {value!r}.")


def changed(options: object) -> list[str]:
    """The `Class.field` names of `options` whose value differs from the class default."""
    default = type(options)()
    return [
        f"{type(options).__name__}.{f.name}"
        for f in fields(options)  # type: ignore[arg-type]
        if getattr(options, f.name) is not getattr(default, f.name)
        and getattr(options, f.name) != getattr(default, f.name)
    ]


def check_at_least(value: float | None, minimum: float, name: str, unit: str = "") -> None:
    """An InputError naming the option `name` when `value` is below `minimum` (None passes)."""
    if value is not None and not value >= minimum:
        raise InputError(f"`{name}` must be at least {minimum:g}{unit}, not {value!r}.")


def check_probability(value: float | None, name: str) -> None:
    """An InputError naming the option `name` unless `value` is None or within [0, 1]."""
    if value is not None and not 0 <= value <= 1:  # NaN fails both comparisons
        raise InputError(f"`{name}` is a probability between 0 and 1, not {value!r}.")


#: The smallest window a model is given, in pixels.
MIN_TILE = 64


@dataclass(frozen=True)
class Tiling:
    """How a scene is cut into windows that are read, predicted and written one at a time.

    Args:
        tile: Side of a window in pixels (at least `MIN_TILE`, 64). Larger tiles give models more
            context and cost more memory.
        overlap: Pixels shared by neighbouring windows (at least 0, less than half a tile):
            context on both sides of a seam. `segment` keeps each pixel's label from the
            window in which it lies farthest from the edge.
    """

    tile: int = 1024
    overlap: int = 128

    def __post_init__(self) -> None:
        check_at_least(self.tile, MIN_TILE, "Tiling.tile", " px")
        check_at_least(self.overlap, 0, "Tiling.overlap", " px")
        if not self.tile > 2 * self.overlap:
            raise InputError(
                f"An overlap of {self.overlap} px does not fit tiles of {self.tile} px: "
                "`Tiling.overlap` must be less than half of `Tiling.tile`."
            )


#: `prompt` routes each prompt to the window that holds it whole: a wider overlap lets an
#: object near a core edge still sit inside one window.
PROMPT_TILING = Tiling(overlap=256)


@dataclass(frozen=True)
class RasterOptions:
    """How imagery is read: which bands are shown as RGB, and how values become bytes.

    Args:
        bands: 1-based band numbers shown as red, green, blue (3), or one band shown as
            grey; None picks the bands tagged red/green/blue, else the first three.
        stretch: "auto" (8-bit data as is, other data between the scene's 2nd and 98th
            percentiles), "none" (the data's own range), or two percentiles as a pair or a
            string "P1,P2" (0 <= P1 < P2 <= 100).
        asset: The STAC asset to read when a scene is a STAC item (None tries "visual",
            "image", "data", "analytic", then the first GeoTIFF asset).
    """

    bands: tuple[int, ...] | None = None
    stretch: str | tuple[float, float] = "auto"
    asset: str | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            bands = tuple(self.bands)
            if len(bands) not in (1, 3) or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands
            ):
                raise InputError(
                    f"`RasterOptions.bands` must be 1 band (shown as grey) or 3 bands (shown as "
                    f"red, green, blue), numbered from 1, e.g. 4,3,2; got {bands!r}."
                )
            object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "stretch", _stretch(self.stretch))


def _stretch(value: str | tuple[float, float] | list[float]) -> str | tuple[float, float]:
    """"auto", "none" or (P1, P2): the one form the scene reader receives."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("auto", "none"):
        return text
    try:
        parts = text.split(",") if text is not None else list(value)
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 <= low < high <= 100:
        raise InputError(
            f"`RasterOptions.stretch` {value!r} is not understood. Use 'auto' (8-bit data as "
            "is, other data stretched between the 2nd and 98th percentiles), 'none' (the "
            "data's own range), or two percentiles such as '1,99' with 0 <= P1 < P2 <= 100."
        )
    return low, high


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ModelOptions:
    """Which models to use and where they run.

    Each model is an alias (`terramask models list`), a Hugging Face hub id, a local folder
    holding a `save_pretrained` model, or an already loaded model object (a `Segmenter`,
    `ImageText` or `ConceptSegmenter`); None takes the default of `terramask.models`.

    Args:
        segmenter: The SAM-family segmenter (default facebook/sam-vit-large).
        clip: The CLIP-family image-text model (default openai/clip-vit-base-patch16).
        sam3: The SAM 3 concept segmenter (facebook/sam3, gated). `segment` uses it with
            engine sam3; `ask` with engine geoseg uses it for both routes when given.
        featup: SegEarth-OV's SimFeatUp feature upsampler for dense CLIP (a checkpoint file,
            a folder holding one, or a hub id); None upsamples bilinearly.
        device: "auto" (CUDA, then Apple MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    """

    segmenter: str | os.PathLike | Any | None = None
    clip: str | os.PathLike | Any | None = None
    sam3: str | os.PathLike | Any | None = None
    featup: str | os.PathLike | Any | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if not _DEVICE.match(str(self.device).strip().lower()):
            raise InputError(
                f"`ModelOptions.device` {self.device!r} is not a device name. Use auto, cpu, "
                "cuda, cuda:N or mps."
            )

    def describe(self) -> dict[str, str | None]:
        """The models by name, for reports (loaded models by their `name`)."""
        return {
            role: None if value is None else str(getattr(value, "name", value))
            for role, value in (
                ("segmenter", self.segmenter), ("clip", self.clip), ("sam3", self.sam3),
                ("featup", self.featup),
            )
        }  # fmt: skip


@dataclass(frozen=True)
class MLLMOptions:
    """A multimodal LLM: an OpenAI-compatible endpoint, or a local Qwen-VL.

    Args:
        url: The endpoint's base URL (e.g. http://localhost:8000/v1); None runs `model`
            locally through transformers.
        model: The model name the endpoint serves (gpt-5, Qwen/Qwen2.5-VL-7B-Instruct), or
            for a local model its alias, hub id or folder.
        key: The endpoint's API key (default $OPENAI_API_KEY); never shown in reports.
        coords: The coordinate frame the model is asked for and read in: "auto" (guessed
            from the model: Qwen3-VL its 0-1000 grid, Qwen2.5-VL and others pixels of the
            image as sent), "pixel", "norm1000" or "norm1".
        max_side: The long side, in pixels, the image is shrunk to before it is sent (the
            client's limit; at least 28); None keeps the client's default (1024).
        timeout: Seconds to wait for one reply (endpoints).
        retries: Retries on timeouts, 429 and 5xx, with exponential back-off (endpoints).
        concurrency: Requests in flight at once when many are asked ahead (endpoints).
        cache: Reuse an earlier reply to the same image, prompt and model
            ($TERRAMASK_CACHE, default ~/.cache/terramask/mllm).
    """

    url: str | None = None
    model: str | None = None
    key: str | None = field(default=None, repr=False)
    coords: Coords = "auto"
    max_side: int | None = None
    timeout: float = 60.0
    retries: int = 4
    concurrency: int = 4
    cache: bool = True

    def __post_init__(self) -> None:
        check_choice(self.coords, COORDS, "MLLMOptions.coords")
        check_at_least(self.max_side, 28, "MLLMOptions.max_side", " px")
        if not self.timeout > 0:
            raise InputError(f"`MLLMOptions.timeout` must be positive, not {self.timeout!r}.")
        check_at_least(self.retries, 0, "MLLMOptions.retries")
        check_at_least(self.concurrency, 1, "MLLMOptions.concurrency")


@dataclass(frozen=True)
class PolygonOptions:
    """How object outlines become polygons.

    Args:
        simplify: Douglas-Peucker tolerance in the scene CRS's units (pixels without a
            CRS), at least 0; None keeps every pixel corner.
        min_area: Leave out polygons smaller than this many pixels (`segment`).
    """

    simplify: float | None = None
    min_area: int = 0

    def __post_init__(self) -> None:
        check_at_least(self.simplify, 0, "PolygonOptions.simplify")
        check_at_least(self.min_area, 0, "PolygonOptions.min_area", " px")


@dataclass(frozen=True)
class AskOptions:
    """How an MLLM is asked about a scene and how its answer is read (`ask`, referring eval).

    Args:
        refine: How the MLLM's box is corrected before segmenting (geoseg engine): "geoseg"
            (the published asymmetric expansion), "none", or "calibrated" (`calibration`).
        calibration: The file `terramask calibrate` wrote; only with refine "calibrated".
        overview_size: Long side, in pixels, of the scene overview the MLLM is shown (the
            client may shrink it further to its own limit); at least 64.
        max_objects: At most this many boxes (or click groups) of one reply are segmented;
            the rest are left out with a note (a reply naming thousands would otherwise run
            SAM thousands of times).
        boxes: The boxes the geoseg and box engines segment: "one", the first, as GeoSeg's
            reference does; or "all", their union.
    """

    refine: Refine = "geoseg"
    calibration: str | os.PathLike | None = None
    overview_size: int = 2048
    max_objects: int = 20
    boxes: BoxesMode = "one"

    def __post_init__(self) -> None:
        check_choice(self.refine, REFINEMENTS, "AskOptions.refine")
        check_at_least(self.overview_size, 64, "AskOptions.overview_size", " px")
        check_at_least(self.max_objects, 1, "AskOptions.max_objects")
        check_choice(self.boxes, BOXES_MODES, "AskOptions.boxes")
        if self.refine == "calibrated" and self.calibration is None:
            raise InputError(
                "`AskOptions.refine` 'calibrated' needs the file `terramask calibrate` wrote, "
                "given as `AskOptions.calibration`."
            )
        if self.refine != "calibrated" and self.calibration is not None:
            raise InputError(
                "`AskOptions.calibration` is used only with `AskOptions.refine` 'calibrated'; "
                f"with {self.refine!r} it would be ignored."
            )


@dataclass(frozen=True)
class RayOptions:
    """Run `segment` tiles on Ray actors that hold the models (the `ray` extra).

    Args:
        address: "local" starts Ray on this machine; otherwise a running cluster's address
            as `ray start --head` printed it (HOST:6379, or ray://HOST:10001).
        workers: Model-holding actors; None gives one per GPU, else one per two CPUs.
    """

    address: str = "local"
    workers: int | None = None

    def __post_init__(self) -> None:
        if not str(self.address).strip():
            raise InputError("`RayOptions.address` is empty: give 'local' or HOST:PORT.")
        check_at_least(self.workers, 1, "RayOptions.workers")


@dataclass(frozen=True)
class GenerationSettings:
    """SAM's automatic-mask-generator settings, with the grid of the SAM+CLIP paper (29).

    The defaults are what `segment` uses: the fast mode, cleaned up and pruned. `evaluate`
    uses `REFERENCE_GENERATION` (segment-anything's generator exactly), so that its numbers
    compare with the papers'.

    Args:
        amg: "fast" (stability on the decoder's low-res logits, mask-IoU NMS, clean-up of
            small regions) or "reference" (segment-anything's generator: stability on the
            full-resolution logits, box NMS, no clean-up unless `min_region_area`).
        grid: Points per side of the prompt grid (grid x grid points).
        points_per_batch: Points decoded per call of the mask decoder.
        pred_iou_thresh: Keep candidates whose predicted IoU exceeds this.
        stability_thresh: Keep candidates whose stability score exceeds this.
        stability_offset: Logit offset of the stability score.
        nms_iou: Mask IoU above which the lower-scored of two masks is dropped.
        min_region_area: Islands and holes smaller than this (pixels) are cleaned up.
        prune: Decode coarse to fine, skipping points the dense labels settle
            (`methods.mask_generation`).
        coarse_strides: Strides of the passes before the full grid: every 8th point of each
            axis, then every 4th, then every 2nd. On masks from real label maps, (2,) decoded
            ~40% of a 29 grid and (8, 4, 2) ~20-30% at about the same label-map agreement
            (benchmarks/README.md).
    """

    amg: AmgMode = "fast"
    grid: int = 29
    points_per_batch: int = 16
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    stability_offset: float = 1.0
    nms_iou: float = 0.7
    min_region_area: int = 100
    prune: bool = True
    coarse_strides: tuple[int, ...] = (8, 4, 2)

    def __post_init__(self) -> None:
        check_choice(self.amg, AMG_MODES, "GenerationSettings.amg")
        check_at_least(self.grid, 1, "GenerationSettings.grid")
        check_at_least(self.points_per_batch, 1, "GenerationSettings.points_per_batch")
        check_at_least(self.min_region_area, 0, "GenerationSettings.min_region_area", " px")


#: segment-anything's `SamAutomaticMaskGenerator` settings with the SAM+CLIP paper's 29 x 29
#: grid (the paper publishes no AMG settings; its spec says to start from these) and no
#: pruning: what `evaluate` uses, and what reports call the published configuration.
REFERENCE_GENERATION = GenerationSettings(amg="reference", min_region_area=0, prune=False)
#: The mask generation each `GenerationSettings.amg` mode starts from (`--amg`): the fast
#: mode's clean-up and pruning come with it, the reference mode's none.
GENERATION_PRESETS: dict[str, GenerationSettings] = {
    "fast": GenerationSettings(),
    "reference": REFERENCE_GENERATION,
}


__all__ = [
    "AMG_MODES",
    "ASK_ENGINES",
    "BOXES_MODES",
    "COORDINATE_FRAMES",
    "COORDS",
    "GENERATION_PRESETS",
    "INDEX_CRS",
    "PROMPT_TILING",
    "PROTOCOLS",
    "REFERENCE_GENERATION",
    "REFINEMENTS",
    "SEGMENT_ENGINES",
    "AmgMode",
    "AskEngine",
    "AskOptions",
    "BenchmarkProtocol",
    "BoxesMode",
    "CoordinateFrame",
    "Coords",
    "GenerationSettings",
    "MLLMOptions",
    "ModelOptions",
    "Outside",
    "PolygonOptions",
    "RasterOptions",
    "RayOptions",
    "Refine",
    "SegmentEngine",
    "Tiling",
    "changed",
    "check_at_least",
    "check_choice",
    "check_probability",
]
