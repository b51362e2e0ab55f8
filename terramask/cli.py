"""The `terramask` command line: one command per verb of `terramask.api`.

Flags are declared with the Python option they set (`Tiling.tile` for --tile), so the
command line builds the options objects of `terramask.options` from what was typed, checks
with `terramask.rules` that every flag typed applies, and shows library messages with its
own flag names in place of the Python ones.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from terramask import __version__
from terramask.errors import TerraMaskError
from terramask.options import (
    AMG_MODES,
    ASK_ENGINES,
    BOXES_MODES,
    COORDS,
    GENERATION_PRESETS,
    INDEX_CRS,
    PROMPT_ENGINES,  # UniGeoSeg (#16)
    PROMPT_TILING,
    PROTOCOLS,
    REFINEMENTS,
    SEGMENT_ENGINES,
    UNIGEOSEG_DTYPES,  # UniGeoSeg (#16)
    UNIGEOSEG_PROMPTS,  # UniGeoSeg (#16)
    UNIGEOSEG_TASKS,  # UniGeoSeg (#16)
    AskOptions,
    GenerationSettings,
    MLLMOptions,
    ModelOptions,
    PolygonOptions,
    RasterOptions,
    RayOptions,
    Tiling,
    UniGeoSegOptions,  # UniGeoSeg (#16)
)

stderr = Console(stderr=True)
stdout = Console()

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------- flags and Python names


class NamedOption(click.Option):
    """A click option that knows the Python option it sets (`Tiling.tile`, `output`)."""

    def __init__(self, *args: Any, python_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.python_name = python_name

    @property
    def flag(self) -> str:
        """How messages name it: its long form (both forms for on/off flags)."""
        long = [o for o in self.opts if o.startswith("--")] or self.opts
        flag = max(long, key=len)
        return f"{flag}/{self.secondary_opts[0]}" if self.secondary_opts else flag


def option(python_name: str, *decls: str, **attrs: Any) -> Callable[[Any], Any]:
    """`click.option` for the Python option `python_name`."""
    return click.option(*decls, cls=NamedOption, python_name=python_name, **attrs)


def default_of(options_class: type, name: str, obj: object | None = None) -> str:
    """An options class's default for a field, as help text shows it ([default: ...])."""
    value = getattr(obj if obj is not None else options_class(), name)
    return str(value)


def _named_options(command: click.Command | None) -> list[NamedOption]:
    return [p for p in getattr(command, "params", []) if isinstance(p, NamedOption)]


def _flags() -> dict[str, str]:
    """Python option name -> flag: the current command's first, then every command's."""
    table: dict[str, str] = {}
    ctx = click.get_current_context(silent=True)
    current = ctx.command if ctx else None
    for command in [current, *cli.commands.values(), *models.commands.values()]:
        for param in _named_options(command):
            table.setdefault(param.python_name, param.flag)
    return table


_PYTHON_NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


def for_cli(message: str) -> str:
    """A library message with each Python option name replaced by its flag."""
    flags = _flags()
    return _PYTHON_NAME.sub(lambda m: flags.get(m[1], m[0]), message)


