"""The fault corpus: every case, generated as a list (`all_cases()`).

A case runs the real CLI one or more times through a `CaseContext` (see `harness.py`) and says
what it expects: a finished output set (exit 0), or a refusal (exit 2) whose one paragraph
names what is wrong, or either where both are honest answers. Hangs, OOMs, crashes, bugs
("unexpected error"), partial output sets, leftovers and re-runs blocked by what a run left
are recorded by the context whatever the case expects.

Groups: raster (odd and broken rasters), vector (prompt files), classes (segment's class
lists), output (folders, existing outputs, read-only folders, full disks), option (bad or
inapplicable flags), mllm (a fault-injecting chat server for `ask`), interrupt (SIGINT and
SIGKILL in the middle of runs, then the same command again), batch (many scenes).

Cases use only flags that both the current CLI and the one of commit 210516c have, unless
they say otherwise with `ctx.require_flags` (then they are "not applicable" to a tree without).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.faults.harness import (
    BATCH_FILES,
    RUN_TIMEOUT,
    CaseContext,
    Launcher,
    NotApplicable,
    Outcome,
    Run,
    case_folder,
    digests,
    folder_problems,
    set_files,
)
from tests.faults.inputs import Inputs


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    body: Callable[[CaseContext], None]
    doc: str = ""


def run_case(case: Case, launcher: Launcher, inputs: Inputs, root: Path) -> Outcome:
    """Run one case in a fresh folder under `root` and classify it."""
    started = time.monotonic()
    with case_folder(root, case.name) as folder:
        ctx = CaseContext(case.name, launcher, inputs, folder)
        try:
            case.body(ctx)
        except NotApplicable as reason:
            outcome = ctx.outcome(time.monotonic() - started, note=str(reason))
            outcome.category = "not applicable"
            return outcome
        finally:
            _make_writable(folder)
        return ctx.outcome(time.monotonic() - started, note=case.doc)


def _make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


# ---------------------------------------------------------------- command lines

QUESTION = "which building is the largest?"
BOX_REPLY = '{"bbox": [30, 20, 90, 70], "prompt": "building"}'


def prompt_args(i: Inputs, scene: Path | str, *extra: object) -> list[object]:
    return ["prompt", scene, "--segmenter", i.sam, "--device", "cpu", *extra]


def segment_args(i: Inputs, scene: Path | str, *extra: object, engine: str = "sam3",
                 classes: tuple[str, ...] = ("building", "road")) -> list[object]:  # fmt: skip
    args: list[object] = ["segment", scene]
    for name in classes:
        args += ["-c", name]
    args += ["--engine", engine, "--device", "cpu"]
    if engine == "sam3":
        args += ["--sam3", i.sam3]
    elif engine == "clip":
        args += ["--clip", i.clip]
    else:
        args += ["--clip", i.clip, "--segmenter", i.sam, "--grid", "4"]
    return [*args, *extra]


def ask_args(i: Inputs, scene: Path | str, url: str, *extra: object,
             engine: str = "box") -> list[object]:  # fmt: skip
    args: list[object] = [
        "ask", scene, QUESTION, "--mllm-url", url, "--mllm-model", "test-vlm",
        "--engine", engine, "--segmenter", i.sam, "--device", "cpu",
        "--mllm-retries", "1", "--mllm-timeout", "5",
    ]  # fmt: skip
    if engine == "geoseg":
        args += ["--clip", i.clip]
    return [*args, *extra]


def centre(path: Path) -> str:
    import rasterio

    with rasterio.open(path) as src:
        return f"{src.width / 2},{src.height / 2}"


def chat(script):
    from tests.helpers.chat_server import ChatServer

    return ChatServer(script)


def step(**kw):
    from tests.helpers.chat_server import Step

    return Step(**kw)


def completion_body(text: str) -> str:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-vlm",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
    })  # fmt: skip


def names_file(path: Path, *words: str) -> str:
    """A pattern: the output names the file and says one of `words` (or a usual reason)."""
    reasons = "|".join(words or ("read", "open", "raster", "GeoTIFF", "corrupt", "empty",
                                 "format", "recogni", "valid", "support", "damaged"))  # fmt: skip
    return rf"(?=.*{re.escape(path.name)})(?=.*({reasons}))"


def stem(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


# ---------------------------------------------------------------- checks used by several cases


def check_geojson_lonlat(ctx: CaseContext, path: Path) -> None:
    """RFC 7946: longitudes within [-180, 180], latitudes within [-90, 90]."""
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        ctx.wrong(f"{path.name} is not valid JSON ({exc})")
        return
    bad = []

    def walk(coords) -> None:
        if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
            lon, lat = coords[0], coords[1]
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                bad.append((lon, lat))
        elif isinstance(coords, (list, tuple)):
            for item in coords:
                walk(item)

    for feature in data.get("features", []):
        walk((feature.get("geometry") or {}).get("coordinates", []))
    if bad:
        ctx.wrong(f"{path.name} has {len(bad)} positions outside lon/lat range, e.g. {bad[0]}")


def mentions(ctx: CaseContext, run: Run, pattern: str, what: str) -> bool:
    """The run's output or the report it wrote says `pattern`."""
    texts = [run.output]
    texts += [p.read_text(errors="replace") for p in ctx.out.glob("*.json") if p.is_file()]
    if any(re.search(pattern, t, re.I) for t in texts):
        return True
    ctx.wrong(f"{run.label} finished without saying {what}")
    return False


def labels_dtype(path: Path) -> str | None:
    import rasterio

    if not path.is_file():
        return None
    with rasterio.open(path) as src:
        return src.dtypes[0]


# ---------------------------------------------------------------- the corpus

CASES: list[Case] = []


def case(name: str, group: str, doc: str = "") -> Callable:
    def register(body: Callable[[CaseContext], None]) -> Callable[[CaseContext], None]:
        CASES.append(Case(name, group, body, doc))
        return body

    return register


def all_cases() -> list[Case]:
    """Every case, in a stable order (names are unique)."""
    if not CASES:
        _raster_cases()
        _vector_cases()
        _class_cases()
        _output_cases()
        _option_cases()
        _mllm_cases()
        _interrupt_cases()
        _batch_cases()
    names = [c.name for c in CASES]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, duplicates
    return list(CASES)


# ---------------------------------------------------------------- rasters

UNREADABLE = ("truncated_header", "empty", "text", "truncated_data")
ODD_BUT_FINE = ("good", "one_band", "float_nan", "uint16", "alpha", "rotated")
DEGENERATE = ("px1x1", "strip1xN", "stripNx1", "strip3xN", "all_nodata", "float_all_nan")
SHAPE_WORDS = r"small|pixel|size|wide|tall|narrow|thin|degenerate|too few|at least|no ?data|empty"


