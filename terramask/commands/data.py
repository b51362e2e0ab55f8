"""`terramask data build` (instruction data, the GeoSeg-1M recipe) and `terramask run` (one
instruction interface for all tasks).

`commands()` builds the click commands from the CLI's helpers (imported when it is called, so
that `terramask.cli` can register them at its end without a circular import).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from terramask.options import (
    ASK_ENGINES,
    INSTRUCTION_TASKS,
    LABEL_ENCODINGS,
    SEGMENT_ENGINES,
    DataRecipe,
    MLLMOptions,
    RasterOptions,
)

_D = DataRecipe()

#: Recipe flags: (Python field, flag, type, help). Each help ends with the default.
_RECIPE_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("patch", "--patch", int, "Patch side, pixels"),
    ("stride", "--stride", int, "Step between patches, pixels"),
    ("encoding", "--encoding", click.Choice(LABEL_ENCODINGS),
     "How labels encode classes: auto, indexed (values), palette (colour table), rgb"),
    ("min_pixels", "--min-pixels", int,
     "Regions smaller than this are label noise: dropped, and not counted as instances"),
    ("min_area", "--min-area", float, "Smallest instance, share of the patch (0.005 = 0.5 %)"),
    ("max_area", "--max-area", float, "Largest instance, share of the patch"),
    ("max_instances", "--max-instances", int,
     "A class with more instances than this in a patch yields none there"),
    ("neighbour_px", "--neighbour-px", int,
     "Drop an instance with another of its class within this many pixels (0: off)"),
    ("keep_per_class", "--keep-per-class", int, "Instances kept per class and patch (random)"),
    ("class_cap", "--class-cap", int, "Instances kept per class in the whole data set"),
    ("box_share", "--box-share", float, "Share of interactive samples given as a box"),
    ("point_split_px", "--point-split", int, "Masks under this many pixels get one point"),
    ("decimals", "--decimals", int, "Decimals of interactive coordinates (at least)"),
    ("reasoning_share", "--reasoning-share", float,
     "Share of patches (most classes first) that get reasoning questions"),
    ("contextual_max", "--contextual-max", int,
     "Contextual questions for a class with 2 to this many instances in the patch"),
    ("contour_px", "--contour-px", int, "Width of the contour drawn around targets, pixels"),
    ("prompts", "--prompts", click.Path(file_okay=False),
     "Folder of prompt files replacing the built-in ones of the same name"),
    ("split", "--split", str, "Split name of the lists ({split}.json)"),
    ("label_suffix", "--label-suffix", str, "End of a label's stem its image's stem lacks"),
    ("seed", "--seed", int, "Seed of every random choice"),
)  # fmt: skip


def _floats3(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise click.BadParameter(f"three comma-separated weights, e.g. 0.6,0.2,0.2; got {value!r}")
    return parts


def commands() -> list[click.Command]:
    """The `data` group (with `build`) and the `run` command."""
    from terramask.cli import (
        EXIT_USER_ERROR,
        ask_options,
        ask_options_from,
        built,
        common_options,
        emit,
        generation_from,
        generation_options,
        mllm_from,
        mllm_options,
        model_options,
        models_from,
        option,
        output_options,
        progress_reporter,
        simplify_option,
        stderr,
        stdout,
        table,
    )

    def raster_flags(func: Any) -> Any:
        func = option("RasterOptions.stretch", "--stretch",
                      help="auto (8-bit as is, else 2-98 percentiles per image), none, or P1,P2 "
                      "[default: auto].")(func)  # fmt: skip
        return option("RasterOptions.bands", "--bands",
                      help="1-based bands to use as R,G,B, e.g. 4,3,2.")(func)  # fmt: skip

    def raster_of(kw: dict[str, Any]) -> RasterOptions:
        bands = kw.pop("bands")
        parsed = None
        if bands is not None:
            try:
                parsed = tuple(int(b) for b in bands.split(",") if b.strip())
            except ValueError:
                raise click.BadParameter(f"bands are 1-based integers like 4,3,2, got {bands!r}"
                                         ) from None  # fmt: skip
        return built(RasterOptions, {"bands": parsed, "stretch": kw.pop("stretch")})

    @click.group("data")
    def data() -> None:
        """Instruction data for UniGeoSeg-style training and benchmarks (GeoSeg-1M recipe)."""

    def recipe_flags(func: Any) -> Any:
        for name, flag, kind, text in reversed(_RECIPE_FLAGS):
            func = option(f"DataRecipe.{name}", flag, name, type=kind,
                          help=f"{text} [default: {getattr(_D, name)}].")(func)  # fmt: skip
        weights = ",".join(f"{w:g}" for w in _D.point_weights)
        func = option("DataRecipe.point_weights", "--point-weights", callback=_floats3,
                      help="Probabilities of 1, 2, 3 points for larger masks "
                      f"[default: {weights}].")(func)  # fmt: skip
        func = option("DataRecipe.ignore", "--ignore", multiple=True,
                      help="Class names that never become instances, comma-separated or "
                      f"repeated; replaces [default: {','.join(_D.ignore)}].")(func)  # fmt: skip
        func = option("DataRecipe.tasks", "--task", "tasks", multiple=True,
                      type=click.Choice(INSTRUCTION_TASKS),
                      help="Task to write (repeatable) [default: all three with --mllm-url, "
                      "else interactive].")(func)  # fmt: skip
        return option("DataRecipe.mask_check", "--mask-check/--no-mask-check", default=None,
                      help="Ask the first judge to check each candidate mask [default: on "
                      "when a judge is given].")(func)  # fmt: skip

    def recipe_of(kw: dict[str, Any]) -> DataRecipe:
        values = {name: kw.pop(name) for name, *_ in _RECIPE_FLAGS}
        values["point_weights"] = kw.pop("point_weights")
        values["mask_check"] = kw.pop("mask_check")
        ignore = kw.pop("ignore")
        if ignore:
            values["ignore"] = tuple(n.strip() for text in ignore for n in text.split(",")
                                     if n.strip())  # fmt: skip
        tasks = kw.pop("tasks")
        values["tasks"] = tuple(tasks) if tasks else None
        return built(DataRecipe, values)

    @data.command("build")
    @click.argument("images")
    @click.argument("labels")
    @option("classes", "-c", "--class", "classes", multiple=True, required=True,
            help="A label class: NAME (value = position), VALUE=NAME, #RRGGBB=NAME or "
            "R,G,B=NAME (repeatable).")  # fmt: skip
    @option("class_map", "--class-map", type=click.Path(dir_okay=False),
            help='JSON file merging class names: {"low vegetation": "vegetation", '
            '"clutter": null}.')  # fmt: skip
    @recipe_flags
    @mllm_options
    @option("judges", "--judge-url", "judges", multiple=True,
            help="A judge MLLM endpoint (repeatable, one or two): the first checks candidate "
            "masks, all cross-evaluate instructions.")  # fmt: skip
    @option("judge_models", "--judge-model", "judge_models", multiple=True,
            help="The model of each --judge-url, in the same order.")  # fmt: skip
    @option("judge_keys", "--judge-key", "judge_keys", multiple=True,
            help="The API key of each --judge-url [default: --mllm-key].")  # fmt: skip
    @raster_flags
    @option("device", "--device", default="auto", show_default=True,
            help="Where local MLLMs run: auto, cpu, cuda, cuda:1, mps.")  # fmt: skip
    @option("overwrite", "--overwrite", is_flag=True,
            help="Replace instruction data made with other settings in the output folder.")
    @option("output", "-o", "--output", default="terramask-data", show_default=True,
            help="The data set's folder.")  # fmt: skip
    @common_options
    def build(images: str, labels: str, as_json: bool, debug: bool, **kw: Any) -> None:
        """Make UniGeoSeg-format instruction data from IMAGES and their LABELS.

        IMAGES and LABELS are folders, globs, .txt lists or single rasters, paired by file
        name. Patches → instances (8-connected, per class) → rules (area, crowding,
        neighbours, per-patch and per-class limits) → MLLM mask check (first judge) →
        interactive instructions from the mask, referring and reasoning ones from the
        --mllm-url generator → cross-evaluation by the judges. Writes OUTPUT/interactive,
        OUTPUT/ref, OUTPUT/reason ({split}.json, images/, masks/ 0/255, json/),
        OUTPUT/instances.gpkg (georeferenced inputs) and OUTPUT/stats.json. Re-running the
        same command continues where it stopped. See docs/data-engine.md.
        """
        from terramask import api

        recipe = recipe_of(kw)
        mllm = mllm_from(kw)
        generator = mllm if (mllm.url or mllm.model) else None
        urls, names, keys = kw.pop("judges"), kw.pop("judge_models"), kw.pop("judge_keys")
        if len(urls) != len(names) or len(keys) > len(urls):
            raise click.UsageError(
                "Give one --judge-model for each --judge-url (and at most one --judge-key each)."
            )
        from terramask import rules
        from terramask.cli import typed

        local = generator is not None and not mllm.url
        rules.refuse(typed(click.get_current_context()),
                     rules.data_rules(generator=generator is not None, judges=bool(urls),
                                      local=local))  # fmt: skip
        judges = [
            MLLMOptions(url=url, model=name, key=keys[i] if i < len(keys) else mllm.key,
                        timeout=mllm.timeout, retries=mllm.retries,
                        concurrency=mllm.concurrency, cache=mllm.cache)
            for i, (url, name) in enumerate(zip(urls, names, strict=True))
        ]  # fmt: skip
        raster = raster_of(kw)
        with progress_reporter(not as_json) as report:
            result = api.build_instruction_data(
                images, labels, kw.pop("classes"), recipe=recipe, class_map=kw.pop("class_map"),
                generator=generator, judges=judges, raster=raster, progress=report, **kw,
            )  # fmt: skip

        def human() -> None:
            rows = table("task", "samples", "kinds", "rejected", "failed", title="samples")
            for task, info in result["tasks"].items():
                kinds = ", ".join(f"{k} {v}" for k, v in info["kinds"].items())
                rejected = ", ".join(f"{k} {v}" for k, v in info["rejected"].items())
                rows.add_row(task, str(info["samples"]), kinds or "-", rejected or "-",
                             str(info["failed"]))  # fmt: skip
            stdout.print(rows)
            rules = table("rule", "instances removed", title=(
                f"{result['instances']['candidates']} candidates, "
                f"{result['instances']['kept']} kept"))  # fmt: skip
            for rule, count in result["rules"].items():
                rules.add_row(rule, str(count))
            stdout.print(rules)
            patches = result["patches"]
            stdout.print(
                f"{result['images']} images, {patches['total']} patches ({patches['done_before']}"
                f" done before, {patches['processed']} processed); {result['samples']} samples "
                f"in {result['seconds']:.1f} s ({result['samples_per_second'] or 0:.2f}/s); "
                f"MLLM calls {result['mllm']['calls']} ({result['mllm']['cached']} cached, "
                f"{result['mllm']['failed']} failed)", highlight=False,
            )  # fmt: skip
            for failure in result["failed_images"]:
                stderr.print(f"[red]failed[/] {failure['image']}: {failure['reason']}",
                             highlight=False)  # fmt: skip
            if patches["with_failures"]:
                stderr.print(
                    f"[yellow]warning[/]: {patches['with_failures']} patches had failures (see "
                    "stats.json); run the same command again to retry them.", highlight=False)
            for kind, path in result["outputs"]["lists"].items():
                stdout.print(f"  {kind:12} {path}", highlight=False)
            stdout.print(f"  {'stats':12} {result['outputs']['stats']}", highlight=False)
            for path in result["outputs"]["instances"]:
                stdout.print(f"  {'instances':12} {path}", highlight=False)

        emit(result, as_json, human)
        if result["failed_images"] or result["patches"]["with_failures"]:
            sys.exit(EXIT_USER_ERROR)

    @click.command("run")
    @click.argument("tasks", type=click.Path(dir_okay=False))
    @option("engine", "--engine", type=click.Choice(ASK_ENGINES), default="geoseg",
            show_default=True, help="The ask engine of referring and reasoning lines.")
    @option("segment_engine", "--segment-engine", type=click.Choice(SEGMENT_ENGINES),
            default="sam+clip", show_default=True, help="The segment engine of classes lines.")
    @mllm_options
    @model_options("segmenter", "clip", "sam3", "featup", "unigeoseg")
    @ask_options
    @generation_options
    @simplify_option
    @raster_flags
    @output_options
    @common_options
    def run(tasks: str, as_json: bool, debug: bool, **kw: Any) -> None:
        """Run every instruction of TASKS (JSONL) through the route its task names.

        Each line: {"image", "task": interactive|referring|reasoning|classes, "instruction"?,
        "points"?, "negatives"?, "boxes"? (pixels), "classes"?, "mask"? (ground truth),
        "id"?}. Interactive coordinates may also sit in the instruction as UniGeoSeg writes
        them (x0,y0=[a,b], x1,y1=[c,d] or [x,y], normalised 0-1). Interactive lines go to
        the segmenter, referring and reasoning to the ask engines (--mllm-url), classes to
        segment. Outputs per line in OUTPUT/<id>/, OUTPUT/results.jsonl and
        OUTPUT/report.json (gIoU/cIoU per task where a mask is given).
        """
        from terramask import api
        from terramask.options import PolygonOptions

        mllm = mllm_from(kw)
        given = mllm.url or mllm.model
        options = dict(
            mllm=mllm if given else None, models=models_from(kw),
            ask_options=ask_options_from(kw), generation=generation_from(kw, "fast"),
            raster=raster_of(kw), polygons=built(PolygonOptions, {"simplify": kw.pop("simplify")}),
        )  # fmt: skip
        if options["generation"] is None:
            options.pop("generation")
        with progress_reporter(not as_json) as report:
            result = api.run_instructions(tasks, progress=report, **options, **kw)

        def human() -> None:
            rows = table("task", "done", "already done", "failed", "gIoU", "cIoU", "scored")
            for task, counts in result["by_task"].items():
                scores = result["scores"].get(task, {})
                rows.add_row(
                    task, str(counts.get("done", 0)), str(counts.get("already done", 0)),
                    str(counts.get("failed", 0)),
                    "-" if scores.get("giou") is None else f"{scores['giou']:.2f}",
                    "-" if scores.get("ciou") is None else f"{scores['ciou']:.2f}",
                    str(scores.get("samples", 0)),
                )  # fmt: skip
            stdout.print(rows)
            for failure in result["failed"]:
                stderr.print(f"[red]failed[/] line {failure['line']} ({failure['id']}): "
                             f"{failure['reason']}", highlight=False)  # fmt: skip
            for kind, path in result["outputs"].items():
                stdout.print(f"  {kind:8} {path}", highlight=False)

        emit(result, as_json, human)
        if result["failed"]:
            sys.exit(EXIT_USER_ERROR)

    return [data, run]
