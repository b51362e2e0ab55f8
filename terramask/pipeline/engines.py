"""Build an open-vocabulary predictor from an engine name and model ids (loads models once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from terramask.errors import InputError
from terramask.methods.ovss import OvssPredictor
from terramask.options import GenerationSettings

ENGINES = ("clip", "sam+clip", "sam3")


def build_predictor(
    engine: str = "sam+clip",
    *,
    segmenter: str | None = None,
    image_text: str | None = None,
    sam3: str | None = None,
    device: str = "auto",
    threshold: float | None = None,
    grid: int = 29,
    prune: bool = True,
    single_class: int | None = None,
) -> OvssPredictor:
    """The predictor for `engine`: dense CLIP, dense CLIP voted by SAM masks, or SAM 3."""
    from terramask import models

    if engine not in ENGINES:
        raise InputError(
            f"Unknown engine {engine!r}: choose one of {', '.join(ENGINES)} (sam+clip, dense "
            "CLIP voted by SAM masks, is the default; sam3 needs a SAM 3 model)."
        )
    if engine == "sam3":
        from terramask.methods.concepts import ConceptEngine

        concept = models.load_concept_segmenter(sam3, device=device)
        return OvssPredictor(ConceptEngine(concept), threshold=threshold)

    from terramask.methods.dense_clip import DenseClip

    dense = DenseClip(models.load_image_text(image_text, device=device))
    sam = models.load_segmenter(segmenter, device=device) if engine == "sam+clip" else None
    return OvssPredictor(
        dense,
        segmenter=sam,
        threshold=threshold,
        generation=GenerationSettings(grid=grid, prune=prune),
        single_class=single_class,
    )


@dataclass(frozen=True)
class PredictorSpec:
    """How to build a predictor, without building it: what Ray actors receive, and what a
    run's report and resume fingerprint record (the same whichever backend runs the tiles).

    Models load once per process (see `models.load_once`), so building again is cheap.
    """

    engine: str = "sam+clip"
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, engine: str = "sam+clip", **options: Any) -> PredictorSpec:
        return cls(engine, tuple(sorted(options.items())))

    def build(self) -> OvssPredictor:
        return build_predictor(self.engine, **dict(self.options))

    @property
    def description(self) -> dict:
        """Engine and settings; the device is left out (it does not change what is asked)."""
        return {"engine": self.engine, **{k: v for k, v in self.options if k != "device"}}