def _raster_cases() -> None:
    for name in UNREADABLE:
        for verb in ("prompt", "segment"):
            _unreadable(name, verb)
    _unreadable("truncated_data", "ask")
    _unreadable("text", "ask")
    for name in ODD_BUT_FINE:
        _fine(name, "prompt")
        _fine(name, "segment")
    for name in DEGENERATE:
        for verb in ("prompt", "segment", "ask"):
            _degenerate(name, verb)
    _fine("two_band", "prompt", refusal=r"band")
    _fine("two_band", "segment", refusal=r"band")
    _fine("gcps", "prompt", refusal=r"GCP|ground control")
    _fine("gcps", "segment", refusal=r"GCP|ground control")
    _fine("gcps", "ask", refusal=r"GCP|ground control")

    @case("raster/png-without-georeferencing/prompt", "raster")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*prompt_args(i, i.rasters["png"], "--point", "80,60"))
        if ctx.expect_ok(run, ["plain"], geojson=False) and not re.search(
            r"georeferenc", run.stderr, re.I
        ):
            ctx.wrong("no warning that the scene has no georeferencing")

    @case("raster/png-without-georeferencing/segment", "raster")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*segment_args(i, i.rasters["png"]))
        ctx.expect_ok(run, ["plain"], geojson=False)

    @case("raster/png-without-georeferencing/ask", "raster")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        with chat([BOX_REPLY]) as server:
            run = ctx.cli(*ask_args(i, i.rasters["png"], server.url))
        ctx.expect_ok(run, ["plain"], geojson=False)

    @case("raster/rotated-grid/prompt-map-point", "raster",
          "a point given in map coordinates lands on a rotated grid")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        x, y = 500_030.0, 4_649_980.0  # inside the rotated footprint
        run = ctx.cli(*prompt_args(i, i.rasters["rotated"], "--point", f"{x},{y}",
                                   "--crs", "EPSG:32633"))  # fmt: skip
        ctx.expect_ok(run, ["rotated"], geojson=True)

    for verb in ("prompt", "segment", "ask"):
        _antimeridian(verb)


def _unreadable(name: str, verb: str) -> None:
    @case(f"raster/{name}/{verb}", "raster", f"{name}: refused, naming the file")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        path = i.rasters[name]
        if verb == "prompt":
            run = ctx.cli(*prompt_args(i, path, "--point", "10,10"))
        elif verb == "segment":
            run = ctx.cli(*segment_args(i, path))
        else:
            with chat([BOX_REPLY] * 3) as server:
                run = ctx.cli(*ask_args(i, path, server.url))
        ctx.expect_refused(run, names_file(path), "the unreadable file")
        if set_files(ctx.out):
            ctx.wrong(f"outputs were written for an unreadable raster: {set_files(ctx.out)}")


def _fine(name: str, verb: str, refusal: str | None = None) -> None:
    @case(f"raster/{name}/{verb}", "raster",
          f"{name}: segmented" + (f", or refused naming /{refusal}/" if refusal else ""))
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        path = i.rasters[name]
        if verb == "prompt":
            run = ctx.cli(*prompt_args(i, path, "--point", centre(path)))
        elif verb == "segment":
            run = ctx.cli(*segment_args(i, path))
        else:
            with chat([BOX_REPLY] * 3) as server:
                run = ctx.cli(*ask_args(i, path, server.url))
        if refusal and run.exit != 0:
            ctx.expect_refused(run, refusal)
        else:
            ctx.expect_ok(run, [stem(path)], geojson=True)


def _degenerate(name: str, verb: str) -> None:
    @case(f"raster/{name}/{verb}", "raster",
          f"{name}: segmented, or refused saying what is wrong with its shape or data")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        path = i.rasters[name]
        limit = 30  # a scene of a few hundred pixels: seconds at most, never minutes
        if verb == "prompt":
            run = ctx.cli(*prompt_args(i, path, "--point", centre(path)), timeout=limit)
        elif verb == "segment":
            run = ctx.cli(*segment_args(i, path, engine="clip"), timeout=limit)
        else:
            with chat(['{"bbox": [0, 0, 1000, 1000], "prompt": "building"}'] * 3) as server:
                run = ctx.cli(*ask_args(i, path, server.url), timeout=limit)
        ctx.expect_ok_or_refused(run, SHAPE_WORDS, [stem(path)], "the scene's shape or data")


def _antimeridian(verb: str) -> None:
    @case(f"raster/antimeridian/{verb}", "raster",
          "an EPSG:4326 scene across 180°: outputs whole, GeoJSON longitudes within ±180")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        path = i.rasters["antimeridian"]
        if verb == "prompt":
            # 180.005 E written as -179.995: the same place, in the scene's east half
            run = ctx.cli(*prompt_args(i, path, "--point", "-179.995,-16.505",
                                       "--crs", "EPSG:4326"))  # fmt: skip
        elif verb == "segment":
            run = ctx.cli(*segment_args(i, path))
        else:
            with chat([BOX_REPLY]) as server:
                run = ctx.cli(*ask_args(i, path, server.url))
        if ctx.expect_ok(run, ["antimeridian"], geojson=True):
            check_geojson_lonlat(ctx, ctx.out / "antimeridian.geojson")


# ---------------------------------------------------------------- vector prompt files


def _vector_cases() -> None:
    def vector(name: str, key: str, expect: str, pattern: str = "", doc: str = "") -> None:
        @case(f"vector/{name}", "vector", doc)
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            path = i.vectors[key] if key in i.vectors else ctx.folder / key
            run = ctx.cli(*prompt_args(i, i.good, "--prompts", path))
            if expect == "ok":
                ctx.expect_ok(run, ["good"])
            elif expect == "refused":
                ctx.expect_refused(run, pattern)
            else:
                ctx.expect_ok_or_refused(run, pattern, ["good"])

    vector("points", "points", "ok", doc="two points in the scene's CRS: two objects")
    vector("mixed-point-and-polygon", "mixed", "ok")
    vector("empty", "empty", "refused", r"no (prompt|feature|point|object|geometr)|empty",
           "a file without features")
    vector("no-crs", "no_crs", "either", r"CRS|coordinate reference",
           "a GeoPackage without a CRS: used in the scene's CRS, or refused naming the CRS")
    vector("list-valued-fields", "list_field", "either", r"group|name|positive|field|list")
    vector("linestring", "linestring", "either", r"LineString|line|geometr")
    vector("null-geometry", "null_geometry", "either", r"geometr|empty|no prompt|null")
    vector("corrupt-geojson", "corrupt", "refused",
           r"corrupt\.geojson.*(read|open|pars|valid|corrupt|JSON|recogni)|"
           r"(read|open|pars|valid|corrupt|JSON|recogni).*corrupt\.geojson")
    vector("corrupt-gpkg", "corrupt_gpkg", "refused",
           r"corrupt\.gpkg.*(read|open|valid|corrupt|recogni|database)|"
           r"(read|open|valid|corrupt|recogni|database).*corrupt\.gpkg")
    vector("outside-the-scene", "outside", "refused", r"outside|no prompt|not (in|inside)|beyond",
           "one scene, every prompt outside it")
    vector("missing-file", "missing.geojson", "refused",
           r"missing\.geojson.*(exist|no such|not found)|(exist|no such|not found).*missing")

    @case("vector/outside-every-scene/batch", "vector",
          "many scenes, prompts outside all of them: every scene skipped, not failed")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*prompt_args(i, i.sets["ok"], "--prompts", i.vectors["outside"]))
        if run.exit not in (0, 2):
            return
        if run.exit != 0:
            ctx.wrong(f"scenes without prompts should be skipped (exit 0): {run.message()}")
        if not (ctx.out / "summary.json").is_file():
            ctx.wrong("no summary.json")


# ---------------------------------------------------------------- class lists


