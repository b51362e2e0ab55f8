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
AskEngine = Literal["geoseg", "clicks", "box", "unigeoseg"]  # unigeoseg: UniGeoSeg (#16)
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
        unigeoseg: The UniGeoSeg checkpoint of engine unigeoseg (`ask`, `prompt`, `eval`): an
            alias, hub id or folder (default nishuo1999/UniGeoSeg). UniGeoSeg (#16)
        device: "auto" (CUDA, then Apple MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    """

    segmenter: str | os.PathLike | Any | None = None
    clip: str | os.PathLike | Any | None = None
    sam3: str | os.PathLike | Any | None = None
    featup: str | os.PathLike | Any | None = None
    device: str = "auto"
    unigeoseg: str | os.PathLike | Any | None = None  # UniGeoSeg (#16)

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
                ("featup", self.featup), ("unigeoseg", self.unigeoseg),  # UniGeoSeg (#16)
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
        adapter: A LoRA adapter folder `terramask train clicks` wrote, loaded into the local
            model (`model`, its base) for the clicks engine; None runs the model as it is.
            With `max_side` None the images are shrunk as in training (its `max_side`).
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
    adapter: str | os.PathLike | None = None  # tuned clicks (#13)

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


# ----------------------------------------------------------------- tuned clicks (#13)

#: The base model of `terramask train clicks`: Qwen3-VL-2B, as in Sosa et al. (specs/sosa.md §3).
CLICK_BASE_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
#: What a LoRA adapter is put on by default: every attention and MLP projection of the
#: language model (the vision tower and its merger stay frozen).
LORA_TARGETS: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)  # fmt: skip


@dataclass(frozen=True)
class ClickSynthesis:
    """How clicks are synthesised from a ground-truth mask with a frozen segmenter in the loop
    (`terramask clicks`, `api.synthesize_clicks`, and the targets of `terramask train clicks`).

    The procedure and its sources are in docs/clicks.md.

    Args:
        clicks: Clicks per mask (6, the paper's best); fewer when the segmenter's mask
            already equals the ground truth (both error regions empty).
        frame: The coordinate frame the clicks text is written in: "pixel" (pixels of the
            image), "norm1000" (0-1000, Qwen3-VL's grid) or "norm1" (0-1). Training writes
            each target in the base model's own frame instead.
    """

    clicks: int = 6
    frame: CoordinateFrame = "pixel"

    def __post_init__(self) -> None:
        check_at_least(self.clicks, 1, "ClickSynthesis.clicks")
        check_choice(self.frame, COORDINATE_FRAMES, "ClickSynthesis.frame")


@dataclass(frozen=True)
class ClickTraining:
    """LoRA tuning of a Qwen-VL click generator (`terramask train clicks`).

    The paper's values where it gives them (Qwen3-VL-2B, rank 32, 3 epochs, 6 clicks; Sosa
    et al., specs/sosa.md §3); documented choices elsewhere (docs/clicks.md says which).

    Args:
        base: The base model: an alias, hub id or folder of a Qwen3-VL or Qwen2.5-VL.
        rank: LoRA rank (paper: 32).
        alpha: LoRA scaling numerator (ours: 2 x rank, the common choice).
        dropout: Dropout on the LoRA branch (ours: 0.05).
        target_modules: Names of the language model's linear layers that get an adapter
            (ours: every attention and MLP projection); the vision tower stays frozen.
        learning_rate: Peak AdamW learning rate (ours: 2e-4), after a linear warm-up and
            followed by a cosine decay.
        epochs: Passes over the training samples (paper: 3).
        max_steps: Stop after this many optimizer steps (None: all epochs).
        batch_size: Samples per forward pass.
        grad_accumulation: Forward passes per optimizer step (effective batch: batch_size x
            grad_accumulation; ours 4 x 4 = 16).
        warmup: Fraction of the optimizer steps spent warming up the learning rate.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradients are clipped to this norm.
        max_side: Long side, in pixels, of the image the model is shown (as
            `MLLMOptions.max_side` when asking: 1024 by default), before Qwen's processor
            rounds it to its patch grid.
        clicks: Clicks synthesised per training mask (paper: 6).
        val_fraction: Share of the samples held out for validation (by a hash of their id,
            so the split does not move between runs); validation runs each epoch when a
            segmenter is given.
        save_every: Write a checkpoint every this many optimizer steps (and after the last
            one, and on Ctrl-C).
        seed: Seed of the data order, dropout and LoRA initialisation.
    """

    base: str = CLICK_BASE_MODEL
    rank: int = 32
    alpha: float = 64.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LORA_TARGETS
    learning_rate: float = 2e-4
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 4
    grad_accumulation: int = 4
    warmup: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_side: int = 1024
    clicks: int = 6
    val_fraction: float = 0.05
    save_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not str(self.base).strip():
            raise InputError("`ClickTraining.base` is empty: name a Qwen3-VL or Qwen2.5-VL.")
        check_at_least(self.rank, 1, "ClickTraining.rank")
        if not self.alpha > 0:
            raise InputError(f"`ClickTraining.alpha` must be positive, not {self.alpha!r}.")
        if not 0 <= self.dropout < 1:
            raise InputError(f"`ClickTraining.dropout` must be in [0, 1), not {self.dropout!r}.")
        targets = tuple(str(t).strip() for t in self.target_modules if str(t).strip())
        if not targets:
            raise InputError("`ClickTraining.target_modules` is empty: name at least one "
                             "linear layer, e.g. q_proj,v_proj.")
        object.__setattr__(self, "target_modules", targets)
        if not self.learning_rate > 0:
            raise InputError(
                f"`ClickTraining.learning_rate` must be positive, not {self.learning_rate!r}."
            )
        check_at_least(self.epochs, 1, "ClickTraining.epochs")
        check_at_least(self.max_steps, 1, "ClickTraining.max_steps")
        check_at_least(self.batch_size, 1, "ClickTraining.batch_size")
        check_at_least(self.grad_accumulation, 1, "ClickTraining.grad_accumulation")
        if not 0 <= self.warmup < 1:
            raise InputError(f"`ClickTraining.warmup` must be in [0, 1), not {self.warmup!r}.")
        check_at_least(self.weight_decay, 0, "ClickTraining.weight_decay")
        if not self.max_grad_norm > 0:
            raise InputError(
                f"`ClickTraining.max_grad_norm` must be positive, not {self.max_grad_norm!r}."
            )
        check_at_least(self.max_side, 28, "ClickTraining.max_side", " px")
        check_at_least(self.clicks, 1, "ClickTraining.clicks")
        if not 0 <= self.val_fraction < 1:
            raise InputError(
                f"`ClickTraining.val_fraction` must be in [0, 1), not {self.val_fraction!r}."
            )
        check_at_least(self.save_every, 1, "ClickTraining.save_every")


# ----------------------------------------------------------------- end of tuned clicks


# ------------------------------------------------------------ instruction data (issue #14)

#: The three instruction tasks of UniGeoSeg's data (GeoSeg-1M) and benchmark.
InstructionTask = Literal["interactive", "referring", "reasoning"]
INSTRUCTION_TASKS: tuple[str, ...] = get_args(InstructionTask)
#: How a label raster encodes its classes: "auto" (decided per file), "indexed" (band 1
#: holds class values), "palette" (band 1 indices through the file's colour table to
#: colours) or "rgb" (bands 1-3 hold colours).
LabelEncoding = Literal["auto", "indexed", "palette", "rgb"]
LABEL_ENCODINGS: tuple[str, ...] = get_args(LabelEncoding)


@dataclass(frozen=True)
class DataRecipe:
    """How `build_instruction_data` turns labelled rasters into instruction data: the
    GeoSeg-1M recipe (specs/unigeoseg.md §1-2) with every rule and threshold an option.

    Args:
        patch: Side of the square patches, pixels (at least `MIN_TILE`, 64).
        stride: Step between patches, pixels (at least 1, at most `patch`); the last row and
            column are moved back to the image's edge so that every pixel is covered.
        encoding: How label rasters encode classes (`LABEL_ENCODINGS`; "auto" decides per
            file: colours when the classes are given as colours, values otherwise).
        ignore: Class names (after merging) that never become instances: background,
            no-data and the like. Compared without case.
        min_pixels: Regions smaller than this many pixels are label noise: dropped before
            any rule, and not counted as instances by the crowding and neighbour rules.
        min_area: The smallest instance kept, as a share of the patch's area (0.005 = 0.5 %).
        max_area: The largest instance kept, as a share of the patch's area (0.70 = 70 %).
        max_instances: A class with more instances than this in a patch yields none there
            (crowded: a referring expression could not single one out).
        neighbour_px: An instance with another instance of its class within this many
            pixels (Euclidean, edge to edge) is dropped; 0 turns the rule off.
        keep_per_class: At most this many instances per class and patch are kept, drawn at
            random (seeded).
        class_cap: At most this many instances per class in the whole data set (against the
            long tail; patch order decides which); None for no cap.
        tasks: The tasks to write; None: all three when a generator MLLM is given, else
            interactive only.
        box_share: The share of interactive samples given as a box (the rest as points).
        point_split_px: Masks under this many pixels get exactly one point.
        point_weights: Probabilities of 1, 2 and 3 points for larger masks.
        decimals: Decimals of interactive coordinates (normalised 0-1); raised when the
            patch needs more for a point to stay inside its pixel.
        reasoning_share: The share of patches, ranked by how many classes they hold, that
            get reasoning questions (the recipe's top decile: 0.1; 1.0 for all); ties at the
            boundary are kept.
        contextual_max: A class with 2 to this many instances in a patch gets contextual
            (relational) questions; with one, attribute questions; with more, none.
        mask_check: Ask the first judge MLLM whether each candidate is a sound, distinct,
            unambiguous target before writing instructions (only when a judge is given).
        contour_px: Width, in pixels, of the contour drawn around a target for the MLLMs.
        prompts: A folder of prompt files (and `thresholds.json`) replacing the built-in
            ones of the same name (`terramask/data/prompts/`); None uses the built-in ones.
        split: The split name of the written lists (`{split}.json`).
        label_suffix: The end of a label's file stem that its image's stem lacks (iSAID's
            "_instance_color_RGB"), removed before pairing.
        seed: Seeds every random choice, per patch and instance (a resumed run draws the
            same).
    """

    patch: int = 512
    stride: int = 256
    encoding: LabelEncoding = "auto"
    ignore: tuple[str, ...] = (
        "background", "nodata", "no-data", "no data", "ignore", "unlabeled", "unlabelled",
        "void",
    )  # fmt: skip
    min_pixels: int = 16
    min_area: float = 0.005
    max_area: float = 0.70
    max_instances: int = 6
    neighbour_px: int = 15
    keep_per_class: int = 2
    class_cap: int | None = None
    tasks: tuple[str, ...] | None = None
    box_share: float = 0.5
    point_split_px: int = 200
    point_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    decimals: int = 3
    reasoning_share: float = 0.1
    contextual_max: int = 3
    mask_check: bool = True
    contour_px: int = 2
    prompts: str | os.PathLike | None = None
    split: str = "train"
    label_suffix: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(self.patch, MIN_TILE, "DataRecipe.patch", " px")
        check_at_least(self.stride, 1, "DataRecipe.stride", " px")
        if self.stride > self.patch:
            raise InputError(
                f"`DataRecipe.stride` {self.stride} px is longer than `DataRecipe.patch` "
                f"{self.patch} px: pixels between patches would never be seen."
            )
        check_choice(self.encoding, LABEL_ENCODINGS, "DataRecipe.encoding")
        object.__setattr__(self, "ignore", tuple(str(n).strip() for n in self.ignore))
        check_at_least(self.min_pixels, 1, "DataRecipe.min_pixels", " px")
        check_probability(self.min_area, "DataRecipe.min_area")
        check_probability(self.max_area, "DataRecipe.max_area")
        if not self.min_area < self.max_area:
            raise InputError(
                f"`DataRecipe.min_area` ({self.min_area}) must be below `DataRecipe.max_area` "
                f"({self.max_area}): both are shares of the patch's area."
            )
        check_at_least(self.max_instances, 1, "DataRecipe.max_instances")
        check_at_least(self.neighbour_px, 0, "DataRecipe.neighbour_px", " px")
        check_at_least(self.keep_per_class, 1, "DataRecipe.keep_per_class")
        check_at_least(self.class_cap, 1, "DataRecipe.class_cap")
        if self.tasks is not None:
            tasks = tuple(dict.fromkeys(str(t).strip().lower() for t in self.tasks))
            if not tasks:
                raise InputError("`DataRecipe.tasks` is empty: name at least one task.")
            for task in tasks:
                check_choice(task, INSTRUCTION_TASKS, "DataRecipe.tasks")
            object.__setattr__(self, "tasks", tasks)
        check_probability(self.box_share, "DataRecipe.box_share")
        check_at_least(self.point_split_px, 1, "DataRecipe.point_split_px", " px")
        weights = tuple(float(w) for w in self.point_weights)
        if len(weights) != 3 or any(not w >= 0 for w in weights) or not sum(weights) > 0:
            raise InputError(
                "`DataRecipe.point_weights` must be three non-negative weights of 1, 2 and 3 "
                f"points (e.g. 0.6,0.2,0.2), not {self.point_weights!r}."
            )
        object.__setattr__(self, "point_weights", weights)
        check_at_least(self.decimals, 1, "DataRecipe.decimals")
        if not 0 < self.reasoning_share <= 1:
            raise InputError(
                f"`DataRecipe.reasoning_share` is a share of patches in (0, 1], not "
                f"{self.reasoning_share!r}."
            )
        check_at_least(self.contextual_max, 2, "DataRecipe.contextual_max")
        check_at_least(self.contour_px, 1, "DataRecipe.contour_px", " px")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(self.split)) or str(
            self.split
        ).lower() in ("stats", "settings"):
            raise InputError(
                f"`DataRecipe.split` {self.split!r} names a file ({{split}}.json): use letters, "
                "digits, '_', '.' and '-' (e.g. train, val, test), and not stats or settings "
                "(the run's own files)."
            )


# ------------------------------------------------------------ end of instruction data


__all__ = [
    "AMG_MODES",
    "ASK_ENGINES",
    "BOXES_MODES",
    "CLICK_BASE_MODEL",
    "COORDINATE_FRAMES",
    "COORDS",
    "GENERATION_PRESETS",
    "INDEX_CRS",
    "INSTRUCTION_TASKS",
    "LABEL_ENCODINGS",
    "LORA_TARGETS",
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
    "ClickSynthesis",
    "ClickTraining",
    "CoordinateFrame",
    "Coords",
    "DataRecipe",
    "GenerationSettings",
    "InstructionTask",
    "LabelEncoding",
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


# ---------------------------------------------------------------- serve (issue #15) begin


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    text = str(host).strip().strip("[]").lower()
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


#: The shortest bearer token `terramask serve` accepts (a guessable token protects nothing).
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ServerOptions:
    """How `terramask serve` serves scenes: which ones, on which address, and to whom.

    Args:
        scenes: Scenes served under their names, wherever they lie: paths, URLs, folders,
            globs, .txt lists or STAC JSON (as `segment_many` takes them).
        root: A folder whose rasters and STAC items clients may also ask for by their path
            relative to it; nothing outside it is reachable (`..` and symlinks resolved).
        host: The address to listen on. Anything but loopback (127.0.0.1, ::1, localhost)
            needs `token`.
        port: The TCP port (0 picks a free one).
        token: A bearer token every API call must carry (`Authorization: Bearer TOKEN`),
            compared in constant time; at least 16 characters. Never shown in reports.
        cors: Origins (scheme://host[:port]) whose pages may call the API; CORS is off when
            empty.
        basemap: An XYZ tile URL template ({z}, {x}, {y}) shown under the scenes; None shows
            the scenes alone (what works offline).
        output: The folder of the job store (jobs.sqlite) and of every job's outputs.
        max_request_bytes: The largest request body accepted (HTTP 413 above it).
        job_workers: Jobs run at once; more wait in the queue.
        embedding_memory: Tile embeddings kept in memory (least recently used dropped).
        embedding_cache: Folder of the on-disk embedding cache (None:
            $TERRAMASK_CACHE/embeddings, default ~/.cache/terramask/embeddings).
        embedding_cache_mb: Size the on-disk cache is kept under (oldest entries dropped);
            0 turns it off.
    """

    scenes: tuple[str, ...] = ()
    root: str | os.PathLike | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    cors: tuple[str, ...] = ()
    basemap: str | None = None
    output: str | os.PathLike = "terramask-serve"
    max_request_bytes: int = 1_000_000
    job_workers: int = 1
    embedding_memory: int = 32
    embedding_cache: str | os.PathLike | None = None
    embedding_cache_mb: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "scenes", tuple(os.fspath(s) for s in self.scenes))
        object.__setattr__(self, "cors", tuple(str(c).strip().rstrip("/") for c in self.cors))
        if not self.scenes and self.root is None:
            raise InputError(
                "Nothing to serve: give scenes (paths, URLs, folders, globs, lists or STAC "
                "JSON), a folder `ServerOptions.root` whose scenes clients may open, or both."
            )
        if self.root is not None and not os.path.isdir(self.root):
            raise InputError(
                f"`ServerOptions.root` {os.fspath(self.root)} is not a folder: it is the folder "
                "whose scenes clients may open by their relative path."
            )
        if not 0 <= int(self.port) <= 65535:
            raise InputError(f"`ServerOptions.port` must be 0 to 65535, not {self.port!r}.")
        if self.token is not None and len(self.token.strip()) < MIN_TOKEN_LENGTH:
            raise InputError(
                f"`ServerOptions.token` is too short: use at least {MIN_TOKEN_LENGTH} random "
                "characters (e.g. from `python -c \"import secrets; print(secrets."
                "token_urlsafe())\"`)."
            )
        if self.token is None and not is_loopback(self.host):
            raise InputError(
                f"Serving on {self.host} makes the API reachable from other machines: give "
                "`ServerOptions.token` (a bearer token every request must carry), or keep "
                "`ServerOptions.host` on loopback (127.0.0.1)."
            )
        for origin in self.cors:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise InputError(
                    f"`ServerOptions.cors` origin {origin!r} is not an origin: give "
                    "scheme://host[:port], e.g. https://maps.example.org, or * for any."
                )
        if self.basemap is not None and not (
            re.match(r"^https?://", self.basemap)
            and all(part in self.basemap for part in ("{z}", "{x}", "{y}"))
        ):
            raise InputError(
                f"`ServerOptions.basemap` {self.basemap!r} is not an XYZ URL template: it "
                "needs http(s):// and {z}, {x} and {y}, e.g. "
                "https://tile.openstreetmap.org/{z}/{x}/{y}.png."
            )
        check_at_least(self.max_request_bytes, 1024, "ServerOptions.max_request_bytes", " bytes")
        check_at_least(self.job_workers, 1, "ServerOptions.job_workers")
        check_at_least(self.embedding_memory, 1, "ServerOptions.embedding_memory")
        check_at_least(self.embedding_cache_mb, 0, "ServerOptions.embedding_cache_mb", " MB")


__all__ += ["MIN_TOKEN_LENGTH", "ServerOptions", "is_loopback"]
# ---------------------------------------------------------------- serve (issue #15) end


# ---------------------------------------------------------------- UniGeoSeg (#16) begin

#: UniGeoSeg's tasks: the branch of its text enhancement and the weight of its memory.
UniGeoSegTask = Literal["interactive", "referring", "reasoning"]
#: The conversation template: the released GeoSeg-Bench/EarthReason one ("benchmark") or the
#: released RRSIS-D one ("referring").
UniGeoSegPrompt = Literal["benchmark", "referring"]
#: Precision of the weights: "auto" (bf16/fp16 on GPUs, fp32 on CPU) or one.
UniGeoSegDtype = Literal["auto", "fp32", "fp16", "bf16"]
#: The segmenter of `prompt`: SAM-family (`ModelOptions.segmenter`) or UniGeoSeg's
#: interactive instruction (`ModelOptions.unigeoseg`).
PromptEngine = Literal["sam", "unigeoseg"]
#: How progressive task scheduling moves the task mix: each step ("linear"), once per epoch
#: ("epoch", the reimplementation's per-epoch weights) or not at all ("none": every
#: sample equally likely, the paper's "uniform" ablation).
PtsCurve = Literal["linear", "epoch", "none"]
UNIGEOSEG_TASKS: tuple[str, ...] = get_args(UniGeoSegTask)
UNIGEOSEG_PROMPTS: tuple[str, ...] = get_args(UniGeoSegPrompt)
UNIGEOSEG_DTYPES: tuple[str, ...] = get_args(UniGeoSegDtype)
PROMPT_ENGINES: tuple[str, ...] = get_args(PromptEngine)
PTS_CURVES: tuple[str, ...] = get_args(PtsCurve)


@dataclass(frozen=True)
class UniGeoSegOptions:
    """How UniGeoSeg is asked (`ask`/`prompt`/`eval` with engine unigeoseg).

    Args:
        task: "interactive", "referring" or "reasoning"; None decides from the instruction
            (benchmark-style coordinates: interactive; a question: reasoning; else referring).
        prompt: The conversation template: "benchmark" (the released GeoSeg-Bench and
            EarthReason one, used there for every task) or "referring" (the RRSIS-D one).
        explain: Also generate the model's explanation (greedy, up to `max_new_tokens`);
            None: the verb's default (`ask` explains, `eval` does not, as the released
            evaluation).
        max_new_tokens: Longest explanation, in tokens.
        second_look: On a scene more than two canvases wide, segment again at full resolution
            around the overview's answer.
        dtype: Precision of the weights: "auto" (bf16/fp16 on GPUs, fp32 on CPU), "fp32"
            (the released evaluation's), "fp16" or "bf16".
    """

    task: UniGeoSegTask | None = None
    prompt: UniGeoSegPrompt = "benchmark"
    explain: bool | None = None
    max_new_tokens: int = 64
    second_look: bool = True
    dtype: UniGeoSegDtype = "auto"

    def __post_init__(self) -> None:
        if self.task is not None:
            check_choice(self.task, UNIGEOSEG_TASKS, "UniGeoSegOptions.task")
        check_choice(self.prompt, UNIGEOSEG_PROMPTS, "UniGeoSegOptions.prompt")
        check_at_least(self.max_new_tokens, 1, "UniGeoSegOptions.max_new_tokens")
        check_choice(self.dtype, UNIGEOSEG_DTYPES, "UniGeoSegOptions.dtype")


@dataclass(frozen=True)
class UniGeoSegTraining:
    """Fine-tuning UniGeoSeg (`terramask train unigeoseg`), with the paper's recipe where it
    gives one (Tab. 11: AdamW 1e-4, cosine, warm-up 0.03, weight decay 0, 3 epochs, global
    batch 16, bf16, frozen Swin) and the released criterion's weights (Hungarian matching,
    BCE x5 and Dice x5 on 12,544 importance-sampled points, deep supervision, language loss
    x1). docs/unigeoseg.md says which values are ours.

    Args:
        init: The checkpoint training starts from: alias, hub id or folder (the released one).
        epochs: Passes over the training samples (paper: 3).
        max_steps: Stop after this many optimizer steps (None: all epochs).
        batch_size: Samples per forward pass (the released run: 2 per GPU).
        grad_accumulation: Forward passes per optimizer step.
        learning_rate: Peak AdamW learning rate (paper: 1e-4).
        warmup: Fraction of the steps spent warming up, before the cosine decay (paper: 0.03).
        weight_decay: AdamW weight decay (paper: 0).
        max_grad_norm: Gradients are clipped to this norm (ours).
        curve: Progressive task scheduling: "linear", "epoch" or "none" (see `PtsCurve`).
        interactive_end: The interactive task's weight at the end of training (paper: 0.7;
            it starts at 1, referring stays 1, reasoning gets 1 - interactive weight).
        points: Points the mask losses are computed on (12,544, Mask2Former's).
        oversample: Candidate points per kept point for importance sampling (3).
        importance: Share of points taken where the prediction is least certain (0.75).
        mask_weight, dice_weight, lm_weight: Loss weights (5, 5, 1).
        deep_supervision: Also supervise every intermediate decoder prediction.
        lora_rank: LoRA on the language model's attention and MLP projections with this rank
            (for small GPUs); None trains the whole language model.
        lora_alpha: LoRA scaling numerator.
        precision: "auto" (bf16 autocast on GPUs, fp32 on CPU), "bf16" or "fp32".
        gradient_checkpointing: Recompute the language model's activations (less memory).
        val_fraction: Share of the samples held out for validation gIoU per task (by a hash
            of their id); 0 when a separate validation set is given.
        save_every: Write a checkpoint every this many optimizer steps (and each epoch).
        seed: Seed of the data order and the point sampling.
    """

    init: str = "unigeoseg"
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 2
    grad_accumulation: int = 1
    learning_rate: float = 1e-4
    warmup: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    curve: PtsCurve = "linear"
    interactive_end: float = 0.7
    points: int = 12544
    oversample: float = 3.0
    importance: float = 0.75
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    lm_weight: float = 1.0
    deep_supervision: bool = True
    lora_rank: int | None = None
    lora_alpha: float = 32.0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    val_fraction: float = 0.02
    save_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not str(self.init).strip():
            raise InputError("`UniGeoSegTraining.init` is empty: name the checkpoint to start "
                             "from (unigeoseg, a hub id or a folder).")  # fmt: skip
        for name in ("epochs", "batch_size", "grad_accumulation", "points", "save_every"):
            check_at_least(getattr(self, name), 1, f"UniGeoSegTraining.{name}")
        check_at_least(self.max_steps, 1, "UniGeoSegTraining.max_steps")
        for name in ("learning_rate", "lora_alpha", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise InputError(f"`UniGeoSegTraining.{name}` must be positive, not "
                                 f"{getattr(self, name)!r}.")  # fmt: skip
        for name in ("warmup", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"`UniGeoSegTraining.{name}` must be in [0, 1), not "
                                 f"{getattr(self, name)!r}.")  # fmt: skip
        check_at_least(self.weight_decay, 0, "UniGeoSegTraining.weight_decay")
        check_choice(self.curve, PTS_CURVES, "UniGeoSegTraining.curve")
        check_probability(self.interactive_end, "UniGeoSegTraining.interactive_end")
        check_at_least(self.oversample, 1, "UniGeoSegTraining.oversample")
        check_probability(self.importance, "UniGeoSegTraining.importance")
        for name in ("mask_weight", "dice_weight", "lm_weight"):
            check_at_least(getattr(self, name), 0, f"UniGeoSegTraining.{name}")
        check_at_least(self.lora_rank, 1, "UniGeoSegTraining.lora_rank")
        check_choice(self.precision, ("auto", "bf16", "fp32"), "UniGeoSegTraining.precision")


__all__ += [
    "PROMPT_ENGINES", "PTS_CURVES", "UNIGEOSEG_DTYPES", "UNIGEOSEG_PROMPTS", "UNIGEOSEG_TASKS",
    "PromptEngine", "PtsCurve", "UniGeoSegDtype", "UniGeoSegOptions", "UniGeoSegPrompt",
    "UniGeoSegTask", "UniGeoSegTraining",
]  # fmt: skip
# ---------------------------------------------------------------- UniGeoSeg (#16) end
