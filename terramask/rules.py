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

_MODEL_FIELDS = ("segmenter", "clip", "sam3", "featup", "unigeoseg")  # unigeoseg: #16
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


def prompt_rules(*, has_coordinates: bool, engine: str = "sam") -> dict[str, str]:
    """`prompt`: only the segmenter; `crs` describes `points`/`boxes` only."""
    if engine == "unigeoseg":  # UniGeoSeg (#16)
        return unigeoseg_prompt_rules(has_coordinates=has_coordinates)
    rules = _unused_models(("segmenter",), "prompt")
    rules["UniGeoSegOptions.*"] = _NOT_UNIGEOSEG  # UniGeoSeg (#16)
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
        # tuned clicks (#13): an adapter is loaded into a local model only
        return {"MLLMOptions.adapter": "an adapter is loaded into a local model (no "
                "`MLLMOptions.url`); an endpoint serves a merged model (`terramask train "
                "merge`)"}
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
    else:  # tuned clicks (#13)
        asks = "asks no MLLM" if engine == "unigeoseg" else "asks for a box"
        rules["MLLMOptions.adapter"] = (
            f"an adapter of `terramask train clicks` answers with clicks; engine {engine!r} "
            f"{asks} (use engine clicks)"
        )
    rules["PolygonOptions.min_area"] = "ask keeps every part of the object it found"
    if engine == "unigeoseg":  # UniGeoSeg (#16)
        return unigeoseg_ask_rules(rules)
    rules["UniGeoSegOptions.*"] = _NOT_UNIGEOSEG  # UniGeoSeg (#16)
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
    return {
        **mllm_rules(local=local_mllm),
        # tuned clicks (#13)
        "MLLMOptions.adapter": "calibrate fits boxes, and an adapter of `terramask train "
        "clicks` answers with clicks",
    }


# ---------------------------------------------------------------- UniGeoSeg (#16) begin
_NOT_UNIGEOSEG = "it applies to engine 'unigeoseg' only"
_NO_MLLM = "engine 'unigeoseg' reads the instruction itself and asks no MLLM"


def unigeoseg_ask_rules(rules: dict[str, str]) -> dict[str, str]:
    """`ask`/referring evaluation with engine unigeoseg: no MLLM and no box handling."""
    why = "engine 'unigeoseg' segments by itself: no MLLM box, overview or reply to read"
    return {
        **rules, "MLLMOptions.*": _NO_MLLM, "mllm": _NO_MLLM, "AskOptions.*": why,
        "ask_options": why,
    }  # fmt: skip


def unigeoseg_prompt_rules(*, has_coordinates: bool) -> dict[str, str]:
    """`prompt` with engine unigeoseg: its checkpoint; clicks and boxes only (its
    interactive instruction names 1-3 positive clicks or one box)."""
    rules = _unused_models(("unigeoseg",), "prompt --engine unigeoseg")
    rules["PolygonOptions.min_area"] = "prompt keeps every part of each object it was asked for"
    rules["negatives"] = (
        "UniGeoSeg's interactive instruction names positive clicks only (use engine sam for "
        "negative clicks)"
    )
    for name in ("UniGeoSegOptions.task", "UniGeoSegOptions.prompt",
                 "UniGeoSegOptions.explain", "UniGeoSegOptions.max_new_tokens",
                 "UniGeoSegOptions.second_look"):  # fmt: skip
        rules[name] = "prompt asks UniGeoSeg its interactive task with the benchmark template"
    if not has_coordinates:
        rules["crs"] = (
            "it is the CRS of `points` and `boxes`, and none was given; a prompt file "
            "carries its own CRS"
        )
    return rules
# ---------------------------------------------------------------- UniGeoSeg (#16) end


# ---------------------------------------------------------------- instruction data (#14)


def data_rules(*, generator: bool, judges: bool, local: bool = False) -> dict[str, str]:
    """`data build`: MLLMs write and judge texts (no coordinates, no clicks); the mask check
    is the first judge's; `device` is where a local MLLM (`local`) runs."""
    rules = {
        "MLLMOptions.coords": "the data engine reads no coordinates from MLLM replies",
        "MLLMOptions.adapter": "an adapter of `terramask train clicks` answers with clicks, and "
        "the data engine asks for instructions and judgements",
    }
    if not judges:
        rules["DataRecipe.mask_check"] = (
            "the mask check is asked of the first judge, and no judge was given"
        )
    if not generator and not judges:
        rules["MLLMOptions.*"] = "no MLLM (generator or judge) was given"
    if not local:
        rules["device"] = "it is where a local MLLM runs, and no local MLLM was given"
    return rules


def run_rules(
    engine: str, segment_engine: str, tasks: Iterable[str], *, local_mllm: bool
) -> dict[str, str]:
    """`run`: each option applies to the routes of the tasks its lines name (interactive:
    the segmenter; referring/reasoning: the ask engine; classes: the segment engine)."""
    tasks = set(tasks)
    asked = bool(tasks & {"referring", "reasoning"})
    used: set[str] = set()
    if "interactive" in tasks:  # UniGeoSeg answers interactive lines with engine unigeoseg
        used.add("unigeoseg" if engine == "unigeoseg" else "segmenter")
    if asked:
        used.update(ASK_ENGINE_MODELS.get(engine, ()))
    if "classes" in tasks:
        used.update(SEGMENT_ENGINE_MODELS.get(segment_engine, ()))
    from dataclasses import fields

    from terramask.options import ModelOptions

    rules = {
        f"ModelOptions.{f.name}": f"the tasks file (its lines' routes) uses no {f.name} model"
        for f in fields(ModelOptions)
        if f.name != "device" and f.name not in used
    }
    no_ask = "no line is a referring or reasoning instruction (the ask route)"
    if asked:
        rules.update({k: v for k, v in ask_rules(engine, local_mllm=local_mllm).items()
                      if not k.startswith("ModelOptions.")
                      and k not in ("PolygonOptions.min_area", "ask_options")})  # fmt: skip
    else:
        rules.update({"AskOptions.*": no_ask, "MLLMOptions.*": no_ask, "mllm": no_ask})
        if not (engine == "unigeoseg" and "interactive" in tasks):
            rules["engine"] = no_ask + " and engine unigeoseg is not asked for interactive lines"
    no_classes = "no line is a classes line (the segment route)"
    if "classes" not in tasks:
        rules.update({"segment_engine": no_classes, "GenerationSettings.*": no_classes,
                      "PolygonOptions.min_area": no_classes})  # fmt: skip
    elif segment_engine != "sam+clip":
        rules["GenerationSettings.*"] = (
            f"segment engine {segment_engine!r} generates no SAM masks (only sam+clip does)"
        )
    return rules


# ---------------------------------------------------------------- end of instruction data