def _class_cases() -> None:
    def classes(name: str, names: tuple[str, ...], expect: str, pattern: str = "",
                engine: str = "sam3", doc: str = "",
                check: Callable[[CaseContext, Run], None] | None = None) -> None:  # fmt: skip
        @case(f"classes/{name}", "classes", doc)
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            run = ctx.cli(*segment_args(i, i.good, engine=engine, classes=names))
            if expect == "ok":
                ok = ctx.expect_ok(run, ["good"])
            elif expect == "refused":
                ok = ctx.expect_refused(run, pattern)
            else:
                ok = ctx.expect_ok_or_refused(run, pattern, ["good"])
            if ok and check and run.exit == 0:
                check(ctx, run)

    classes("none", (), "refused", r"-c|--class|class", doc="no -c at all")
    classes("blank", ("",), "refused", r"class|empty|blank|name")
    classes("blank-among-others", ("building", "  "), "refused", r"class|empty|blank|name")
    classes("only-commas", (" , ",), "refused", r"class|empty|blank|name")
    classes("duplicate-names", ("building", "building"), "refused",
            r"building.*(twice|duplicate|same|more than once|again|two classes)|"
            r"(twice|duplicate|same|more than once|two classes).*building")
    classes("duplicate-synonym", ("road,street", "street"), "either", r"street")
    classes("one-class", ("building",), "ok", doc="one class: a background class is added")
    classes("unicode-names", ("水域", "bâtiment"), "ok")
    classes("very-long-name", ("building " * 500,), "either", r"long|class|token|name")

    def three_hundred(ctx: CaseContext, run: Run) -> None:
        dtype = labels_dtype(ctx.out / "good_labels.tif")
        if dtype == "uint8":
            ctx.wrong("300 classes written to a uint8 label raster (255 is nodata)")

    classes("300-classes", tuple(f"class{n}" for n in range(300)), "either",
            r"class|too many|255|at most", engine="clip",
            doc="300 classes: a label raster that holds them, or a refusal naming the limit",
            check=three_hundred)

    @case("classes/background-is-a-class", "classes")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*segment_args(i, i.good, "--background", "road", "--threshold", "0.5"))
        ctx.expect_ok_or_refused(run, r"background|road", ["good"])

    for name, value in (("above-1", "1.5"), ("negative", "-0.5"), ("nan", "nan")):
        _threshold(name, value)


def _threshold(name: str, value: str) -> None:
    @case(f"classes/threshold-{name}", "classes", "--threshold is a probability, 0 to 1")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*segment_args(i, i.good, "--threshold", value))
        ctx.expect_refused(run, r"threshold")


# ---------------------------------------------------------------- outputs

PROMPT_FAST = ("--point", "80,60")


def _verb_args(i: Inputs, verb: str, url: str = "") -> list[object]:
    if verb == "prompt":
        return prompt_args(i, i.good, *PROMPT_FAST)
    if verb == "segment":
        return segment_args(i, i.good)
    return ask_args(i, i.good, url)


def _with_server(verb: str, replies: int = 4):
    import contextlib

    if verb == "ask":
        return chat([BOX_REPLY] * replies)
    return contextlib.nullcontext(None)


def _url(server) -> str:
    return server.url if server is not None else ""


def _output_cases() -> None:
    for verb in ("prompt", "segment", "ask"):
        _output_is_a_file(verb)
        _existing_outputs(verb)
    for verb in ("prompt", "segment", "ask"):
        _read_only(verb)
        _disk_full_report(verb)
        _disk_full_midway(verb)
    for verb in ("prompt", "segment"):
        _output_under_a_file(verb)
        _read_only_overwrite(verb)
        _disk_full_overwrite(verb)
        _overwrite_replaces(verb)
        _foreign_file(verb)

    @case("output/folder-with-spaces-and-unicode/prompt", "output")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        out = ctx.folder / "my outputs – été"
        run = ctx.cli(*prompt_args(i, i.good, *PROMPT_FAST), out=out)
        ctx.expect_ok(run, ["good"], out=out)

    @case("output/deep-new-folder/prompt", "output")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        out = ctx.folder / "a" / "b" / "c"
        run = ctx.cli(*prompt_args(i, i.good, *PROMPT_FAST), out=out)
        ctx.expect_ok(run, ["good"], out=out)


def _output_is_a_file(verb: str) -> None:
    @case(f"output/output-is-a-file/{verb}", "output")
    def _(ctx: CaseContext) -> None:
        ctx.out.write_text("I am a file")
        with _with_server(verb) as server:
            run = ctx.cli(*_verb_args(ctx.inputs, verb, _url(server)), check_folder=False)
        ctx.expect_refused(run, r"(?=.*\bout\b)(?=.*(folder|director|exists|file))",
                           "the output path that is a file")  # fmt: skip
        if ctx.out.read_text() != "I am a file":
            ctx.wrong("the file given as output folder was changed")


def _output_under_a_file(verb: str) -> None:
    @case(f"output/output-under-a-file/{verb}", "output")
    def _(ctx: CaseContext) -> None:
        blocker = ctx.folder / "blocker"
        blocker.write_text("a file")
        run = ctx.cli(*_verb_args(ctx.inputs, verb), out=blocker / "sub", check_folder=False)
        ctx.expect_refused(run, r"blocker.*(folder|director|created|exists|file)|"
                                r"(folder|director|created|exists|file).*blocker")  # fmt: skip


def _existing_outputs(verb: str) -> None:
    @case(f"output/existing-without-overwrite/{verb}", "output",
          "a finished set is never replaced without --overwrite, and is left as it was")
    def _(ctx: CaseContext) -> None:
        with _with_server(verb) as server:
            args = _verb_args(ctx.inputs, verb, _url(server))
            first = ctx.cli(*args)
            if not ctx.expect_ok(first, ["good"]):
                return
            before = digests(ctx.out, "good")
            second = ctx.cli(*args)
        ctx.expect_refused(second, r"exist|--overwrite")
        if digests(ctx.out, "good") != before:
            ctx.mixed("a refused run changed the existing outputs")


def _overwrite_replaces(verb: str) -> None:
    @case(f"output/overwrite/{verb}", "output")
    def _(ctx: CaseContext) -> None:
        args = _verb_args(ctx.inputs, verb)
        if ctx.expect_ok(ctx.cli(*args), ["good"]):
            ctx.expect_ok(ctx.cli(*args, "--overwrite"), ["good"])


def _foreign_file(verb: str) -> None:
    @case(f"output/a-foreign-file-of-the-same-name/{verb}", "output",
          "one file of the set's names is already there: refused naming it, or written")
    def _(ctx: CaseContext) -> None:
        ctx.out.mkdir()
        (ctx.out / "good_preview.png").write_bytes(b"someone else's picture")
        run = ctx.cli(*_verb_args(ctx.inputs, verb), check_folder=False)
        if run.exit == 0:
            ctx.expect_ok(run, ["good"])
            for problem in folder_problems(ctx.out):
                ctx.mixed(problem)
        else:
            ctx.expect_refused(run, r"good_preview\.png")
            if (ctx.out / "good_preview.png").read_bytes() != b"someone else's picture":
                ctx.mixed("a refused run replaced the file that was there")
            if set_files(ctx.out) != ["good_preview.png"]:
                ctx.mixed(f"a refused run left {set_files(ctx.out)}")