def typed(ctx: click.Context) -> list[str]:
    """The Python names of the options the user typed (not left at their defaults)."""
    return [
        p.python_name
        for p in _named_options(ctx.command)
        if ctx.get_parameter_source(p.name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]


def built(options_class: type, values: dict[str, Any], base: object | None = None) -> Any:
    """An options object from the flags given (None: not given, the default stands)."""
    given = {k: v for k, v in values.items() if v is not None}
    if base is not None:
        given = {f: getattr(base, f) for f in base.__dataclass_fields__} | given  # type: ignore[attr-defined]
    return options_class(**given)


# ---------------------------------------------------------------- option parsing


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != n:
        raise click.BadParameter(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _points(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list:
    return [_floats(v, 2, "a point (X,Y)") for v in values]


def _boxes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list:
    return [_floats(v, 4, "a box (X1,Y1,X2,Y2)") for v in values]


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    try:
        bands = tuple(int(b) for b in value.split(",") if b.strip())
    except ValueError:
        raise click.BadParameter(f"bands are 1-based integers like 4,3,2, got {value!r}") from None
    if not bands:
        raise click.BadParameter("give at least one band, e.g. --bands 4,3,2")
    return bands


# ---------------------------------------------------------------- shared behaviour


def _run_safely(func: Callable[..., Any]) -> Callable[..., Any]:
    """User errors print one paragraph and exit 2; bugs say how to see the traceback.

    With --json, a failure also prints a JSON object {"error": {...}} on stdout.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = kwargs.get("debug") or (ctx.obj or {}).get("debug", False)
        as_json = kwargs.get("as_json", False)
        try:
            return func(*args, **kwargs)
        except TerraMaskError as exc:
            if debug:
                raise
            _fail(type(exc).__name__, for_cli(str(exc)), "error", EXIT_USER_ERROR, as_json)
        except KeyboardInterrupt:
            _fail(
                "KeyboardInterrupt",
                "no incomplete output file was left. Finished scenes and tiles are kept: run "
                "the same command again to continue where it stopped.",
                "interrupted",
                EXIT_INTERRUPTED,
                as_json,
            )
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if debug:
                raise
            _fail(
                type(exc).__name__,
                f"unexpected error ({type(exc).__name__}: {exc}). This is a bug in TerraMask, "
                "not in your input; run again with --debug for the traceback and report it.",
                "error",
                EXIT_BUG,
                as_json,
            )

    return wrapper


def _fail(kind: str, message: str, label: str, code: int, as_json: bool) -> None:
    colour = "yellow" if label == "interrupted" else "bold red"
    stderr.print(f"[{colour}]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps({"error": {"type": kind, "message": message, "exit_code": code}}))
    sys.exit(code)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--json and --debug on every command."""
    func = click.option("--debug", is_flag=True, help="Show tracebacks.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")(func)
    return _run_safely(func)


def tiling_options(default: Tiling = Tiling()) -> Callable[[Callable[..., Any]], Any]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = option(
            "Tiling.overlap", "--overlap", type=int,
            help=f"Overlap between tiles, pixels [default: {default.overlap}].",
        )(func)  # fmt: skip
        return option(
            "Tiling.tile", "--tile", type=int,
            help=f"Tile size, pixels [default: {default.tile}].",
        )(func)  # fmt: skip

    return decorate


def raster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = option(
        "RasterOptions.stretch", "--stretch",
        help="auto (8-bit as is, else 2-98 percentiles per scene), none, or P1,P2 "
        f"[default: {default_of(RasterOptions, 'stretch')}].",
    )(func)  # fmt: skip
    func = option(
        "RasterOptions.asset", "--asset",
        help="STAC asset to read when SCENE is a STAC item or item collection JSON.",
    )(func)  # fmt: skip
    return option("RasterOptions.bands", "--bands", callback=_bands,
                  help="1-based bands to use as R,G,B, e.g. 4,3,2.")(func)  # fmt: skip


def raster_from(kw: dict[str, Any]) -> RasterOptions:
    return built(RasterOptions, {k: kw.pop(k) for k in ("bands", "stretch", "asset")})


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = option("overwrite", "--overwrite", is_flag=True,
                  help="Replace existing outputs of the same name.")(func)  # fmt: skip
    return option("output", "-o", "--output", default="terramask-out", show_default=True,
                  help="Output folder; files are named after the input.")(func)  # fmt: skip


def many_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return option(
        "index_crs", "--index-crs", default=INDEX_CRS, show_default=True,
        help="Many scenes: the CRS of index.gpkg, which holds every scene's polygons.",
    )(func)  # fmt: skip


def model_options(*roles: str) -> Callable[[Callable[..., Any]], Any]:
    """--segmenter, --clip, --sam3 (those named) and --device."""
    helps = {
        "segmenter": "SAM-family model: hub id, alias or local folder.",
        "clip": "CLIP-family model: hub id, alias or local folder.",
        "sam3": "SAM 3 model (facebook/sam3, gated): hub id or local folder.",
        "featup": "SegEarth-OV's SimFeatUp upsampler for dense CLIP: checkpoint file, folder "
        "or hub id [default: bilinear].",
        "unigeoseg": "UniGeoSeg checkpoint (--engine unigeoseg): alias, hub id or folder "
        "[default: nishuo1999/UniGeoSeg].",  # UniGeoSeg (#16)
    }

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = option("ModelOptions.device", "--device",
                      help="auto, cpu, cuda, cuda:1, mps [default: auto].")(func)  # fmt: skip
        for role in reversed(roles):
            func = option(f"ModelOptions.{role}", f"--{role}", help=helps[role])(func)
        return func

    return decorate


def models_from(kw: dict[str, Any]) -> ModelOptions:
    roles = ("segmenter", "clip", "sam3", "featup", "device", "unigeoseg")  # unigeoseg: #16
    return built(ModelOptions, {k: kw.pop(k, None) for k in roles})


def mllm_options(func: Callable[..., Any]) -> Callable[..., Any]:
    d = MLLMOptions()
    for decorator in reversed([
        option("MLLMOptions.url", "--mllm-url",
               help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."),
        option("MLLMOptions.model", "--mllm-model",
               help="Model name at that endpoint, or a local Qwen-VL (alias, hub id, folder)."),
        option("MLLMOptions.key", "--mllm-key", help="API key [default: $OPENAI_API_KEY]."),
        option("MLLMOptions.coords", "--mllm-coords", type=click.Choice(COORDS),
               help="The coordinate frame the model is asked for and read in: auto (from the "
               "model: Qwen3-VL 0-1000, Qwen2.5-VL and others pixels of the image as sent), "
               "pixel, norm1000, norm1 [default: auto]."),
        option("MLLMOptions.max_side", "--mllm-max-side", type=int,
               help="Long side the image is shrunk to before it is sent [default: 1024]."),
        option("MLLMOptions.timeout", "--mllm-timeout", type=float,
               help=f"Seconds to wait for one reply [default: {d.timeout:g}]."),
        option("MLLMOptions.retries", "--mllm-retries", type=int,
               help="Retries on timeouts, 429 and 5xx (exponential back-off with jitter) "
               f"[default: {d.retries}]."),
        option("MLLMOptions.concurrency", "--mllm-concurrency", type=int,
               help="Requests in flight at once (many scenes or samples: replies are fetched "
               f"ahead, concurrently) [default: {d.concurrency}]."),
        option("MLLMOptions.cache", "--mllm-cache/--no-mllm-cache", default=None,
               help="Reuse earlier replies to the same image, prompt and model "
               "($TERRAMASK_CACHE) [default: on]."),
        # tuned clicks (#13)
        option("MLLMOptions.adapter", "--adapter", type=click.Path(file_okay=False),
               help="A LoRA adapter folder of `terramask train clicks`, loaded into the local "
               "--mllm-model (its base) for --engine clicks."),
    ]):  # fmt: skip
        func = decorator(func)
    return func


def mllm_from(kw: dict[str, Any]) -> MLLMOptions:
    names = ("url", "model", "key", "coords", "max_side", "timeout", "retries", "concurrency",
             "cache")  # fmt: skip
    return built(MLLMOptions, {n: kw.pop(f"mllm_{n}") for n in names}
                 | {"adapter": kw.pop("adapter", None)})  # tuned clicks (#13)


def ask_options(func: Callable[..., Any]) -> Callable[..., Any]:
    d = AskOptions()
    for decorator in reversed([
        option("AskOptions.refine", "--refine", type=click.Choice(REFINEMENTS),
               help=f"How MLLM boxes are corrected before segmenting [default: {d.refine}]."),
        option("AskOptions.calibration", "--calibration", type=click.Path(dir_okay=False),
               help="The file `terramask calibrate` wrote (with --refine calibrated)."),
        option("AskOptions.overview_size", "--overview-size", type=int,
               help="Long side of the scene overview the MLLM is shown (clients may shrink "
               f"it further) [default: {d.overview_size}]."),
        option("AskOptions.boxes", "--boxes", type=click.Choice(BOXES_MODES),
               help="The boxes of a reply the geoseg and box engines segment: one (the first, "
               f"as GeoSeg's reference) or all (their union) [default: {d.boxes}]."),
        option("AskOptions.max_objects", "--max-objects", type=int,
               help="At most this many boxes or click groups of one reply are segmented "
               f"[default: {d.max_objects}]."),
    ]):  # fmt: skip
        func = decorator(func)
    return func


def ask_options_from(kw: dict[str, Any]) -> AskOptions:
    names = ("refine", "calibration", "overview_size", "max_objects", "boxes")
    return built(AskOptions, {n: kw.pop(n) for n in names})


# ---------------------------------------------------------------- UniGeoSeg (#16) options
_UNIGEOSEG_FLAGS = {  # field: (flag, click attributes, help)
    "task": ("--unigeoseg-task", {"type": click.Choice(UNIGEOSEG_TASKS)},
             "UniGeoSeg's task: interactive, referring or reasoning [default: from the "
             "instruction: coordinates interactive, a question reasoning, else referring]."),
    "prompt": ("--unigeoseg-prompt", {"type": click.Choice(UNIGEOSEG_PROMPTS)},
               "UniGeoSeg's template: benchmark (the released GeoSeg-Bench/EarthReason one) or "
               "referring (its RRSIS-D one) [default: benchmark; eval: the data set's]."),
    "explain": ("--explain/--no-explain", {"default": None},
                "Also generate UniGeoSeg's explanation [default: on; eval: off]."),
    "max_new_tokens": ("--max-new-tokens", {"type": int},
                       "Longest explanation, tokens [default: 64]."),
    "second_look": ("--second-look/--no-second-look", {"default": None},
                    "On scenes over two canvases wide, segment again at full resolution around "
                    "the overview's answer [default: on]."),
    "dtype": ("--unigeoseg-dtype", {"type": click.Choice(UNIGEOSEG_DTYPES)},
              "Precision of UniGeoSeg's weights [default: auto (bf16 on GPUs, fp32 on CPU); "
              "eval: fp32, as the released evaluation]."),
}  # fmt: skip


def unigeoseg_options(*names: str) -> Callable[[Callable[..., Any]], Any]:
    """The UniGeoSegOptions flags `names` (all when none are named)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names or tuple(_UNIGEOSEG_FLAGS)):
            flag, attrs, help_text = _UNIGEOSEG_FLAGS[name]
            func = option(f"UniGeoSegOptions.{name}", flag, f"unigeoseg_{name}", help=help_text,
                          **attrs)(func)  # fmt: skip
        return func

    return decorate


def unigeoseg_from(kw: dict[str, Any]) -> UniGeoSegOptions | None:
    """UniGeoSegOptions from the flags given; None when none was."""
    values = {n: kw.pop(f"unigeoseg_{n}", None) for n in _UNIGEOSEG_FLAGS}
    if all(v is None for v in values.values()):
        return None
    return built(UniGeoSegOptions, values)
# ---------------------------------------------------------------- end of UniGeoSeg (#16) options


def generation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    d = GenerationSettings()
    func = option(
        "GenerationSettings.amg", "--amg", type=click.Choice(AMG_MODES),
        help="sam+clip: reference (segment-anything's automatic mask generator: eval's "
        "default) or fast (low-res stability, mask NMS, clean-up, pruning: segment's default).",
    )(func)  # fmt: skip
    func = option(
        "GenerationSettings.prune", "--prune/--no-prune", default=None,
        help="sam+clip: decode the point grid coarse to fine, skipping points inside a mask "
        "already found whose dense class is the mask's; --no-prune decodes every point "
        "[default: --prune].",
    )(func)  # fmt: skip
    return option(
        "GenerationSettings.grid", "--grid", type=int,
        help=f"sam+clip: SAM point grid, N x N points [default: {d.grid}].",
    )(func)  # fmt: skip


def generation_from(kw: dict[str, Any], default_mode: str) -> GenerationSettings | None:
    """The mask generation the flags ask for: `--amg`'s preset (else the verb's default mode)
    with `--grid` and `--prune` over it; None when no flag was given."""
    mode = kw.pop("amg")
    values = {"grid": kw.pop("grid"), "prune": kw.pop("prune")}
    if mode is None and all(v is None for v in values.values()):
        return None
    return built(GenerationSettings, values, GENERATION_PRESETS[mode or default_mode])


def simplify_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return option("PolygonOptions.simplify", "--simplify", type=float,
                  help="Simplify polygons by this tolerance (CRS units).")(func)  # fmt: skip


@contextmanager
def progress_reporter(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar per stage, fed by the API's (stage, done, total) callbacks."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}
        last: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks or done < last[stage]:
                # a new stage, or the same stage for the next scene: start afresh, counting
                # what a resumed run finished before as done (it must not inflate the rate)
                if stage in tasks:
                    bar.remove_task(tasks[stage])
                tasks[stage] = bar.add_task(stage, total=total, completed=done)
            last[stage] = done
            bar.update(tasks[stage], completed=done, total=total)

        yield report


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item, when slower than one a second)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("", style="progress.data.speed")
        label = f"{speed:.2f}/s" if speed >= 1 else f"{1 / speed:.1f} s each"
        return Text(label, style="progress.data.speed")


def table(*columns: str, title: str | None = None) -> Table:
    """A table that folds long cells (paths, hub ids) instead of cutting them."""
    out = Table(title=title)
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def emit(result: dict, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        human()


def _one_or_many(
    scene: str,
    raster: RasterOptions,
    as_json: bool,
    *,
    one: Callable[[Any], Any],
    many: Callable[[Any], Any],
) -> Any:
    """Run a verb on SCENE, or its `*_many` twin when SCENE names a set of scenes (a folder,
    glob, .txt list or STAC JSON, however many it holds). A set's summary is printed here
    (and None returned); one scene's result is returned for the command to print."""
    from terramask.scene import names_many

    with progress_reporter(not as_json) as report:
        if raster.asset is None and not names_many(scene):
            return one(report)
        summary = many(report)
    _finish_batch(summary, as_json)
    return None


def _check_typed(ctx: click.Context, table: dict[str, str]) -> None:
    """Refuse every flag typed that does not apply (see `terramask.rules`)."""
    from terramask import rules

    rules.refuse(typed(ctx), table)


# ---------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="terramask")
@click.option("--debug", is_flag=True, help="Show tracebacks for every command.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Segment satellite and aerial imagery from clicks, boxes, class names or questions."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("scene")
@option("points", "--point", "points", multiple=True, callback=_points, help="Positive click X,Y.")
@option("negatives", "--negative", "negatives", multiple=True, callback=_points,
        help="Negative click X,Y.")  # fmt: skip
@option("boxes", "--box", "boxes", multiple=True, callback=_boxes, help="Box X1,Y1,X2,Y2.")
@option("crs", "--crs",
        help="CRS of the --point/--box coordinates (e.g. EPSG:4326); without it they are "
        "scene pixels.")  # fmt: skip
@option(
    "prompt_file", "--prompts", "prompt_file", type=click.Path(dir_okay=False),
    help="Vector file of prompts: points (field `positive`, `group`) and polygons (boxes).",
)  # fmt: skip
@option("prompt_layer", "--prompts-layer", "prompt_layer", help="Layer of the prompts file.")
@option("engine", "--engine", type=click.Choice(PROMPT_ENGINES), default="sam",  # UniGeoSeg (#16)
        show_default=True, help="sam: the SAM-family --segmenter; unigeoseg: 1-3 positive "
        "clicks or one box per object as UniGeoSeg's interactive instruction.")  # fmt: skip
@model_options("segmenter", "unigeoseg")  # unigeoseg: #16
@unigeoseg_options("dtype")  # UniGeoSeg (#16)
@simplify_option
@raster_options
@tiling_options(PROMPT_TILING)
@output_options
@many_options
@common_options
@click.pass_context
def prompt(ctx: click.Context, scene: str, as_json: bool, debug: bool, **kw: Any) -> None:
    """Segment the objects under clicks and boxes on SCENE (any GDAL raster, any size).

    All --point/--negative clicks form one object; each --box is its own object (a single
    box joins the clicks). Writes SCENE_mask.tif (object ids, COG), SCENE_score.tif,
    SCENE.gpkg, SCENE.geojson (EPSG:4326), SCENE_preview.png and SCENE.json.

    SCENE may also be many scenes (a folder, glob, .txt list or STAC JSON, as for segment):
    the same prompts go to each. Prompts in map coordinates reach only the scenes they fall
    in; pixel prompts mean the same pixels in every scene. A scene with no prompt inside is
    skipped (its report says why), not failed.
    """
    from terramask import api, rules

    has_coordinates = bool(kw["points"] or kw["negatives"] or kw["boxes"])
    _check_typed(ctx, rules.prompt_rules(has_coordinates=has_coordinates,
                                         engine=kw["engine"]))  # engine: #16
    raster = raster_from(kw)
    options = dict(
        unigeoseg=unigeoseg_from(kw),  # UniGeoSeg (#16)
        models=models_from(kw),
        raster=raster,
        tiling=built(
            Tiling, {"tile": kw.pop("tile"), "overlap": kw.pop("overlap")}, PROMPT_TILING
        ),
        polygons=built(PolygonOptions, {"simplify": kw.pop("simplify")}),
    )
    index_crs = kw.pop("index_crs")
    result = _one_or_many(
        scene, raster, as_json,
        one=lambda report: api.prompt(scene, progress=report, **options, **kw),
        many=lambda report: api.prompt_many(
            scene, index_crs=index_crs, progress=report, **options, **kw
        ),
    )  # fmt: skip
    if result is None:
        return

    def human() -> None:
        rows = table("id", "name", "score", "area m²", "empty", title="objects")
        for obj in result.objects:
            area = obj["area_m2"]
            rows.add_row(
                str(obj["id"]),
                escape(obj["name"]),
                f"{obj['score']:.3f}",
                "-" if area is None else f"{area:,.1f}",
                "yes" if obj["empty"] else "",
            )
        stdout.print(rows)
        _print_files(result)

    emit(result.to_dict(), as_json, human)


@cli.command()
@click.argument("scene")
@option("classes", "-c", "--class", "classes", multiple=True, required=True,
        help="Class, with synonyms: road,street")  # fmt: skip
@option("engine", "--engine", type=click.Choice(SEGMENT_ENGINES), default="sam+clip",
        show_default=True)  # fmt: skip
@model_options("segmenter", "clip", "sam3", "featup")
@generation_options
@option("threshold", "--threshold", type=float,
        help="Probability (0-1) below which a pixel is background (or 'no class').")  # fmt: skip
@option("background", "--background", help="Name of the background class (added if not a class).")
@simplify_option
@option("PolygonOptions.min_area", "--min-area", type=int,
        help="Drop polygons smaller than this many pixels [default: 0].")  # fmt: skip
@option(
    "RayOptions.address", "--ray", metavar="local|ADDRESS",
    help="Run tiles on Ray actors: 'local' starts Ray here, ADDRESS joins a cluster "
    "(needs pip install 'terramask[ray]'). Outputs are the same as without it.",
)  # fmt: skip
@option("RayOptions.workers", "--ray-workers", type=int,
        help="Model-holding Ray actors [default: one per GPU, else one per 2 CPUs].")  # fmt: skip
@raster_options
@tiling_options()
@output_options
@many_options
@common_options
@click.pass_context
def segment(ctx: click.Context, scene: str, as_json: bool, debug: bool, **kw: Any) -> None:
    """Label every pixel of SCENE with one of the given classes (open vocabulary).

    SCENE may also be a folder, a glob ("tiles/*.tif"), a .txt list of paths/URLs or a STAC
    item / item collection JSON: each scene gets its own outputs, all polygons also go to
    index.gpkg (field `scene`), summary.json says what happened, and re-running the same
    command skips scenes already done.

    Finished tiles are kept in OUTPUT/.terramask-work until a scene's outputs are written:
    after a crash or Ctrl-C, the same command continues where it stopped, and the outputs are
    byte-identical to an uninterrupted run's.

    Each -c is a class, with synonyms after commas (-c "road,street"); the first name names
    it. Writes SCENE_labels.tif (class values 1..K, 0 no class, colour table), SCENE_score.tif,
    SCENE.gpkg / SCENE.geojson (polygons merged across tiles), SCENE_preview.png, SCENE.json.
    """
    from terramask import api, rules

    address, workers = kw.pop("ray"), kw.pop("ray_workers")
    _check_typed(ctx, rules.segment_rules(kw["engine"], ray=address is not None))
    raster = raster_from(kw)
    options = dict(
        models=models_from(kw),
        generation=generation_from(kw, "fast") or GenerationSettings(),
        raster=raster,
        tiling=built(Tiling, {"tile": kw.pop("tile"), "overlap": kw.pop("overlap")}),
        polygons=built(
            PolygonOptions, {"simplify": kw.pop("simplify"), "min_area": kw.pop("min_area")}
        ),
        ray=None if address is None else RayOptions(address, workers),
    )
    index_crs = kw.pop("index_crs")
    classes = kw.pop("classes")
    result = _one_or_many(
        scene, raster, as_json,
        one=lambda report: api.segment(scene, classes, progress=report, **options, **kw),
        many=lambda report: api.segment_many(
            scene, classes, index_crs=index_crs, progress=report, **options, **kw
        ),
    )  # fmt: skip
    if result is None:
        return

    def human() -> None:
        from terramask.pipeline.batch import peak_rss_mib

        rows = table("value", "class", "synonyms", "pixels", "area m²", "polygons")
        for c in result.classes:
            area = "-" if c["area_m2"] is None else f"{c['area_m2']:,.1f}"
            rows.add_row(
                str(c["value"]),
                escape(c["name"]),
                escape(", ".join(c["synonyms"][1:])),
                f"{c['pixels']:,}",
                area,
                str(c["polygons"]),
            )
        stdout.print(rows)
        tiles = result.tiles
        resumed = f", {tiles['resumed']} finished before and kept" if tiles["resumed"] else ""
        stdout.print(
            f"{tiles['total']} tiles ({tiles['skipped_no_data']} without data skipped{resumed}) "
            f"in {result.timings['total']:.1f} s, peak memory {peak_rss_mib():.0f} MiB",
            highlight=False,
        )
        _print_files(result)

    emit(result.to_dict(), as_json, human)


def _print_files(result: Any) -> None:
    """The layers a run wrote, then their sidecars (GDAL .aux.xml, QGIS styles)."""
    for kind, path in {**result.outputs, **getattr(result, "sidecars", {})}.items():
        stdout.print(f"  {kind:12} {escape(str(path))}", highlight=False)


def _finish_batch(summary: Any, as_json: bool) -> None:
    """Print a batch's summary; exit 2 when a scene failed (the others are kept)."""
    emit(summary.to_dict(), as_json, lambda: _batch_summary(summary))
    if summary.failed:
        sys.exit(EXIT_USER_ERROR)


def _batch_summary(summary: Any) -> None:
    """Scenes processed, resumed, skipped and failed (with reasons), tiles, time, peak memory."""
    processed = f"{len(summary.processed)} processed"
    if summary.nothing_found:
        processed += f" ({len(summary.nothing_found)} with nothing found)"
    skipped = f"{len(summary.skipped)} skipped, " if summary.skipped else ""
    tiles = ""
    if summary.tiles or summary.tiles_skipped:
        tiles = f"{summary.tiles} tiles ({summary.tiles_skipped} without data skipped) "
    stdout.print(
        f"{summary.scenes} scenes: {processed}, {skipped}"
        f"{len(summary.already_done)} already done, {len(summary.failed)} failed; "
        f"{tiles}in {summary.seconds:.1f} s, peak memory {summary.peak_rss_mib:.0f} MiB",
        highlight=False,
    )
    for skip in summary.skipped:
        stdout.print(
            f"[yellow]skipped[/] {escape(skip['scene'])}: {escape(skip['reason'])}",
            highlight=False,
        )
    for failure in summary.failed:
        stderr.print(
            f"[red]failed[/] {escape(failure['scene'])}: {escape(for_cli(failure['reason']))}"
        )
    for left in summary.index_left_out:
        stdout.print(
            f"[yellow]not in the index[/] {escape(left['scene'])}: {escape(left['reason'])}",
            highlight=False,
        )
    if summary.index:
        stdout.print(f"  index    {escape(summary.index)} ({summary.index_crs})", highlight=False)
    stdout.print(f"  summary  {escape(str(summary.summary))}", highlight=False)


@cli.command()
@click.argument("scene")
@click.argument("question")
@option(
    "engine", "--engine", type=click.Choice(ASK_ENGINES), default="geoseg", show_default=True,
    help="geoseg: refined box + dual routes; clicks: MLLM clicks into SAM; box: MLLM box; "
    "unigeoseg: UniGeoSeg reads the question and segments by itself (no MLLM).",  # (#16)
)  # fmt: skip
@mllm_options
@model_options("segmenter", "clip", "sam3", "unigeoseg")  # unigeoseg: #16
@ask_options
@unigeoseg_options()  # UniGeoSeg (#16)
@simplify_option
@raster_options
@option(
    "tile", "--tile", type=int, default=Tiling.tile, show_default=True,
    help="Largest window segmented at full resolution, pixels.",
)  # fmt: skip
@output_options
@many_options
@common_options
@click.pass_context
def ask(
    ctx: click.Context, scene: str, question: str, as_json: bool, debug: bool, **kw: Any
) -> None:
    """Answer QUESTION about SCENE with a mask, polygons and the model's words.

    Writes SCENE_mask.tif, SCENE_score.tif, SCENE.gpkg / SCENE.geojson, SCENE_preview.png
    and SCENE.json (the question, the raw reply, parsed and refined boxes in pixel and map
    coordinates, the engine and model names). "Nothing found" is an answer, not an error.

    SCENE may also be many scenes (a folder, glob, .txt list or STAC JSON, as for segment):
    the same question for each, replies fetched --mllm-concurrency at a time into the cache.
    """
    from terramask import api, rules

    mllm = mllm_from(kw)
    local = not mllm.url and bool(mllm.model)
    _check_typed(ctx, rules.ask_rules(kw["engine"], local_mllm=local))
    raster = raster_from(kw)
    options = dict(
        mllm=mllm,
        models=models_from(kw),
        ask_options=ask_options_from(kw),
        raster=raster,
        polygons=built(PolygonOptions, {"simplify": kw.pop("simplify")}),
        unigeoseg=unigeoseg_from(kw),  # UniGeoSeg (#16)
    )
    index_crs = kw.pop("index_crs")
    result = _one_or_many(
        scene, raster, as_json,
        one=lambda report: api.ask(scene, question, progress=report, **options, **kw),
        many=lambda report: api.ask_many(
            scene, question, index_crs=index_crs, progress=report, **options, **kw
        ),
    )  # fmt: skip
    if result is None:
        return

    def human() -> None:
        stdout.print(Text(for_cli(result.answer), style="bold"))
        for warning in result.details.get("warnings", []):
            stdout.print(Text.assemble(("  note: ", "yellow"), for_cli(warning)))
        _print_files(result)

    emit(result.to_dict(), as_json, human)


class EvalCommand(click.Command):
    """`eval`, whose help ends with every preset's expected layout and label values."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from terramask.eval.presets import preset_rows

        with formatter.section("OVSS presets (layout under --root; label values as stored)"):
            formatter.write_dl([
                (row["name"], f"{row['images']} + {row['labels']}: {row['label_values']}"
                 + ("; reduce zero label" if row["reduce_zero_label"] == "yes" else ""))
                for row in preset_rows()
            ])  # fmt: skip


@cli.command("eval", cls=EvalCommand)
@click.argument("dataset", required=False)
@option(
    "list_presets", "--list", "list_presets", is_flag=True,
    help="List the OVSS presets: layout, label values, threshold, source; then exit.",
)  # fmt: skip
@option("root", "--root", type=click.Path(file_okay=False),
        help="Data set folder (required unless --list).")  # fmt: skip
@option("split", "--split", default=None, help="Split folder to score (default: the preset's).")
@option("limit", "--limit", type=int, help="Evaluate the first N images only.")
@option(
    "engine", "--engine", default=None,
    help="OVSS sets: clip, sam+clip or sam3 [sam+clip]; referring/reasoning sets: geoseg, "
    "clicks, box or unigeoseg [geoseg].",  # unigeoseg: #16
)  # fmt: skip
@option("threshold", "--threshold", type=float,
        help="OVSS sets: override the preset's background threshold.")  # fmt: skip
@model_options("segmenter", "clip", "sam3", "featup", "unigeoseg")  # unigeoseg: #16
@unigeoseg_options("task", "prompt", "explain", "max_new_tokens", "dtype")  # UniGeoSeg (#16)
@generation_options
@mllm_options
@ask_options
@option(
    "protocol", "--protocol", type=click.Choice(PROTOCOLS), default="reference",
    show_default=True,
    help="Referring sets: reference (the published evaluation's samples and 512 canvas) or "
    "all-texts (every sentence or question, at the image's size).",
)  # fmt: skip
@option("judge", "--judge-url", "judge",
        help="Referring sets: an OpenAI-compatible endpoint that judges each prediction "
        "(faithfulness, localization, robustness 1-5, as GeoSeg's judge).")  # fmt: skip
@option("judge_model", "--judge-model", help="The judge's model name at --judge-url.")
@output_options
@common_options
@click.pass_context
def eval_command(
    ctx: click.Context,
    dataset: str | None,
    root: str | None,
    list_presets: bool,
    as_json: bool,
    debug: bool,
    **kw: Any,
) -> None:
    """Evaluate a method on the benchmark DATASET found under --root.

    OVSS sets (mIoU): openearthmap, loveda, isaid, potsdam, vaihingen, uavid, udd5, vdd,
    whu_aerial, whu_sat_ii, inria, xbd, chn6_cug, deepglobe_roads, massachusetts_roads,
    spacenet_roads, wbs_si. Referring/reasoning sets (gIoU, cIoU, Pr@t; needs an MLLM):
    rrsis-d, earthreason, geoseg-bench, unigeoseg-bench. Writes predictions, report.json and
    report.md under OUTPUT/DATASET_SPLIT and prints ours beside the published numbers.
    """
    from terramask import api, rules
    from terramask.eval.referring_datasets import referring_dataset_names

    if list_presets:
        _list_presets(as_json)
        return
    if dataset is None or root is None:
        raise click.UsageError("eval needs DATASET and --root (or --list to see the presets).")
    referring = dataset.strip().lower().replace("_", "-") in referring_dataset_names()
    mllm = mllm_from(kw)
    local = not mllm.url and bool(mllm.model)
    engine = kw.pop("engine")
    _check_typed(
        ctx,
        rules.evaluate_rules(
            "referring" if referring else "ovss",
            engine or ("geoseg" if referring else "sam+clip"),
            local_mllm=local,
        ),
    )
    asking = ask_options_from(kw)
    unigeoseg_options_given = unigeoseg_from(kw)  # UniGeoSeg (#16)
    judge_url, judge_model = kw.pop("judge"), kw.pop("judge_model")
    judge = None
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise click.UsageError("--judge-url and --judge-model go together.")
        judge = MLLMOptions(url=judge_url, model=judge_model)
    with progress_reporter(not as_json) as report:
        result = api.evaluate(
            dataset, root, engine=engine, models=models_from(kw),
            generation=generation_from(kw, "reference"), mllm=mllm if referring else None,
            ask_options=asking if referring else None, judge=judge, progress=report,
            unigeoseg=unigeoseg_options_given, **kw,  # UniGeoSeg (#16)
        )  # fmt: skip
    if "giou" in result:
        emit(result, as_json, lambda: _referring_summary(result))
        return

    def human() -> None:
        from terramask.eval.report import class_table

        scope = f"{result['display_name']}, {result['split'] or 'all'} split, "
        scope += f"{result['images']} images, engine {result['engine']}"
        stdout.print(class_table(result, scope))
        _published_table(result)
        for kind, path in result["outputs"].items():
            stdout.print(f"  {kind:11} {escape(str(path))}", highlight=False)
        if result["unmatched_images"]:
            stderr.print(
                f"[yellow]warning[/]: {result['unmatched_images']} images had no label of the "
                "same name and were not scored."
            )
        unexpected = result.get("unexpected_labels") or {}
        if unexpected.get("pixels"):
            from terramask.eval.report import unexpected_labels_text

            text = escape(unexpected_labels_text(unexpected))
            stderr.print(f"[yellow]warning[/]: {text}", highlight=False)

    emit(result, as_json, human)


def _published_table(result: dict) -> None:
    """The published numbers beside this run's comparable one, and whether this run was the
    published configuration (a run that differs says how)."""
    rows = table("method", "on", "metric", "value", "source", title="published (real weights)")
    for row in result.get("published", []):
        mark = " (this engine)" if row.get("ours") else ""
        rows.add_row(
            escape(row["method"]) + mark, escape(row["label"]), escape(row["metric"]),
            f"{row['value']:.1f}", escape(row.get("source", "")),
        )  # fmt: skip
    stdout.print(rows)
    comparable = result.get("comparable")
    if comparable and comparable.get("value") is not None:
        named = f" ({comparable['class']})" if comparable.get("class") else ""
        what = comparable["metric"] + named
        stdout.print(f"this run: {what} {comparable['value']:.2f}", highlight=False)
    configuration = (result.get("configuration") or {}).get("published_configuration") or {}
    if configuration.get("matches") is False:
        stdout.print(
            f"[yellow]Not the published configuration[/] of {escape(configuration['paper'])}: "
            + escape("; ".join(configuration["differences"])),
            highlight=False,
        )


def _list_presets(as_json: bool) -> None:
    """The OVSS presets as a table (every column with --json)."""
    from terramask.eval.presets import PRESET_COLUMNS, preset_rows

    rows = preset_rows()

    def human() -> None:
        shown = ("name", "display_name", "split", "images", "labels", "label_values",
                 "reduce_zero_label", "threshold")  # fmt: skip
        headings = dict(PRESET_COLUMNS)
        listing = table(*(headings[key] for key in shown), title="OVSS presets")
        for row in rows:
            listing.add_row(*(escape(row[key]) for key in shown))
        stdout.print(listing)
        stdout.print("Sources and notes: terramask eval --list --json.", highlight=False)

    emit({"presets": rows}, as_json, human)


def _referring_summary(result: dict) -> None:
    """gIoU, cIoU and Pr@t overall and per group, then the published numbers."""
    rows = table("group", "samples", "gIoU", "cIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9")

    def cells(name: str, scores: dict) -> list[str]:
        def fmt(v: object) -> str:
            return "-" if v is None else f"{v:.2f}"

        keys = ("giou", "ciou", "pr@0.5", "pr@0.7", "pr@0.9")
        return [escape(name), str(scores["samples"]), *(fmt(scores.get(k)) for k in keys)]

    rows.add_row(*cells("all", result))
    for group, scores in result.get("groups", {}).items():
        rows.add_row(*cells(group, scores))
    stdout.print(rows)
    published = table("method", "split", "task", "gIoU", "cIoU", "source",
                      title="published (real weights)")  # fmt: skip
    for row in result.get("published", []):
        cells_ = [row.get(k) for k in ("split", "task", "giou", "ciou")]
        published.add_row(escape(row["method"]), *("-" if v is None else escape(str(v))
                          for v in cells_), escape(row.get("source", "")))  # fmt: skip
    if result.get("published"):
        stdout.print(published)
    else:
        stdout.print(f"No published numbers are recorded for this data set on the "
                     f"{escape(str(result.get('split')))} split.", highlight=False)
    configuration = result.get("published_configuration") or {}
    if configuration.get("matches") is False:
        stdout.print(
            "[yellow]Not the published configuration[/]: "
            + escape("; ".join(configuration.get("differences", []))),
            highlight=False,
        )
    if result.get("failed"):
        stderr.print(f"[yellow]warning[/]: {result['failed']} samples failed (see report.json).")
    for kind, path in result["outputs"].items():
        stdout.print(f"  {kind:11} {escape(str(path))}", highlight=False)


@cli.command()
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.argument("gt_dir", type=click.Path(file_okay=False))
@option("classes", "--classes", required=True, help="Class names in index order: a,b,c.")
@option("ignore_index", "--ignore-index", type=int, default=255, show_default=True)
@option("reduce_zero_label", "--reduce-zero-label", is_flag=True,
        help="Ground truth 0 is no-data and ids start at 1 (LoveDA, ISPRS).")  # fmt: skip
@common_options
def score(pred_dir: str, gt_dir: str, as_json: bool, debug: bool, **kw: Any) -> None:
    """Score predicted label maps in PRED_DIR against GT_DIR (matched by file name)."""
    from terramask import api
    from terramask.eval.report import class_table

    with progress_reporter(not as_json) as report:
        result = api.score(pred_dir, gt_dir, progress=report, **kw)

    def human() -> None:
        from terramask.eval.report import score_notes

        stdout.print(class_table(result, f"{result['images']} images"))
        for note in score_notes(result):
            stdout.print(f"  {escape(for_cli(note))}", highlight=False)
        unmatched = result["unmatched_predictions"] + result["unmatched_ground_truth"]
        if unmatched:
            stderr.print(
                f"[yellow]warning[/]: {result['unmatched_predictions']} predictions and "
                f"{result['unmatched_ground_truth']} ground-truth files had no partner and "
                "were not scored."
            )

    emit(result, as_json, human)


@cli.command()
@click.argument("dataset")
@option("root", "--root", required=True, help="Referring/reasoning data set folder.")
@option("split", "--split", default=None, help="Split (default: the data set's).")
@option("limit", "--limit", type=int, default=50, show_default=True, help="Samples to use.")
@mllm_options
@option("output", "-o", "--output", default="refine.json", show_default=True,
        help="Where to save the fit.")  # fmt: skip
@option("overwrite", "--overwrite", is_flag=True, help="Replace an existing file.")
@option("ModelOptions.device", "--device", default="auto", show_default=True,
        help="Where a local MLLM runs: auto, cpu, cuda, cuda:1, mps.")  # fmt: skip
@common_options
@click.pass_context
def calibrate(
    ctx: click.Context, dataset: str, root: str, as_json: bool, debug: bool, **kw: Any
) -> None:
    """Fit how MLLM boxes are corrected (per-side expansion, shift) on labelled DATASET.

    DATASET is a referring/reasoning set (rrsis-d, earthreason, geoseg-bench,
    unigeoseg-bench). Use the result with `ask --refine calibrated --calibration FILE`.
    """
    from terramask import api, rules

    mllm = mllm_from(kw)
    _check_typed(ctx, rules.calibrate_rules(local_mllm=not mllm.url and bool(mllm.model)))
    with progress_reporter(not as_json) as report:
        result = api.calibrate(dataset, root, mllm=mllm, progress=report, **kw)

    def human() -> None:
        stdout.print(
            f"mean box IoU on {result['samples']} samples: none {result['iou_unrefined']:.3f}, "
            f"GeoSeg {result['iou_geoseg']:.3f}, calibrated {result['iou_calibrated']:.3f}",
            highlight=False,
        )
        stdout.print(f"saved to {escape(result['output'])}", highlight=False)

    emit(result, as_json, human)


@cli.group()
def models() -> None:
    """Which models TerraMask knows, where they are, and fetching them."""


@models.command("list")
@common_options
def models_list(as_json: bool, debug: bool) -> None:
    """Known models and whether each is available on this machine."""
    from terramask.models import list_models

    rows = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "family": spec.family,
            "hub_id": spec.hub_id,
            "local": None if found is None else str(found.path),
        }
        for spec, found in list_models()
    ]

    def human() -> None:
        listing = table("name", "kind", "family", "hub id", "available here")
        for r in rows:
            cells = (r["name"], r["kind"], r["family"], r["hub_id"] or "-", r["local"] or "no")
            listing.add_row(*(escape(c) for c in cells))
        stdout.print(listing)

    emit({"models": rows}, as_json, human)


@models.command("where")
@click.argument("model")
@click.option(
    "--kind",
    type=click.Choice(["segmenter", "image_text", "concept", "mllm"]),
    default="segmenter",
    show_default=True,
)
@common_options
def models_where(model: str, kind: str, as_json: bool, debug: bool) -> None:
    """Where MODEL (alias, hub id or folder) would be loaded from, without downloading."""
    from terramask.models import resolve_model

    found = resolve_model(model, kind=kind, allow_download=False)
    data = {"model": model, "path": str(found.path), "family": found.family, "origin": found.origin}
    human = f"{found.path}  ({found.family}, {found.origin})"
    emit(data, as_json, lambda: stdout.print(escape(human), highlight=False))


@models.command("pull")
@click.argument("model")
@common_options
def models_pull(model: str, as_json: bool, debug: bool) -> None:
    """Download MODEL into the Hugging Face cache for offline use."""
    from terramask.models import pull_model

    found = pull_model(model)
    data = {"model": model, "path": str(found.path), "family": found.family,
            "origin": found.origin}  # fmt: skip
    said = {
        "hub": f"downloaded to {found.path}",
        "cache": f"already in the Hugging Face cache: {found.path}",
        "local": f"already local: {found.path} is a {found.family} model folder; nothing to pull",
    }[found.origin]
    emit(data, as_json, lambda: stdout.print(escape(said), highlight=False))


@cli.command()
@click.option("--no-self-test", is_flag=True, help="Skip the pipeline self-test.")
@click.option("--model", "check_model", type=click.Choice(["unigeoseg"]),  # UniGeoSeg (#16)
              help="Also load this model and check its answers on a fixed sample.")
@click.option("--unigeoseg", "unigeoseg_id",  # UniGeoSeg (#16)
              help="Check this UniGeoSeg checkpoint (implies --model unigeoseg) "
              "[default: nishuo1999/UniGeoSeg].")
@common_options
def doctor(no_self_test: bool, as_json: bool, debug: bool, check_model: str | None = None,
           unigeoseg_id: str | None = None) -> None:  # check_model, unigeoseg_id: #16
    """Check the environment, GDAL, device and local models; self-test the prompt pipeline."""
    from terramask.doctor import run_doctor

    report = run_doctor(with_self_test=not no_self_test)
    if check_model == "unigeoseg" or unigeoseg_id is not None:  # UniGeoSeg (#16)
        from terramask.models.unigeoseg.doctor import add_unigeoseg_checks

        add_unigeoseg_checks(report, unigeoseg_id)

    def human() -> None:
        checks = table("check", "status", "detail")
        mark = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for check in report["checks"]:
            checks.add_row(check["name"], mark[check["status"]], escape(check["detail"]))
        stdout.print(checks)

    emit(report, as_json, human)
    if not report["ok"]:
        sys.exit(EXIT_USER_ERROR)


# ---------------------------------------------------------------- serve (issue #15)
from terramask.commands import serve as _serve  # noqa: E402 (uses the helpers above)

cli.add_command(_serve.command())
# ---------------------------------------------------------------- end of serve


# ---------------------------------------------------------------- data build, run (issue #14)
from terramask.commands import data as _data  # noqa: E402 (uses the helpers above)

for _command in _data.commands():
    cli.add_command(_command)
# ---------------------------------------------------------------- end of data build, run


# ---------------------------------------------------------------- clicks, train (issue #13)
from terramask.commands import clicks as _clicks  # noqa: E402 (uses the helpers above)

for _command in _clicks.commands():
    cli.add_command(_command)
# ---------------------------------------------------------------- end of clicks, train

# ---------------------------------------------------------------- UniGeoSeg (#16)
from terramask.commands import unigeoseg as _unigeoseg  # noqa: E402 (uses the helpers above)

_unigeoseg.attach(_clicks.train_group)
# ---------------------------------------------------------------- end of UniGeoSeg (#16)


def _show_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    """Warnings as one clean line (no source file and line), flags named as on the CLI."""
    stderr.print(
        f"[yellow]warning:[/] {escape(for_cli(str(message)))}", highlight=False, soft_wrap=True
    )


#: GDAL's block cache defaults to 5% of RAM and was the largest term of a run's peak memory;
#: TerraMask reads each block about once, so a small cache costs no speed. Users may override.
DEFAULT_GDAL_CACHEMAX_MB = "64"


def main() -> None:
    os.environ.setdefault("GDAL_CACHEMAX", DEFAULT_GDAL_CACHEMAX_MB)
    # The hub client logs every retry of a failed request; TerraMask reports the outcome in
    # one paragraph instead (see models.registry), so only its errors are let through.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    warnings.showwarning = _show_warning
    cli(obj={})


if __name__ == "__main__":
    main()
