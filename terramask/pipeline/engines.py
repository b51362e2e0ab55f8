"""Turn engine names and options into ready methods: the one place models are put together.

`segment` and OVSS evaluation build an `OvssPredictor` from a `PredictorSpec` (which Ray
actors also receive, to build their own); `ask` and referring evaluation build their models
with `build_ask_models` and their box correction with `box_refinement`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from terramask.errors import InputError
from terramask.options import (
    ASK_ENGINES,
    SEGMENT_ENGINES,
    AskEngine,
    AskOptions,
    GenerationSettings,
    ModelOptions,
    SegmentEngine,
    check_choice,
)

if TYPE_CHECKING:
    from terramask.methods.geoseg import BoxRefinement, DualRoute
    from terramask.methods.ovss import OvssPredictor
    from terramask.protocols import Segmenter

#: The model each engine loads, by `ModelOptions` field.
SEGMENT_ENGINE_MODELS: dict[str, tuple[str, ...]] = {
    "clip": ("clip", "featup"),
    "sam+clip": ("segmenter", "clip", "featup"),
    "sam3": ("sam3",),
}
ASK_ENGINE_MODELS: dict[str, tuple[str, ...]] = {
    "geoseg": ("segmenter", "clip", "sam3"),
    "clicks": ("segmenter",),
    "box": ("segmenter",),
    "unigeoseg": ("unigeoseg",),
}


@dataclass(frozen=True)
class PredictorSpec:
    """How to build an open-vocabulary predictor, without building it: what Ray actors
    receive, and what a run's report and resume fingerprint record (the same whichever
    backend runs the tiles). Models load once per process, so building again is cheap.

    Attributes:
        engine: "clip" (dense CLIP), "sam+clip" (dense CLIP voted by SAM masks) or "sam3".
        models: The models and device.
        generation: SAM's automatic mask generation (sam+clip only).
        threshold: Pixels whose best class probability is below it become background.
        single_class: For single-class data sets, the class whose masks SAM voting keeps
            (the SAM-voting paper's rule); None for multi-class vocabularies.
    """

    engine: SegmentEngine = "sam+clip"
    models: ModelOptions = ModelOptions()
    generation: GenerationSettings = GenerationSettings()
    threshold: float | None = None
    single_class: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.engine, SEGMENT_ENGINES, "engine")

    def build(self) -> OvssPredictor:
        """The predictor: its models load here (once per process)."""
        from terramask import models
        from terramask.methods.ovss import OvssPredictor

        device = self.models.device
        if self.engine == "sam3":
            from terramask.methods.concepts import ConceptEngine

            concept = models.load_concept_segmenter(self.models.sam3, device=device)
            return OvssPredictor(ConceptEngine(concept), threshold=self.threshold)
        from terramask.methods.dense_clip import DenseClip

        upsampler = None
        if self.models.featup is not None:
            from terramask.models.featup import load_featup

            upsampler = load_featup(self.models.featup, device=device)
        dense = DenseClip(
            models.load_image_text(self.models.clip, device=device), upsampler=upsampler
        )
        sam = (
            models.load_segmenter(self.models.segmenter, device=device)
            if self.engine == "sam+clip"
            else None
        )
        return OvssPredictor(
            dense,
            segmenter=sam,
            threshold=self.threshold,
            generation=self.generation,
            single_class=self.single_class,
        )

    @property
    def models_used(self) -> dict[str, str | None]:
        """The models the engine loads, by role, as ids (defaults spelled out)."""
        return model_names(self.models, SEGMENT_ENGINE_MODELS[self.engine])

    @property
    def description(self) -> dict[str, Any]:
        """Engine, models and settings that change what is predicted (not the device)."""
        described: dict[str, Any] = {
            "engine": self.engine,
            **self.models_used,
            "threshold": self.threshold,
        }
        if self.engine == "sam+clip":
            from terramask.methods.mask_generation import generation_description

            described["generation"] = generation_description(self.generation)
        if self.single_class is not None:
            described["single_class"] = self.single_class
        return described


def model_names(models: ModelOptions, roles: tuple[str, ...]) -> dict[str, str | None]:
    """The models an engine uses, by role, as ids (defaults spelled out) for reports; the
    optional feature upsampler only when one is given."""
    from terramask.models.registry import DEFAULT_MODELS

    defaults = {
        "segmenter": DEFAULT_MODELS["segmenter"],
        "clip": DEFAULT_MODELS["image_text"],
        "sam3": DEFAULT_MODELS["concept"],
        "unigeoseg": DEFAULT_MODELS["unigeoseg"],
    }
    named = models.describe()
    return {
        role: named[role] or defaults[role]
        for role in roles
        if role in defaults or named[role] is not None
    }


def ask_models_used(engine: AskEngine, models: ModelOptions) -> dict[str, str | None]:
    """The models an `ask` engine loads, by role (GeoSeg's SAM 3 route only when named)."""
    roles = tuple(
        r for r in ASK_ENGINE_MODELS[engine] if r != "sam3" or models.sam3 is not None
    )
    return model_names(models, roles)


@dataclass
class AskModels:
    """What `ask` segments with: the segmenter, and GeoSeg's dual route (geoseg only)."""

    segmenter: Segmenter
    route: DualRoute | None = None


def build_ask_models(engine: AskEngine, models: ModelOptions) -> AskModels:
    """Load the models `engine` uses. GeoSeg's routes take SAM 3 when it is named: its
    interactive model for route A's clicks (else SAM, with the reason recorded) and its text
    prompt for route B (else dense CLIP)."""
    from terramask import models as loaders

    check_choice(engine, ASK_ENGINES, "engine")
    device = models.device
    sam = loaders.load_segmenter(models.segmenter, device=device)
    if engine != "geoseg":
        return AskModels(sam)
    from terramask.methods.geoseg import DualRoute
    from terramask.models.sam3_points import point_model_for_route_a

    points, why_not = point_model_for_route_a(models.sam3, device=device)
    route = DualRoute(
        sam,
        image_text=loaders.load_image_text(models.clip, device=device),
        concept=(
            loaders.load_concept_segmenter(models.sam3, device=device)
            if models.sam3 is not None
            else None
        ),
        point_segmenter=points,
        point_segmenter_note=why_not,
    )
    return AskModels(sam, route)


def box_refinement(options: AskOptions) -> BoxRefinement:
    """The box correction `options.refine` names; a calibration file is read and checked."""
    from terramask.methods.geoseg import GEOSEG_REFINEMENT, BoxRefinement

    if options.refine == "geoseg":
        return GEOSEG_REFINEMENT
    if options.refine == "none":
        return BoxRefinement.none()
    calibration = options.calibration
    if calibration is None or not os.path.isfile(calibration):
        raise InputError(
            "`AskOptions.refine` 'calibrated' needs the file `terramask calibrate` wrote, given "
            f"as `AskOptions.calibration` (got {calibration!r}, which is not a file)."
        )
    try:
        return BoxRefinement.load(calibration)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"The calibration file {calibration} is not one `terramask calibrate` wrote "
            f"({exc}); run calibrate again."
        ) from exc


def load_unigeoseg_model(models: ModelOptions, dtype: str = "auto"):
    """The UniGeoSeg model of `ModelOptions.unigeoseg` (default nishuo1999/UniGeoSeg) on
    `ModelOptions.device`; loaded once per process."""
    from terramask.models.unigeoseg import load_unigeoseg

    return load_unigeoseg(models.unigeoseg, device=models.device, dtype=dtype)