def _read_only(verb: str) -> None:
    @case(f"output/read-only-folder/{verb}", "output",
          "refused naming the folder; nothing left; the same command works once it is writable")
    def _(ctx: CaseContext) -> None:
        ctx.out.mkdir()
        with _with_server(verb) as server:
            args = _verb_args(ctx.inputs, verb, _url(server))
            ctx.out.chmod(0o555)
            run = ctx.cli(*args, readonly_dirs=[ctx.out])
            ctx.out.chmod(0o755)
            ctx.expect_refused(run, r"(?=.*\bout\b)(?=.*(writ|permission|read-only|denied))",
                               "the read-only folder")  # fmt: skip
            if set_files(ctx.out):
                ctx.mixed(f"a refused run left {set_files(ctx.out)}")
            again = ctx.cli(*args)
        if again.exit != 0 and re.search(r"exist", again.output):
            ctx.mixed(f"the same command, once the folder is writable, is refused: "
                      f"{again.message()}")  # fmt: skip
        else:
            ctx.expect_ok(again, ["good"])


def _read_only_overwrite(verb: str) -> None:
    @case(f"output/read-only-folder-overwrite/{verb}", "output",
          "--overwrite into a folder that became read-only: refused, the old set untouched")
    def _(ctx: CaseContext) -> None:
        args = _verb_args(ctx.inputs, verb)
        if not ctx.expect_ok(ctx.cli(*args), ["good"]):
            return
        before = digests(ctx.out, "good")
        ctx.out.chmod(0o555)
        run = ctx.cli(*args, "--overwrite", readonly_dirs=[ctx.out])
        ctx.out.chmod(0o755)
        ctx.expect_refused(run, r"writ|permission|read-only|denied")
        if digests(ctx.out, "good") != before:
            ctx.mixed("the old set was changed by a run that could not write")


ENOSPC_REPORT = r"/out/(.*/)?\.?good[^/]*\.json$"
DISK_WORDS = r"disk|space|full|File too large|write|writ"


def _disk_full_report(verb: str) -> None:
    @case(f"output/disk-full-at-the-report/{verb}", "output",
          "the disk fills while the last file (the report) is written: refused, no partial "
          "set, and the same command works once there is space")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        with _with_server(verb) as server:
            args = _verb_args(ctx.inputs, verb, _url(server))
            run = ctx.cli(*args, faults={"open_fail": {"match": ENOSPC_REPORT,
                                                       "errno": "ENOSPC"}})  # fmt: skip
            ctx.expect_refused(run, DISK_WORDS, "the full disk")
            _then_the_same_command_works(ctx, args)


def _disk_full_midway(verb: str) -> None:
    @case(f"output/disk-full-midway/{verb}", "output",
          "no file may grow past 48 KiB (RLIMIT_FSIZE): writers fail part-way, GDAL and "
          "SQLite included; refused, no partial set; then the same command works")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        with _with_server(verb) as server:
            args = _verb_args(ctx.inputs, verb, _url(server))
            run = ctx.cli(*args, faults={"fsize": 48 * 1024})
            ctx.expect_refused(run, DISK_WORDS, "the failed write")
            _then_the_same_command_works(ctx, args)


def _then_the_same_command_works(ctx: CaseContext, args: list[object]) -> None:
    same_command_again(ctx, args, ["good"], "the failed run")


def same_command_again(ctx: CaseContext, args: list[object], stems: list[str],
                       after: str = "the interruption") -> Run:  # fmt: skip
    """Run `args` again: it must finish. A refusal because outputs exist is fine only when
    the folder holds finished sets (the interrupted run's own, completed by this one);
    refused over part of a set is a blocking leftover."""
    again = ctx.cli(*args)
    if again.exit == 2 and re.search(r"already exist|--overwrite", again.output):
        complete = all(
            not [p for p in folder_problems(ctx.out) if stem_ in p]
            and {f"{stem_}.json", f"{stem_}_score.tif"} <= set(digests(ctx.out, stem_))
            for stem_ in stems
        )
        if not complete:
            ctx.mixed(f"the same command is refused after {after}, over a partial set: "
                      f"{again.message()}")  # fmt: skip
        for stem_ in stems:
            kept = ctx.out / ".terramask-work" / stem_
            if complete and kept.is_dir() and any(kept.iterdir()):
                ctx.mixed(f"{stem_} is finished but its tiles stay in .terramask-work/ "
                          "after the follow-up run")  # fmt: skip
    else:
        ctx.expect_ok(again, stems)
    return again


def _disk_full_overwrite(verb: str) -> None:
    @case(f"output/disk-full-overwrite/{verb}", "output",
          "--overwrite on a full disk: refused, the old set whole and unchanged")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        args = _verb_args(ctx.inputs, verb)
        if not ctx.expect_ok(ctx.cli(*args), ["good"]):
            return
        before = digests(ctx.out, "good")
        run = ctx.cli(*args, "--overwrite", faults={"fsize": 48 * 1024})
        ctx.expect_refused(run, DISK_WORDS, "the failed write")
        after = digests(ctx.out, "good")
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            ctx.mixed(f"the old set was changed or lost by a failed --overwrite: {changed}")


# ---------------------------------------------------------------- options


def _placeholder(i: Inputs, arg: object) -> object:
    """VECTOR:name and MODEL:name stand for generated inputs in the case tables."""
    if isinstance(arg, str) and arg.startswith("VECTOR:"):
        return i.vectors[arg[7:]]
    if isinstance(arg, str) and arg.startswith("MODEL:"):
        return getattr(i, arg[6:])
    return arg


