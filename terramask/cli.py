"""The `terramask` command line: one command per verb of `terramask.api`."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
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

stderr = Console(stderr=True)
stdout = Console()

EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


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


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        bands = [int(b) for b in value.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"bands are 1-based integers like 4,3,2, got {value!r}") from None
    if not bands:
        raise click.BadParameter("give at least one band, e.g. --bands 4,3,2")
    return bands


# ---------------------------------------------------------------- shared behaviour


def _run_safely(func: Callable[..., Any]) -> Callable[..., Any]:
    """User errors print one paragraph and exit 2; bugs say how to see the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = kwargs.get("debug") or (ctx.obj or {}).get("debug", False)
        try:
            return func(*args, **kwargs)
        except TerraMaskError as exc:
            if debug:
                raise
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            stderr.print(
                "[yellow]interrupted[/]: no incomplete output file was left. Finished scenes "
                "and tiles are kept: run the same command again to continue where it stopped.",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if debug:
                raise
            stderr.print(
                f"[bold red]unexpected error[/] ({type(exc).__name__}: {escape(str(exc))}). "
                "This is a bug in "
                "TerraMask, not in your input; run again with --debug for the traceback and "
                "report it.",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_BUG)

    return wrapper


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--json and --debug on every command."""
    func = click.option("--debug", is_flag=True, help="Show tracebacks.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")(func)
    return _run_safely(func)


def tiling_options(default_overlap: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--overlap",
            type=click.IntRange(min=0),
            default=default_overlap,
            show_default=True,
            help="Overlap between tiles, pixels.",
        )(func)
        return click.option(
            "--tile",
            "tile_size",
            type=click.IntRange(min=64),
            default=1024,
            show_default=True,
            help="Tile size, pixels.",
        )(func)

    return decorate


def raster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--stretch",
        default="auto",
        show_default=True,
        help="auto (8-bit as is, else 2-98 percentiles per scene), none, or P1,P2.",
    )(func)
    return click.option(
        "--bands", callback=_bands, help="1-based bands to use as R,G,B, e.g. 4,3,2."
    )(func)


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--overwrite", is_flag=True, help="Replace existing outputs of the same name."
    )(func)
    return click.option(
        "-o",
        "--output",
        default="terramask-out",
        show_default=True,
        help="Output folder; files are named after the input.",
    )(func)


def asset_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--asset", help="STAC asset to read when SCENE is a STAC item or item collection JSON."
    )(func)


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps."
    )(func)


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
@click.option("--point", "points", multiple=True, callback=_points, help="Positive click X,Y.")
@click.option(
    "--negative", "negatives", multiple=True, callback=_points, help="Negative click X,Y."
)
@click.option("--box", "boxes", multiple=True, callback=_boxes, help="Box X1,Y1,X2,Y2.")
@click.option(
    "--crs", help="CRS of the coordinates (e.g. EPSG:4326); without it they are scene pixels."
)
@click.option(
    "--prompts",
    "prompt_file",
    type=click.Path(dir_okay=False),
    help="Vector file of prompts: points (field `positive`, `group`) and polygons (boxes).",
)
@click.option("--prompts-layer", "prompt_layer", help="Layer of the prompts file.")
@click.option("--segmenter", help="SAM-family model: hub id, alias or local folder.")
@click.option("--simplify", type=float, help="Simplify polygons by this tolerance (CRS units).")
@asset_option
@raster_options
@tiling_options(default_overlap=256)
@output_options
@device_option
@common_options
def prompt(
    scene: str,
    as_json: bool,
    debug: bool,
    **options: Any,
) -> None:
    """Segment the objects under clicks and boxes on SCENE (any GDAL raster, any size).

    All --point/--negative clicks form one object; each --box is its own object (a single
    box joins the clicks). Writes SCENE_mask.tif (object ids, COG), SCENE_score.tif,
    SCENE.gpkg, SCENE.geojson (EPSG:4326), SCENE_preview.png and SCENE.json.

    SCENE may also be many scenes (a folder, glob, .txt list or STAC JSON, as for segment):
    the same prompts go to each. Prompts in map coordinates reach only the scenes they fall
    in; pixel prompts mean the same pixels in every scene. A scene with no prompt inside is
    skipped (its report says why), not failed.
    """
    from terramask import api

    asset = options.pop("asset")
    if _many_scenes(scene, asset):
        with progress_reporter(not as_json) as report:
            summary = api.prompt_many(scene, asset=asset, progress=report, **options)
        _finish_batch(summary, as_json)
        return
    with progress_reporter(not as_json) as report:
        result = api.prompt(scene, progress=report, **options)
    data = result.to_dict()

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
        for kind, path in result.outputs.items():
            stdout.print(f"  {kind:8} {escape(str(path))}", highlight=False)

    emit(data, as_json, human)


@cli.command()
@click.argument("scene")
@click.option(
    "-c",
    "--class",
    "classes",
    multiple=True,
    required=True,
    help="Class, with synonyms: road,street",
)
@click.option("--engine", type=click.Choice(["clip", "sam+clip", "sam3"]), default="sam+clip")
@click.option("--segmenter", help="SAM-family model: hub id, alias or local folder.")
@click.option("--clip", "image_text", help="CLIP-family model: hub id, alias or local folder.")
@click.option("--sam3", help="SAM 3 model: hub id or local folder.")
@click.option("--grid", type=click.IntRange(min=1), default=29, show_default=True)
@click.option(
    "--prune/--no-prune",
    default=True,
    show_default=True,
    help="sam+clip: decode the point grid coarse to fine, skipping points inside a mask "
    "already found whose dense class is the mask's; --no-prune decodes every point.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    help="Probability below which a pixel is background (or 'no class').",
)
@click.option("--background", help="Name of the background class (added if not a class).")
@click.option("--simplify", type=float, help="Simplify polygons by this tolerance (CRS units).")
@click.option(
    "--asset", help="STAC asset to read when SCENE is a STAC item or item collection JSON."
)
@click.option(
    "--min-area",
    "min_area_px",
    type=click.IntRange(min=0),
    default=0,
    help="Drop polygons smaller than this many pixels.",
)
@click.option(
    "--ray",
    metavar="local|ADDRESS",
    help="Run tiles on Ray actors: 'local' starts Ray here, ADDRESS joins a cluster "
    "(needs pip install 'terramask[ray]'). Outputs are the same as without it.",
)
@click.option(
    "--ray-workers",
    type=click.IntRange(min=1),
    help="Model-holding Ray actors [default: one per GPU, else one per 2 CPUs].",
)
@raster_options
@tiling_options(default_overlap=128)
@output_options
@device_option
@common_options
def segment(scene: str, classes: tuple[str, ...], as_json: bool, debug: bool, **options: Any):
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
    from terramask import api

    asset = options.pop("asset")
    if _many_scenes(scene, asset):
        with progress_reporter(not as_json) as report:
            summary = api.segment_many(scene, classes, asset=asset, progress=report, **options)
        _finish_batch(summary, as_json)
        return
    with progress_reporter(not as_json) as report:
        result = api.segment(scene, classes, progress=report, **options)

    def human() -> None:
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
        from terramask.pipeline.batch import peak_rss_mib

        stdout.print(rows)
        tiles = result.tiles
        resumed = f", {tiles['resumed']} finished before and kept" if tiles["resumed"] else ""
        stdout.print(
            f"{tiles['total']} tiles ({tiles['skipped_no_data']} without data skipped{resumed}) "
            f"in {result.timings['total']:.1f} s, peak memory {peak_rss_mib():.0f} MiB",
            highlight=False,
        )
        for kind, path in result.outputs.items():
            stdout.print(f"  {kind:8} {escape(str(path))}", highlight=False)

    emit(result.to_dict(), as_json, human)


def _many_scenes(scene: str, asset: str | None) -> bool:
    """Whether SCENE names several scenes (folder, glob, list, STAC), as every verb decides."""
    from terramask.scene import expand_inputs

    return bool(asset) or len(expand_inputs(scene, asset=asset)) > 1


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
        stderr.print(f"[red]failed[/] {escape(failure['scene'])}: {escape(failure['reason'])}")
    if summary.index:
        stdout.print(f"  index    {escape(summary.index)}", highlight=False)
    stdout.print(f"  summary  {escape(str(summary.summary))}", highlight=False)


@cli.command()
@click.argument("scene")
@click.argument("question")
@click.option(
    "--engine",
    type=click.Choice(["geoseg", "clicks", "box"]),
    default="geoseg",
    show_default=True,
    help="geoseg: refined box + dual routes; clicks: MLLM clicks into SAM; box: MLLM box.",
)
@click.option("--mllm-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")
@click.option("--mllm-model", help="Model name at that endpoint, or a local Qwen-VL folder.")
@click.option("--mllm-key", help="API key (default: $OPENAI_API_KEY).")
@click.option(
    "--mllm-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
    help="Seconds to wait for one reply.",
)  # fmt: skip
@click.option(
    "--mllm-retries", type=click.IntRange(min=0), default=4, show_default=True,
    help="Retries on timeouts, 429 and 5xx (exponential back-off with jitter).",
)  # fmt: skip
@click.option(
    "--mllm-concurrency", type=click.IntRange(min=1), default=4, show_default=True,
    help="Requests in flight at once (many scenes: replies are fetched ahead, concurrently).",
)  # fmt: skip
@click.option(
    "--mllm-cache/--no-mllm-cache", default=True, show_default=True,
    help="Reuse earlier replies to the same image, prompt and model ($TERRAMASK_CACHE).",
)  # fmt: skip
@click.option("--segmenter", help="SAM-family model: hub id, alias or local folder.")
@click.option("--clip", "image_text", help="CLIP-family model: hub id, alias or local folder.")
@click.option("--sam3", help="SAM 3 model for GeoSeg's semantic route (else dense CLIP).")
@click.option(
    "--refine",
    type=click.Choice(["geoseg", "none", "calibrated"]),
    default="geoseg",
    show_default=True,
    help="How MLLM boxes are corrected before segmenting.",
)
@click.option("--calibration", type=click.Path(dir_okay=False), help="File from `calibrate`.")
@click.option(
    "--overview-size",
    type=click.IntRange(min=64),
    default=2048,
    show_default=True,
    help="Long side of the scene overview the MLLM is shown (clients may shrink it further).",
)
@click.option("--simplify", type=float, help="Simplify polygons by this tolerance (CRS units).")
@asset_option
@raster_options
@click.option(
    "--tile",
    "tile_size",
    type=click.IntRange(min=64),
    default=1024,
    show_default=True,
    help="Largest window segmented at full resolution, pixels.",
)
@output_options
@device_option
@common_options
def ask(scene: str, question: str, as_json: bool, debug: bool, **options: Any) -> None:
    """Answer QUESTION about SCENE with a mask, polygons and the model's words.

    Writes SCENE_mask.tif, SCENE_score.tif, SCENE.gpkg / SCENE.geojson, SCENE_preview.png
    and SCENE.json (the question, the raw reply, parsed and refined boxes in pixel and map
    coordinates, the engine and model names). "Nothing found" is an answer, not an error.

    SCENE may also be many scenes (a folder, glob, .txt list or STAC JSON, as for segment):
    the same question for each, replies fetched --mllm-concurrency at a time into the cache.
    """
    from terramask import api

    asset = options.pop("asset")
    if _many_scenes(scene, asset):
        with progress_reporter(not as_json) as report:
            summary = api.ask_many(scene, question, asset=asset, progress=report, **options)
        _finish_batch(summary, as_json)
        return
    with progress_reporter(not as_json) as report:
        result = api.ask(scene, question, progress=report, **options)

    def human() -> None:
        stdout.print(f"[bold]{escape(result.answer)}[/]")
        for warning in result.details.get("warnings", []):
            stdout.print(f"  [yellow]note:[/] {escape(warning)}")
        for kind, path in result.outputs.items():
            stdout.print(f"  {kind:8} {escape(str(path))}", highlight=False)

    emit(result.to_dict(), as_json, human)


@cli.command("eval")
@click.argument("dataset")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Data set folder.")
@click.option("--split", default=None, help="Split folder to score (default: the preset's).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N images only.")
@click.option(
    "--engine",
    default=None,
    help="OVSS sets: clip, sam+clip or sam3 [sam+clip]; referring/reasoning sets: geoseg, "
    "clicks or box [geoseg].",
)
@click.option("--threshold", type=float, help="Override the preset's background threshold.")
@click.option("--segmenter", help="SAM-family model: hub id, alias or local folder.")
@click.option("--clip", "image_text", help="CLIP-family model: hub id, alias or local folder.")
@click.option("--sam3", help="SAM 3 model: hub id or local folder.")
@click.option("--grid", type=click.IntRange(min=1), help="SAM point grid for sam+clip [29].")
@click.option(
    "--prune/--no-prune",
    default=None,
    help="sam+clip: decode the grid coarse to fine, skipping settled points [--prune].",
)
@click.option("--mllm-url", help="Referring/reasoning sets: OpenAI-compatible endpoint.")
@click.option("--mllm-model", help="Model name at that endpoint, or a local Qwen-VL folder.")
@click.option("--mllm-key", help="API key (default: $OPENAI_API_KEY).")
@click.option("--mllm-timeout", type=click.FloatRange(min=0.1), help="Seconds per reply [60].")
@click.option("--mllm-retries", type=click.IntRange(min=0), help="Retries per request [4].")
@click.option(
    "--mllm-concurrency", type=click.IntRange(min=1), help="Requests in flight at once [4]."
)
@click.option(
    "--refine",
    type=click.Choice(["geoseg", "none", "calibrated"]),
    default=None,
    help="Box correction for geoseg [geoseg].",
)
@click.option("--calibration", type=click.Path(dir_okay=False), help="File from `calibrate`.")
@output_options
@device_option
@common_options
def eval_command(dataset: str, root: str, as_json: bool, debug: bool, **options: Any) -> None:
    """Evaluate a method on the benchmark DATASET found under --root.

    OVSS sets (mIoU): openearthmap, loveda, isaid, potsdam, vaihingen, uavid, udd5, vdd,
    whu_aerial, whu_sat_ii, inria, xbd, chn6_cug, deepglobe_roads, massachusetts_roads,
    spacenet_roads, wbs_si. Referring/reasoning sets (gIoU, cIoU, Pr@t; needs an MLLM):
    rrsis-d, earthreason, geoseg-bench, unigeoseg-bench. Writes predictions, report.json and
    report.md under OUTPUT/DATASET_SPLIT and prints ours beside the published numbers.
    """
    from terramask import api
    from terramask.eval.report import class_table

    options = {k: v for k, v in options.items() if v is not None}
    with progress_reporter(not as_json) as report:
        result = api.evaluate(dataset, root, progress=report, **options)
    if "giou" in result:
        emit(result, as_json, lambda: _referring_summary(result))
        return

    def human() -> None:
        scope = f"{result['display_name']}, {result['split'] or 'all'} split, "
        scope += f"{result['images']} images, engine {result['engine']}"
        stdout.print(class_table(result, scope))
        published = table("method", "8-set avg mIoU", "engine", title="published (real weights)")
        for row in result["published"]:
            mark = " (this run)" if row["ours"] else ""
            published.add_row(
                escape(row["method"]), f"{row['miou']:.1f}", escape(row.get("engine", "")) + mark
            )
        stdout.print(published)
        stdout.print(
            "Published numbers average 8 data sets; ours is one set as measured above.",
            highlight=False,
        )
        for kind, path in result["outputs"].items():
            stdout.print(f"  {kind:11} {escape(str(path))}", highlight=False)
        if result["unmatched_images"]:
            stderr.print(
                f"[yellow]warning[/]: {result['unmatched_images']} images had no label of the "
                "same name and were not scored."
            )

    emit(result, as_json, human)


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
    for row in result.get("published", []):
        stdout.print(f"  published: {escape(str(row))}", highlight=False)
    if result.get("failed"):
        stderr.print(f"[yellow]warning[/]: {result['failed']} samples failed (see report.json).")
    for kind, path in result["outputs"].items():
        stdout.print(f"  {kind:11} {escape(str(path))}", highlight=False)


@cli.command()
@click.argument("pred_dir", type=click.Path(file_okay=False))
@click.argument("gt_dir", type=click.Path(file_okay=False))
@click.option("--classes", required=True, help="Class names in index order: a,b,c.")
@click.option("--ignore-index", type=int, default=255, show_default=True)
@click.option(
    "--reduce-zero-label",
    is_flag=True,
    help="Ground truth 0 is no-data and ids start at 1 (LoveDA, ISPRS).",
)
@common_options
def score(pred_dir: str, gt_dir: str, as_json: bool, debug: bool, **options: Any) -> None:
    """Score predicted label maps in PRED_DIR against GT_DIR (matched by file name)."""
    from terramask import api
    from terramask.eval.report import class_table

    with progress_reporter(not as_json) as report:
        result = api.score(pred_dir, gt_dir, progress=report, **options)

    def human() -> None:
        stdout.print(class_table(result, f"{result['images']} images"))
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
@click.option("--root", required=True, help="Referring/reasoning data set folder.")
@click.option("--split", default=None, help="Split (default: the data set's).")
@click.option(
    "--limit", type=click.IntRange(min=3), default=50, show_default=True, help="Samples to use."
)
@click.option("--mllm-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")
@click.option("--mllm-model", help="Model name at that endpoint, or a local Qwen-VL folder.")
@click.option("--mllm-key", help="API key (default: $OPENAI_API_KEY).")
@click.option(
    "-o", "--output", default="refine.json", show_default=True, help="Where to save the fit."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@device_option
@common_options
def calibrate(dataset: str, root: str, as_json: bool, debug: bool, **options: Any) -> None:
    """Fit how MLLM boxes are corrected (per-side expansion, shift) on labelled DATASET.

    DATASET is a referring/reasoning set (rrsis-d, earthreason, geoseg-bench,
    unigeoseg-bench). Use the result with `ask --refine calibrated --calibration FILE`.
    """
    from terramask import api

    with progress_reporter(not as_json) as report:
        result = api.calibrate(dataset, root, progress=report, **options)

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
    data = {"model": model, "path": str(found.path), "family": found.family}
    emit(data, as_json, lambda: stdout.print(escape(f"downloaded to {found.path}")))


@cli.command()
@click.option("--no-self-test", is_flag=True, help="Skip the pipeline self-test.")
@common_options
def doctor(no_self_test: bool, as_json: bool, debug: bool) -> None:
    """Check the environment, GDAL, device and local models; self-test the prompt pipeline."""
    from terramask.doctor import run_doctor

    report = run_doctor(with_self_test=not no_self_test)

    def human() -> None:
        checks = table("check", "status", "detail")
        mark = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for check in report["checks"]:
            checks.add_row(check["name"], mark[check["status"]], escape(check["detail"]))
        stdout.print(checks)

    emit(report, as_json, human)
    if not report["ok"]:
        sys.exit(EXIT_USER_ERROR)


#: GDAL's block cache defaults to 5% of RAM and was the largest term of a run's peak memory;
#: TerraMask reads each block about once, so a small cache costs no speed. Users may override.
DEFAULT_GDAL_CACHEMAX_MB = "64"


def main() -> None:
    os.environ.setdefault("GDAL_CACHEMAX", DEFAULT_GDAL_CACHEMAX_MB)
    # The hub client logs every retry of a failed request; TerraMask reports the outcome in
    # one paragraph instead (see models.registry), so only its errors are let through.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    cli(obj={})


if __name__ == "__main__":
    main()
