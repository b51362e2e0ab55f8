"""Which options apply to which verb, engine and data set: an option that would be ignored is
refused, with the reason, before any work starts.

Each `*_rules` function returns {option name: why it does not apply} for one run; `refuse`
raises for the first option given that is among them. `api` calls them with the options a
caller changed from their defaults (`options.changed`), the command line with the flags a
user typed, so the same table answers both.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

from terramask.errors import InputError
from terramask.pipeline.engines import ASK_ENGINE_MODELS, SEGMENT_ENGINE_MODELS

_MODEL_FIELDS = ("segmenter", "clip", "sam3", "featup")
#: What only an endpoint uses; a local model ignores it.
_ENDPOINT_ONLY = ("MLLMOptions.key", "MLLMOptions.timeout", "MLLMOptions.retries",
                  "MLLMOptions.concurrency")  # fmt: skip


def refuse(given: Iterable[str], rules: Mapping[str, str]) -> None:
    """Raise an InputError for the first option in `given` that a rule names.

    Rule keys may end in `.*` to cover every field of an options object.
    """
    for name in given:
        for pattern, reason in rules.items():
            if fnmatch.fnmatchcase(name, pattern):
                raise InputError(f"`{name}` does not apply here: {reason}.")


def _unused_models(used: tuple[str, ...], what: str) -> dict[str, str]:
    return {
        f"ModelOptions.{role}": f"{what} uses no {role} model"
        for role in _MODEL_FIELDS
        if role not in used
    }


def prompt_rules(*, has_coordinates: bool) -> dict[str, str]:
    """`prompt`: only the segmenter; `crs` describes `points`/`boxes` only."""
    rules = _unused_models(("segmenter",), "prompt")
    rules["PolygonOptions.min_area"] = "prompt keeps every part of each object it was asked for"
    if not has_coordinates:
        rules["crs"] = (
            "it is the CRS of `points` and `boxes`, and none was given; a prompt file "
            "carries its own CRS"
        )
    return rules


def segment_rules(
    engine: str, *, ray: bool = False, predictor: bool = False
) -> dict[str, str]:
    """`segment` (and OVSS evaluation): the engine's own models and settings only."""
    if predictor:
        ready = "a ready predictor replaces the engine, its models and settings"
        return {
            "engine": ready,
            "ModelOptions.*": ready,
            "GenerationSettings.*": ready,
            "threshold": ready,
            "RayOptions.*": "Ray actors build their own predictor",
        }
    rules = _unused_models(SEGMENT_ENGINE_MODELS.get(engine, ()), f"engine {engine!r}")
    if engine != "sam+clip":
        rules["GenerationSettings.*"] = (
            f"engine {engine!r} generates no SAM masks (only sam+clip does)"
        )
    if not ray:
        rules["RayOptions.workers"] = "workers are Ray actors, and no `ray` address was given"
    return rules


def mllm_rules(*, local: bool) -> dict[str, str]:
    """A local model (no `MLLMOptions.url`) ignores what only an endpoint uses."""
    if not local:
        return {}
    return {name: "a local model (no `MLLMOptions.url`) is not an endpoint"
            for name in _ENDPOINT_ONLY}  # fmt: skip


def ask_rules(engine: str, *, local_mllm: bool) -> dict[str, str]:
    """`ask` (and referring evaluation): the engine's models; refinement only for geoseg."""
    rules = _unused_models(ASK_ENGINE_MODELS.get(engine, ()), f"engine {engine!r}")
    if engine != "geoseg":
        for name in ("AskOptions.refine", "AskOptions.calibration"):
            rules[name] = f"engine {engine!r} does not refine boxes (only geoseg does)"
    if engine == "clicks":
        rules["AskOptions.boxes"] = "engine 'clicks' segments clicks, not boxes"
    rules["PolygonOptions.min_area"] = "ask keeps every part of the object it found"
    return {**rules, **mllm_rules(local=local_mllm)}


def evaluate_rules(
    kind: str, engine: str | None, *, local_mllm: bool, predictor: object = None
) -> dict[str, str]:
    """`evaluate`: OVSS sets take segment's options, referring sets ask's. `engine` None with
    a ready `predictor` (an `OvssPredictor` or `SemanticEngine`) on an OVSS set."""
    if kind == "ovss":
        why = "it applies to referring/reasoning data sets, and this one is an OVSS set"
        if engine is None:
            ready = "a ready engine was given, with its own models and settings"
            rules = {"ModelOptions.*": ready, "GenerationSettings.*": ready, "generation": ready}
            if hasattr(predictor, "predict"):
                rules["threshold"] = "a ready predictor applies its own threshold"
        else:
            rules = segment_rules(engine, ray=True)
        return {**rules, "MLLMOptions.*": why, "mllm": why, "AskOptions.*": why,
                "ask_options": why, "protocol": why, "judge*": why}  # fmt: skip
    why = "it applies to OVSS data sets, and this one is a referring/reasoning set"
    return {
        **ask_rules(engine or "geoseg", local_mllm=local_mllm),
        "threshold": why,
        "GenerationSettings.*": why,
        "generation": why,
    }


def calibrate_rules(*, local_mllm: bool) -> dict[str, str]:
    """`calibrate`: only the MLLM."""
    return mllm_rules(local=local_mllm)