def _option_cases() -> None:
    def option(verb: str, name: str, extra: tuple, expect: str, pattern: str,
               requires: tuple[str, ...] = (), doc: str = "") -> None:  # fmt: skip
        @case(f"option/{verb.split('-')[0]}/{name}", "option", doc)
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            if requires:
                ctx.require_flags(verb, *requires)
            extra_ = tuple(_placeholder(i, a) for a in extra)
            with _with_server(verb) as server:
                if verb == "prompt":
                    prompts = {"--prompts", "--point", "--box", "--negative"} & set(extra_)
                    args = prompt_args(i, i.good, *(extra_ if prompts
                                                    else (*PROMPT_FAST, *extra_)))  # fmt: skip
                elif verb == "segment":
                    args = segment_args(i, i.good, *extra_)
                elif verb == "segment-clip":
                    args = segment_args(i, i.good, *extra_, engine="clip")
                elif verb == "segment-sam+clip":
                    args = segment_args(i, i.good, *extra_, engine="sam+clip")
                else:
                    args = ask_args(i, i.good, _url(server), *extra_)
                run = ctx.cli(*args)
            if expect == "refused":
                ctx.expect_refused(run, pattern)
            else:
                ctx.expect_ok_or_refused(run, pattern, ["good"])

    p = "prompt"
    option(p, "tile-zero", ("--tile", "0"), "refused", r"tile")
    option(p, "tile-negative", ("--tile", "-5"), "refused", r"tile")
    option(p, "tile-tiny", ("--tile", "8"), "either", r"tile")
    option(p, "tile-huge", ("--tile", "1000000"), "either", r"tile")
    option(p, "tile-not-a-number", ("--tile", "abc"), "refused", r"tile")
    option(p, "overlap-negative", ("--overlap", "-1"), "refused", r"overlap")
    option(p, "overlap-equals-tile", ("--tile", "128", "--overlap", "128"), "either", r"overlap",
           doc="overlap = tile leaves no step between tiles: refused, or handled, never a hang")
    option(p, "overlap-above-tile", ("--tile", "128", "--overlap", "500"), "either", r"overlap")
    option(p, "simplify-negative", ("--simplify", "-1"), "refused", r"simplif")
    option(p, "simplify-nan", ("--simplify", "nan"), "refused", r"simplif")
    option(p, "simplify-inf", ("--simplify", "inf"), "either", r"simplif")
    option(p, "stretch-word", ("--stretch", "banana"), "refused", r"stretch")
    option(p, "stretch-reversed", ("--stretch", "98,2"), "refused", r"stretch")
    option(p, "stretch-beyond-100", ("--stretch", "1,200"), "refused", r"stretch")
    option(p, "stretch-one-number", ("--stretch", "5"), "refused", r"stretch")
    option(p, "stretch-nan", ("--stretch", "nan,nan"), "refused", r"stretch")
    option(p, "bands-zero", ("--bands", "0"), "refused", r"band")
    option(p, "bands-missing", ("--bands", "7"), "refused", r"band")
    option(p, "bands-negative", ("--bands", "-1,2,3"), "refused", r"band")
    option(p, "bands-text", ("--bands", "a,b"), "refused", r"band")
    option(p, "bands-two", ("--bands", "1,2"), "either", r"band")
    option(p, "device-unknown", ("--device", "tpu"), "refused", r"device")
    option(p, "device-missing-gpu", ("--device", "cuda:7"), "either", r"cuda|device|GPU")
    option(p, "crs-unknown", ("--point", "500010,4649990", "--crs", "EPSG:999999"), "refused",
           r"CRS|EPSG|999999")
    option(p, "point-nan", ("--point", "nan,nan"), "refused", r"point|finite|nan")
    option(p, "point-inf", ("--point", "inf,5"), "refused", r"point|finite|inf")
    option(p, "point-outside", ("--point", "5000,5000"), "refused", r"outside")
    option(p, "box-reversed", ("--box", "100,90,20,10"), "either", r"box")
    option(p, "box-zero-area", ("--box", "50,50,50,50"), "either",
           r"box|empty|zero|degenerate|thin")
    option(p, "box-one-pixel-high", ("--box", "5,60,155,61"), "either",
           r"box|thin|degenerate|narrow|small")
    option(p, "box-outside", ("--box", "1000,1000,1100,1100"), "refused", r"outside")
    option(p, "negative-click-only", ("--negative", "10,10"), "either",
           r"positive|negative|point|click")
    option(p, "crs-with-prompts-file-only", ("--prompts", "VECTOR:points", "--crs", "EPSG:4326"),
           "refused", r"crs", doc="--crs would be ignored: the file carries its own CRS")

    @case("option/prompt/no-prompt", "option")
    def _(ctx: CaseContext) -> None:
        run = ctx.cli(*prompt_args(ctx.inputs, ctx.inputs.good))
        ctx.expect_refused(run, r"prompt|--point|--box")

    s = "segment"
    option("segment-clip", "segmenter-with-engine-clip", ("--segmenter", "MODEL:sam"), "refused",
           r"segmenter", doc="dense CLIP uses no SAM: the flag would be ignored")
    option("segment-clip", "grid-with-engine-clip", ("--grid", "5"), "refused", r"grid")
    option(s, "ray-workers-without-ray", ("--ray-workers", "2"), "refused", r"ray")
    option("segment-sam+clip", "grid-zero", ("--grid", "0"), "refused", r"grid")
    option(s, "min-area-negative", ("--min-area", "-1"), "refused", r"min.area")
    option(s, "tile-zero", ("--tile", "0"), "refused", r"tile")
    option(s, "overlap-equals-tile", ("--tile", "64", "--overlap", "64"), "either", r"overlap")
    option(s, "device-unknown", ("--device", "tpu"), "refused", r"device")
    option(s, "stretch-word", ("--stretch", "banana"), "refused", r"stretch")
    option(s, "bands-missing", ("--bands", "4,3,2"), "refused", r"band")

    @case("option/segment/sam3-model-not-here", "option",
          "the default SAM 3 (gated) is not on this machine and offline: one paragraph")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        args = segment_args(i, i.good)
        args = [a for a in args if a != i.sam3 and a != "--sam3"]
        run = ctx.cli(*args)
        ctx.expect_refused(run, r"sam3|SAM 3|not found|offline|download")

    a = "ask"
    option(a, "refine-with-engine-box", ("--refine", "none"), "refused", r"refine")
    option(a, "mllm-timeout-zero", ("--mllm-timeout", "0"), "refused", r"timeout")
    option(a, "mllm-retries-negative", ("--mllm-retries", "-1"), "refused", r"retries")
    option(a, "mllm-concurrency-zero", ("--mllm-concurrency", "0"), "refused",
           r"concurrency")
    option(a, "overview-size-one", ("--overview-size", "1"), "refused", r"overview")
    option(a, "max-objects-zero", ("--max-objects", "0"), "refused", r"max.objects",
           requires=("--max-objects",))
    option(a, "tile-zero", ("--tile", "0"), "refused", r"tile")

    @case("option/ask/refine-calibrated-without-file", "option")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        with chat([BOX_REPLY] * 3) as server:
            run = ctx.cli(*ask_args(i, i.good, server.url, "--refine", "calibrated",
                                    engine="geoseg"))  # fmt: skip
        ctx.expect_refused(run, r"calibration")

    @case("option/ask/calibration-file-unreadable", "option")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        with chat([BOX_REPLY] * 3) as server:
            run = ctx.cli(*ask_args(i, i.good, server.url, "--refine", "calibrated",
                                    "--calibration", i.files["calibration_bad"],
                                    engine="geoseg"))  # fmt: skip
        ctx.expect_refused(run, r"calibration")

    @case("option/ask/no-model-named", "option")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli("ask", i.good, QUESTION, "--engine", "box", "--segmenter", i.sam)
        ctx.expect_refused(run, r"mllm|model|url|endpoint")

    @case("option/segment/index-crs-unknown", "option",
          "many scenes into an index in a CRS that does not exist")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        ctx.require_flags("segment", "--index-crs")
        run = ctx.cli(*segment_args(i, i.sets["ok"], "--index-crs", "EPSG:999999"))
        ctx.expect_refused(run, r"index.crs|999999")


# ---------------------------------------------------------------- MLLM faults for ask


def _mllm_cases() -> None:
    def mllm(name: str, script, expect: str, pattern: str = "", *extra: object,
             engine: str = "box", scene: str = "good", doc: str = "",
             within: float | None = None, check=None) -> None:  # fmt: skip
        @case(f"mllm/{name}", "mllm", doc)
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            path = i.rasters[scene]
            items = script() if callable(script) else script
            limit = within or RUN_TIMEOUT  # `within`: the most this fault may cost the user
            with chat(items) as server:
                run = ctx.cli(*ask_args(i, path, server.url, *extra, engine=engine),
                              timeout=limit)  # fmt: skip
                requests = len(server.requests)
            if expect == "ok":
                ok = ctx.expect_ok(run, [stem(path)])
            elif expect == "refused":
                ok = ctx.expect_refused(run, pattern)
            else:
                ok = ctx.expect_ok_or_refused(run, pattern, [stem(path)])
            if ok and check is not None:
                check(ctx, run, requests)

    html = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
    mllm("html-with-200", [step(raw=html, content_type="text/html")] * 3, "refused",
         r"HTML|not (a )?(JSON|completion)|127\.0\.0\.1|endpoint|reply")
    mllm("empty-body-200", [step(raw=b"")] * 3, "refused",
         r"empty|no content|not (a )?(JSON|completion)|127\.0\.0\.1|endpoint|reply")
    mllm("error-object-with-200",
         [step(raw='{"error": {"message": "the model is overloaded", "type": "server_error"}}')]
         * 3, "refused", r"overloaded", doc="the endpoint's own words reach the user")
    mllm("invalid-json-body", [step(raw='{"id": "x", "choices": [{"message": {"content": "a')] * 3,
         "refused", r"JSON|reply|completion|127\.0\.0\.1|endpoint")
    mllm("plain-text-body", [step(raw="OK", content_type="text/plain")] * 3, "refused",
         r"JSON|reply|completion|127\.0\.0\.1|endpoint")
    mllm("body-cut-off",
         lambda: [step(raw=completion_body(BOX_REPLY)[:60],
                       content_length=len(completion_body(BOX_REPLY)))] * 3,
         "refused", r"reply|connection|incomplete|127\.0\.0\.1|endpoint|closed|cut")
    mllm("reply-1.5-MB", lambda: ["Here you are: " + "[" * (1536 * 1024)] * 3, "refused",
         r"MB|large|long|size|limit|bytes|parse", within=45,
         doc="a 1.5 MB reply (an open bracket repeated): refused quickly, never parsed for ages")
    mllm("reply-0.9-MB-of-brackets", lambda: ["[" * (900 * 1024)] * 3, "refused",
         r"parse|MB|large|limit", within=45)
    mllm("refusal", ["There is no such object in this image."], "ok",
         doc="'there is no such object' is an answer: an empty mask, exit 0",
         check=lambda ctx, run, n: _nothing_found(ctx, run))
    mllm("null-content", [step(text=None)] * 3, "either", r"empty|no (answer|content|reply)|null")
    mllm("finish-reason-length", [step(text='{"bbox": [10, 10, 6', finish_reason="length")] * 3,
         "either", r"parse|cut|length|truncat|token")
    mllm("http-500-then-success", [step(status=500), BOX_REPLY], "ok",
         check=lambda ctx, run, n: n == 2 or ctx.wrong(f"{n} requests, expected 2"))
    mllm("http-429-short-retry-after-then-success", [step(status=429, retry_after=1), BOX_REPLY],
         "ok")
    mllm("retry-after-longer-than-timeout", [step(status=429, retry_after=120)] * 3, "refused",
         r"Retry-After|rate|429|limit", "--mllm-timeout", "3", within=20,
         doc="the server asks to wait 120 s, the user allows 3: fail at once, saying so")
    mllm("slow-reply", [step(text=BOX_REPLY, sleep_s=5)] * 3, "refused", r"time",
         "--mllm-timeout", "1", within=30)
    mllm("body-trickled-slower-than-timeout",
         lambda: [step(raw=completion_body(BOX_REPLY), trickle_s=0.5, trickle_bytes=1)] * 3,
         "refused", r"time|slow", "--mllm-timeout", "1.5", within=30,
         doc="a byte every 0.5 s (two minutes in all): each read is quick, the whole reply "
         "is not; --mllm-timeout 1.5 with one retry must end it within 30 s")
    many = json.dumps({"boxes": [[i % 150, (i // 150) % 110, i % 150 + 8, (i // 150) % 110 + 8]
                                 for i in range(20000)], "prompt": "car"})  # fmt: skip
    mllm("20000-boxes", [many] * 3, "either", r"boxes|objects|too many|20 ?000", within=45,
         doc="20 000 boxes: the first few kept with a note, or refused; never 20 000 SAM runs",
         check=lambda ctx, run, n: run.exit != 0
         or mentions(ctx, run, r"20[ ,]?000", "how many boxes the reply gave"))
    clicks = json.dumps({"points": [[i % 150, (i // 150) % 110] for i in range(20000)],
                         "labels": [1] * 20000})  # fmt: skip
    mllm("20000-clicks", [clicks] * 3, "either", r"clicks|points|too many|20 ?000", within=45,
         engine="clicks")
    mllm("box-190x1-refine-none", ['{"bbox": [1, 80, 191, 81], "prompt": "road"}'] * 3,
         "either", r"thin|degenerate|narrow|too small|pixel|empty", "--refine", "none",
         engine="geoseg", scene="tiles", within=45,
         doc="a 190×1 box straight into segmentation: reported as thin, never a huge allocation",
         check=lambda ctx, run, n: run.exit != 0
         or mentions(ctx, run, r"thin|degenerate|narrow|too small|1 ?(px|pixel)",
                     "that the box is degenerate"))
    mllm("box-zero-area", ['{"bbox": [50, 50, 50, 50], "prompt": "roof"}'] * 3, "either",
         r"degenerate|zero|empty|thin|no area|nothing", within=45,
         check=lambda ctx, run, n: run.exit != 0
         or mentions(ctx, run, r"degenerate|zero|empty|thin|no area|nothing",
                     "that the box has no area"))
    mllm("box-zero-area-geoseg", ['{"bbox": [50, 50, 50, 50], "prompt": "roof"}'] * 3, "either",
         r"degenerate|zero|empty|thin|no area|nothing", engine="geoseg", within=45)
    mllm("box-outside-the-image", ['{"bbox": [5000, 5000, 6000, 6000], "prompt": "roof"}'] * 3,
         "either", r"outside|box|nothing")
    mllm("box-with-nan", ['{"bbox": [NaN, 1, 20, 30], "prompt": "roof"}'] * 3, "either",
         r"parse|box|NaN|number")
    mllm("geoseg-thin-box-default-refine", ['{"bbox": [1, 80, 191, 81], "prompt": "road"}'] * 3,
         "either", r"thin|degenerate|narrow|too small|pixel|empty", engine="geoseg",
         scene="tiles", within=45)

    @case("mllm/url-without-scheme", "mllm")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        with chat([BOX_REPLY] * 3) as server:
            bare = server.url.split("://", 1)[1]
            run = ctx.cli(*ask_args(i, i.good, bare))
        ctx.expect_ok_or_refused(run, r"url|http|scheme|127\.0\.0\.1", ["good"])

    @case("mllm/connection-refused", "mllm")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        with chat([]) as server:
            url = server.url
        run = ctx.cli(*ask_args(i, i.good, url))
        ctx.expect_refused(run, r"127\.0\.0\.1|connect|reach")
        if run.seconds > 30:
            ctx.wrong(f"a refused connection took {run.seconds:.0f} s to report")

    mllm("http-404", [step(status=404, text="The model `test-vlm` does not exist")] * 3,
         "refused", r"404|not found|does not exist|test-vlm")
    mllm("http-401", [step(status=401, text="Incorrect API key provided")] * 3, "refused",
         r"401|API key|--mllm-key|unauthori")


def _nothing_found(ctx: CaseContext, run: Run) -> None:
    data = run.json() or {}
    if data.get("found") is True:
        ctx.wrong("a refusal was reported as found")


# ---------------------------------------------------------------- interruptions

TILE = r"\.terramask-work/.*\d+\.npz$"
FINAL = r"/out/{stem}(_labels|_mask|_score|_preview)?\.(tif|gpkg|geojson|png|json)$"
SEGMENT_TILING = ("--tile", "64", "--overlap", "16")


def _segment_interrupted_args(i: Inputs) -> list[object]:
    return segment_args(i, i.rasters["tiles"], *SEGMENT_TILING)


def _reference(ctx: CaseContext, key: str, args: list[object], stem_: str) -> dict[str, str]:
    """The digests of an uninterrupted run (once per launcher)."""
    shared = ctx.launcher.shared
    if key not in shared:
        out = ctx.folder / "reference"
        run = ctx.cli(*args, out=out)
        shared[key] = digests(out, stem_) if run.exit == 0 else None
    if shared[key] is None:
        ctx.wrong("the uninterrupted reference run failed")
        return {}
    return shared[key]


def _interrupt_cases() -> None:
    def segment_interrupted(name: str, faults: dict | None = None, watch_for=None,
                            sig: int = signal.SIGINT, doc: str = "") -> None:  # fmt: skip
        @case(f"interrupt/segment/{name}", "interrupt", doc)
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            args = _segment_interrupted_args(i)
            reference = _reference(ctx, "segment-tiles", args, "tiles")
            watch = watch_for(ctx, sig) if watch_for else None
            killed = sig == signal.SIGKILL
            first = ctx.cli(*args, faults=faults, watch=watch, killed=killed)
            _judge_interrupted(ctx, first, sig)
            second = same_command_again(ctx, args, ["tiles"])
            if second.exit not in (0, 2):
                return
            if reference and digests(ctx.out, "tiles") != reference:
                now = digests(ctx.out, "tiles")
                differ = sorted(k for k in set(now) | set(reference)
                                if now.get(k) != reference.get(k))  # fmt: skip
                ctx.wrong(f"the resumed outputs differ from an uninterrupted run's: {differ}")

    segment_interrupted("sigint-after-3-tiles",
                        {"replace": {"match": TILE, "nth": 3, "action": "sigint"}},
                        doc="Ctrl-C once three tiles are kept; the same command resumes and its "
                        "outputs are byte-identical to an uninterrupted run's")
    segment_interrupted("sigkill-after-3-tiles",
                        {"replace": {"match": TILE, "nth": 3, "action": "sigkill"}},
                        sig=signal.SIGKILL)
    segment_interrupted("sigkill-mid-swap",
                        {"replace": {"match": FINAL.format(stem="tiles"), "nth": 2,
                                     "action": "sigkill"}},
                        sig=signal.SIGKILL,
                        doc="killed when two of the outputs are in place")  # fmt: skip
    segment_interrupted("sigint-mid-swap",
                        {"replace": {"match": FINAL.format(stem="tiles"), "nth": 2,
                                     "action": "sigint"}},
                        doc="Ctrl-C when two of the outputs are in place")  # fmt: skip
    segment_interrupted("sigint-from-outside", {"replace": {"match": TILE, "slow_s": 0.15}},
                        watch_for=_when_tiles(2), sig=signal.SIGINT,
                        doc="a real SIGINT from another process while tiles are computed")
    segment_interrupted("sigkill-from-outside", {"replace": {"match": TILE, "slow_s": 0.15}},
                        watch_for=_when_tiles(2), sig=signal.SIGKILL)
    segment_interrupted("sigkill-before-any-tile",
                        {"replace": {"match": TILE, "nth": 1, "when": "before",
                                     "action": "sigkill"}}, sig=signal.SIGKILL)  # fmt: skip

    def prompt_interrupted(name: str, faults: dict | None = None, watch_for=None,
                           sig: int = signal.SIGINT, verb: str = "prompt",
                           doc: str = "") -> None:  # fmt: skip
        @case(f"interrupt/{verb}/{name}", "interrupt", doc)
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            with _with_server(verb, replies=2) as server:
                args = _verb_args(i, verb, _url(server))
                watch = watch_for(ctx, sig) if watch_for else None
                killed = sig == signal.SIGKILL
                first = ctx.cli(*args, faults=faults, watch=watch, killed=killed)
                _judge_interrupted(ctx, first, sig)
                same_command_again(ctx, args, ["good"])

    final = FINAL.format(stem="good")
    for verb in ("prompt", "ask"):
        prompt_interrupted("sigint-mid-write", {"replace": {"match": final, "nth": 2,
                                                            "action": "sigint"}}, verb=verb,
                           doc="Ctrl-C when two outputs are in place; the same command then "
                           "finishes (no --overwrite needed)")  # fmt: skip
        prompt_interrupted("sigkill-mid-write", {"replace": {"match": final, "nth": 2,
                                                             "action": "sigkill"}},
                           sig=signal.SIGKILL, verb=verb)  # fmt: skip
    prompt_interrupted("sigkill-after-the-first-output",
                       {"replace": {"match": final, "nth": 1, "action": "sigkill"}},
                       sig=signal.SIGKILL)
    prompt_interrupted("sigkill-before-the-report",
                       {"replace": {"match": r"/out/good\.json$", "nth": 1, "when": "before",
                                    "action": "sigkill"}}, sig=signal.SIGKILL)  # fmt: skip
    prompt_interrupted("sigint-from-outside", {"replace": {"match": final, "slow_s": 0.3}},
                       watch_for=_when_outputs(), sig=signal.SIGINT)
    prompt_interrupted("sigkill-from-outside", {"replace": {"match": final, "slow_s": 0.3}},
                       watch_for=_when_outputs(), sig=signal.SIGKILL)

    prompt_interrupted("sigint-early", watch_for=_after(0.15), sig=signal.SIGINT,
                       doc="Ctrl-C early in the run (loading, reading): exit 130, nothing left")
    segment_interrupted("sigint-early", watch_for=_after(0.15), sig=signal.SIGINT)

    @case("interrupt/segment/sigkill-then-overwrite", "interrupt",
          "after a kill mid-swap, the same command with --overwrite works too")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        args = _segment_interrupted_args(i)
        ctx.cli(*args, faults={"replace": {"match": FINAL.format(stem="tiles"), "nth": 3,
                                           "action": "sigkill"}}, killed=True)  # fmt: skip
        ctx.expect_ok(ctx.cli(*args, "--overwrite"), ["tiles"])

    @case("interrupt/segment/sigint-then-other-classes", "interrupt",
          "tiles kept by a run with other classes are discarded, never mixed in")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        first = ctx.cli(*segment_args(i, i.rasters["tiles"], *SEGMENT_TILING,
                                      classes=("water", "tree")),
                        faults={"replace": {"match": TILE, "nth": 4, "action": "sigint"}})
        _judge_interrupted(ctx, first, signal.SIGINT)
        args = _segment_interrupted_args(i)
        reference = _reference(ctx, "segment-tiles", args, "tiles")
        second = ctx.cli(*args)
        if ctx.expect_ok(second, ["tiles"]) and reference and \
                digests(ctx.out, "tiles") != reference:  # fmt: skip
            ctx.wrong("outputs after an interrupted run with other classes differ from a "
                      "fresh run's")  # fmt: skip


def _judge_interrupted(ctx: CaseContext, run: Run, sig: int) -> None:
    if sig == signal.SIGKILL:
        if run.signal != signal.SIGKILL and run.exit is not None:
            ctx.wrong(f"{run.label} was to be killed but ended with exit {run.exit}: "
                      f"{run.message()}")  # fmt: skip
        return
    if run.exit == 0:
        return  # finished before the signal: nothing to judge
    if run.exit not in (130, 2) and run.signal != signal.SIGINT:
        ctx.wrong(f"{run.label}, interrupted, ended with exit {run.exit}: {run.message()}")
    elif run.exit == 130 and not re.search(r"interrupt", run.stderr, re.I):
        ctx.wrong(f"{run.label} did not say it was interrupted")


def _when_tiles(count: int):
    def make(ctx: CaseContext, sig: int):
        def watch(elapsed: float) -> int | None:
            work = ctx.out / ".terramask-work"
            return sig if work.is_dir() and len(list(work.rglob("*.npz"))) >= count else None

        return watch

    return make


def _after(seconds: float):
    def make(ctx: CaseContext, sig: int):
        return lambda elapsed: sig if elapsed >= seconds else None

    return make


def _when_outputs():
    def make(ctx: CaseContext, sig: int):
        def watch(elapsed: float) -> int | None:
            return sig if set_files(ctx.out) else None

        return watch

    return make


# ---------------------------------------------------------------- many scenes


def _batch_cases() -> None:
    for verb in ("prompt", "segment"):
        _batch_mixed(verb)

    def refused(name: str, scene_key: str, pattern: str, glob: str | None = None) -> None:
        @case(f"batch/{name}", "batch")
        def _(ctx: CaseContext) -> None:
            i = ctx.inputs
            scene = glob or i.sets[scene_key]
            run = ctx.cli(*segment_args(i, scene))
            ctx.expect_refused(run, pattern)

    refused("folder-without-rasters", "empty", r"no (raster|scene|image|file)|empty|found")
    refused("glob-matching-nothing", "", r"no (raster|scene|image|file|match)|nothing|found",
            glob="/nonexistent-terramask-folder/*.tif")
    refused("broken-stac-json", "broken_stac", r"STAC|JSON|broken_stac")

    @case("batch/list-with-a-missing-path", "batch",
          "a .txt list naming a file that is not there: exit 2 naming it, the rest done")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*segment_args(i, i.sets["list_missing"]))
        if run.exit != 2 or "missing.tif" not in run.output:
            ctx.expect_refused(run, r"missing\.tif")

    @case("batch/two-scenes-of-one-name", "batch",
          "north/scene.tif and south/scene.tif: two sets, or refused naming the clash; never "
          "one scene's outputs silently replacing the other's")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        run = ctx.cli(*segment_args(i, i.sets["same_name"]))
        if run.exit == 0:
            finished = {n.rsplit(".", 1)[0] for n in set_files(ctx.out)
                        if n.endswith(".json") and n not in BATCH_FILES}  # fmt: skip
            if len(finished) < 2:
                ctx.wrong(f"two scenes named scene.tif left {len(finished)} output set(s): "
                          f"{sorted(set_files(ctx.out))}")  # fmt: skip
        else:
            ctx.expect_refused(run, r"scene\.tif|same name|clash|twice|both")

    @case("batch/same-command-twice", "batch",
          "a finished batch run again: scenes already done, nothing refused")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        args = segment_args(i, i.sets["ok"])
        first = ctx.cli(*args)
        if ctx.expect_ok(first, ["a", "b"]):
            before = {**digests(ctx.out, "a"), **digests(ctx.out, "b")}
            second = ctx.cli(*args)
            if second.exit != 0:
                ctx.mixed(f"the same batch command fails the second time: {second.message()}")
            elif {**digests(ctx.out, "a"), **digests(ctx.out, "b")} != before:
                ctx.wrong("a second run of a finished batch rewrote its outputs")

    @case("batch/sigkill-between-scenes", "batch",
          "killed after the first scene's report: the same command finishes the others")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        args = segment_args(i, i.sets["three"])
        ctx.cli(*args, faults={"replace": {"match": r"/out/s1\.json$", "nth": 1,
                                           "action": "sigkill"}}, killed=True)  # fmt: skip
        first = digests(ctx.out, "s1")
        second = same_command_again(ctx, args, ["s1", "s2", "s3"])
        if second.exit == 0 and first and digests(ctx.out, "s1") != first:
            ctx.wrong("a finished scene was redone")

    @case("batch/prompt-sigint-mid-batch", "batch")
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        args = prompt_args(i, i.sets["three"], *PROMPT_FAST)
        first = ctx.cli(*args, faults={"replace": {"match": FINAL.format(stem="s2"), "nth": 2,
                                                   "action": "sigint"}})  # fmt: skip
        _judge_interrupted(ctx, first, signal.SIGINT)
        same_command_again(ctx, args, ["s1", "s2", "s3"])

    @case("batch/ask-endpoint-always-failing", "batch",
          "every request fails: exit 2, a summary, no partial sets")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        with chat(lambda request: step(status=500)) as server:
            run = ctx.cli(*ask_args(i, i.sets["ok"], server.url))
        ctx.expect_refused(run, r"fail|500|127\.0\.0\.1")
        if run.exit == 2 and not (ctx.out / "summary.json").is_file():
            ctx.wrong("no summary.json after a batch whose scenes all failed")


def _batch_mixed(verb: str) -> None:
    @case(f"batch/broken-scenes-among-good/{verb}", "batch",
          "a folder with good, unreadable and 1-pixel scenes: the good one done, the others "
          "failed with reasons (exit 2), summary written; the same command again redoes only "
          "what failed")  # fmt: skip
    def _(ctx: CaseContext) -> None:
        i = ctx.inputs
        args = (prompt_args(i, i.sets["mixed"], *PROMPT_FAST) if verb == "prompt"
                else segment_args(i, i.sets["mixed"]))  # fmt: skip
        first = ctx.cli(*args)
        if first.exit != 2:
            ctx.wrong(f"{first.label}: expected exit 2 (some scenes fail), got {first.exit}")
        if not (ctx.out / "summary.json").is_file():
            ctx.wrong("no summary.json")
            return
        summary = json.loads((ctx.out / "summary.json").read_text())
        failed = " ".join(str(f) for f in summary.get("failed", []))
        for name in ("text.tif", "truncated.tif"):
            if name not in failed:
                ctx.wrong(f"{name} is not listed as failed in summary.json")
        ctx.expect_ok(first if first.exit == 0 else _as_ok(first), ["good"])
        before = digests(ctx.out, "good")
        second = ctx.cli(*args)
        if second.exit not in (0, 2) or re.search(r"good\S*.*already exist", second.output):
            ctx.mixed(f"the same command fails on what the first run finished: "
                      f"{second.message()}")  # fmt: skip
        elif digests(ctx.out, "good") != before:
            ctx.wrong("the finished scene was rewritten by the second run")


def _as_ok(run: Run) -> Run:
    """The run, judged only on the outputs of the scenes it finished."""
    from dataclasses import replace

    return replace(run, exit=0)

