"""Options objects, the rules of which option applies where, and how messages name options.

Every verb refuses an option that would be ignored by the chosen engine or data set (in the
Python API and on the command line), and an option that applies reaches the run unchanged.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import terramask
from terramask import api, options
from terramask.cli import _flags, cli
from terramask.errors import InputError
from terramask.options import (
    REFERENCE_GENERATION,
    AskOptions,
    GenerationSettings,
    MLLMOptions,
    ModelOptions,
    PolygonOptions,
    RasterOptions,
    RayOptions,
    Tiling,
)
from terramask.testing.scenes import write_synthetic_scene

PACKAGE = Path(terramask.__file__).parent


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], obj={})


@pytest.fixture
def scene(tmp_path):
    return write_synthetic_scene(tmp_path / "scene.tif", width=120, height=90)


# ------------------------------------------------------------------ the public surface


def test_star_import_gives_every_verb():
    namespace: dict = {}
    exec("from terramask.api import *", namespace)
    for verb in ("prompt", "prompt_many", "segment", "segment_many", "ask", "ask_many",
                 "evaluate", "score", "calibrate"):  # fmt: skip
        assert callable(namespace[verb]), verb


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Tiling(tile=10), "Tiling.tile"),
        (lambda: Tiling(tile=256, overlap=128), "Tiling.overlap"),
        (lambda: RasterOptions(bands=(1, 2)), "RasterOptions.bands"),
        (lambda: RasterOptions(stretch="2;98"), "RasterOptions.stretch"),
        (lambda: ModelOptions(device="gpu"), "ModelOptions.device"),
        (lambda: MLLMOptions(timeout=0), "MLLMOptions.timeout"),
        (lambda: MLLMOptions(concurrency=0), "MLLMOptions.concurrency"),
        (lambda: PolygonOptions(simplify=-1), "PolygonOptions.simplify"),
        (lambda: AskOptions(refine="calibrated"), "AskOptions.calibration"),
        (lambda: AskOptions(calibration="fit.json"), "AskOptions.calibration"),
        (lambda: RayOptions(workers=0), "RayOptions.workers"),
        (lambda: GenerationSettings(grid=0), "GenerationSettings.grid"),
    ],
)
def test_options_check_their_values_when_made(make, name):
    with pytest.raises(InputError, match=re.escape(f"`{name}`")):
        make()


def test_errors_are_also_the_matching_builtins():
    with pytest.raises(ValueError):
        Tiling(tile=1)
    from terramask.errors import ModelNotFoundError, OutputError, OutputExistsError

    assert issubclass(OutputExistsError, FileExistsError) and issubclass(OutputError, OSError)
    assert issubclass(ModelNotFoundError, FileNotFoundError)


def _literal_defaults() -> list[tuple[str, str, object]]:
    """(file, parameter, value) of every literal default of a function parameter or
    dataclass field named like a tiling, grid or overview option."""
    watched = {"tile", "tile_size", "overlap", "grid", "overview_size"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults):],
                                 args.defaults, strict=True))  # fmt: skip
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                          if d is not None]  # fmt: skip
                for arg, default in pairs:
                    if arg.arg in watched and isinstance(default, ast.Constant):
                        found.append((path.name, arg.arg, default.value))
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id in watched
                and isinstance(node.value, ast.Constant)
            ):
                found.append((path.name, node.target.id, node.value.value))
    return found


def test_each_default_is_written_once_in_the_options():
    assert sorted(_literal_defaults()) == [
        ("options.py", "grid", 29),
        ("options.py", "overlap", 128),
        ("options.py", "overview_size", 2048),
        ("options.py", "tile", 1024),
    ]


# ------------------------------------------------------------------ how messages name options


def _backticked_option_names() -> set[str]:
    """Every `Class.field` of an options class named in backticks in the package's strings."""
    classes = {n for n in options.__all__ if (n[0].isupper() and "Options" in n) or n in (
        "Tiling", "GenerationSettings")}  # fmt: skip
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in re.findall(r"`([A-Za-z]+)\.(\w+)`", node.value):
                    if name[0] in classes:
                        names.add(".".join(name))
    return names


#: Options a message may name that have no flag (Python only).
PYTHON_ONLY = {"GenerationSettings.points_per_batch", "GenerationSettings.min_region_area"}


def test_every_option_a_message_names_has_a_flag():
    names = _backticked_option_names()
    assert {"Tiling.tile", "MLLMOptions.url", "RasterOptions.bands"} <= names
    flags = _flags()
    missing = sorted(n for n in names - PYTHON_ONLY if n not in flags)
    assert missing == []


def test_the_cli_shows_its_flags_where_the_library_names_python_options(scene, tmp_path):
    result = run("segment", scene, "-c", "field", "--tile", "10", "-o", tmp_path)
    assert result.exit_code == 2
    assert "--tile must be at least 64" in result.stderr and "`" not in result.stderr
    with pytest.raises(InputError, match=r"`Tiling\.tile` must be at least 64"):
        api.segment(scene, ["field"], tiling=Tiling(tile=10), output=tmp_path)


def test_json_errors_are_a_json_object(scene, tmp_path):
    import json

    result = run("segment", scene, "-c", "field", "--overlap", "-1", "-o", tmp_path, "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "InputError" and "--overlap" in error["message"]
    assert error["exit_code"] == 2


# ------------------------------------------------------------------ refused where they do not apply


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "clip", "--segmenter", "x"], "--segmenter does not apply here"),
        (["--engine", "clip", "--grid", "29"], "--grid does not apply here"),
        (["--engine", "sam3", "--clip", "x"], "--clip does not apply here"),
        (["--engine", "sam+clip", "--sam3", "x"], "--sam3 does not apply here"),
        (["--ray-workers", "2"], "--ray-workers does not apply here"),
    ],
)
def test_segment_refuses_what_the_engine_does_not_use(scene, tmp_path, args, message):
    result = run("segment", scene, "-c", "field", "-o", tmp_path / "o", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was read or written


def test_segment_api_refuses_too(scene, tmp_path):
    with pytest.raises(InputError, match=r"`ModelOptions\.segmenter` does not apply"):
        api.segment(scene, ["field"], engine="clip", models=ModelOptions(segmenter="x"),
                    output=tmp_path)  # fmt: skip
    with pytest.raises(InputError, match=r"`GenerationSettings\.grid` does not apply"):
        api.segment(scene, ["field"], engine="sam3", generation=GenerationSettings(grid=8),
                    output=tmp_path)  # fmt: skip


def test_prompt_refuses_a_crs_that_describes_no_coordinate(scene, tmp_path):
    prompts = tmp_path / "p.geojson"
    prompts.write_text('{"type": "FeatureCollection", "features": []}')
    result = run("prompt", scene, "--prompts", prompts, "--crs", "EPSG:4326", "-o", tmp_path)
    assert result.exit_code == 2 and "--crs does not apply here" in result.stderr
    with pytest.raises(InputError, match=r"`ModelOptions\.clip` does not apply"):
        api.prompt(scene, points=[(5, 5)], models=ModelOptions(clip="x"), output=tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "box", "--clip", "x"], "--clip does not apply here"),
        (["--engine", "clicks", "--refine", "none"], "--refine does not apply here"),
        (["--mllm-model", "local-qwen", "--mllm-timeout", "5"], "--mllm-timeout does not apply"),
        (["--calibration", "fit.json"], "--calibration is used only with --refine"),
    ],
)
def test_ask_refuses_what_the_engine_or_model_does_not_use(scene, tmp_path, args, message):
    result = run("ask", scene, "the roof", "-o", tmp_path / "o", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "o").exists()


def test_ask_refuses_a_feature_upsampler(scene, tmp_path):
    with pytest.raises(InputError, match=r"`ModelOptions\.featup` does not apply"):
        api.ask(scene, "the roof", models=ModelOptions(featup="up.ckpt"), output=tmp_path)


def test_ask_api_refuses_too(scene, tmp_path):
    with pytest.raises(InputError, match=r"`AskOptions\.refine` does not apply"):
        api.ask(scene, "the roof", engine="box", ask_options=AskOptions(refine="none"),
                mllm=MLLMOptions(url="http://127.0.0.1:1/v1", model="m"),
                output=tmp_path)  # fmt: skip
    with pytest.raises(InputError, match=r"`PolygonOptions\.min_area` does not apply"):
        api.ask(scene, "the roof", polygons=PolygonOptions(min_area=4), output=tmp_path)


@pytest.mark.parametrize(
    ("dataset", "args", "message"),
    [
        ("potsdam", ["--mllm-url", "http://127.0.0.1:1/v1"], "--mllm-url does not apply here"),
        ("potsdam", ["--refine", "none"], "--refine does not apply here"),
        ("potsdam", ["--engine", "clip", "--segmenter", "x"], "--segmenter does not apply"),
        ("earthreason", ["--grid", "16"], "--grid does not apply here"),
        ("earthreason", ["--no-prune"], "--prune/--no-prune does not apply here"),
        ("earthreason", ["--threshold", "0.3"], "--threshold does not apply here"),
        ("earthreason", ["--engine", "box", "--sam3", "x"], "--sam3 does not apply here"),
        ("potsdam", ["--protocol", "all-texts"], "--protocol does not apply here"),
        ("potsdam", ["--judge-url", "http://h/v1", "--judge-model", "m"],
         "does not apply here"),
    ],
)
def test_eval_refuses_options_of_the_other_kind_of_data_set(tmp_path, dataset, args, message):
    result = run("eval", dataset, "--root", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "unexpected" not in result.stderr


def test_eval_api_refuses_too(tmp_path):
    with pytest.raises(InputError, match=r"`MLLMOptions\.url` does not apply"):
        api.evaluate("potsdam", tmp_path, mllm=MLLMOptions(url="http://x/v1", model="m"))
    with pytest.raises(InputError, match="`mllm` does not apply"):
        api.evaluate("potsdam", tmp_path, mllm=MLLMOptions())
    with pytest.raises(InputError, match="`generation` does not apply"):
        api.evaluate("earthreason", tmp_path, generation=GenerationSettings())


def test_calibrate_refuses_endpoint_settings_for_a_local_model(tmp_path):
    result = run("calibrate", "earthreason", "--root", tmp_path, "--mllm-model", "qwen",
                 "--mllm-key", "secret")  # fmt: skip
    assert result.exit_code == 2 and "--mllm-key does not apply here" in result.stderr
    assert "secret" not in result.output


# ------------------------------------------------------------------ applied where they apply


def _capture(monkeypatch, target, name):
    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(kwargs, args=args)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(target, name, record)
    return seen


def test_prompt_flags_reach_the_api_as_options(scene, tmp_path, monkeypatch):
    seen = _capture(monkeypatch, api, "prompt")
    run("prompt", scene, "--point", "5,5", "--segmenter", "s", "--device", "cpu",
        "--tile", "600", "--bands", "3,2,1", "--stretch", "1,99", "--simplify", "0.5",
        "-o", tmp_path)  # fmt: skip
    assert seen["models"] == ModelOptions(segmenter="s", device="cpu")
    assert seen["tiling"] == Tiling(tile=600, overlap=256)  # prompt's own overlap default
    assert seen["raster"] == RasterOptions(bands=(3, 2, 1), stretch=(1.0, 99.0))
    assert seen["polygons"] == PolygonOptions(simplify=0.5)
    assert seen["points"] == [(5.0, 5.0)]


def test_segment_flags_reach_the_predictor_spec(scene, tmp_path, monkeypatch):
    from terramask.pipeline.engines import PredictorSpec

    specs = []

    def build(spec):
        specs.append(spec)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(PredictorSpec, "build", build)
    result = run("segment", scene, "-c", "field", "--segmenter", "s", "--clip", "c", "--grid",
                 "12", "--threshold", "0.3", "-o", tmp_path)  # fmt: skip
    assert "stop here" in result.stderr
    assert specs == [PredictorSpec("sam+clip", ModelOptions(segmenter="s", clip="c"),
                                   GenerationSettings(grid=12), threshold=0.3)]  # fmt: skip


def test_ask_flags_reach_the_api_as_options(scene, tmp_path, monkeypatch):
    seen = _capture(monkeypatch, api, "ask")
    run("ask", scene, "the roof", "--mllm-url", "http://h/v1", "--mllm-model", "m",
        "--mllm-timeout", "5", "--no-mllm-cache", "--refine", "none", "--overview-size", "512",
        "--sam3", "s3", "--tile", "256", "-o", tmp_path)  # fmt: skip
    assert seen["mllm"] == MLLMOptions(url="http://h/v1", model="m", timeout=5.0, cache=False)
    assert seen["ask_options"] == AskOptions(refine="none", overview_size=512)
    assert seen["models"] == ModelOptions(sam3="s3")
    assert seen["tile"] == 256


def test_referring_eval_flags_reach_the_evaluation(tmp_path, monkeypatch):
    from terramask.eval import referring

    seen = _capture(monkeypatch, referring, "evaluate_asking")
    result = run("eval", "earthreason", "--root", tmp_path, "--engine", "clicks",
                 "--mllm-url", "http://h/v1", "--mllm-model", "m", "--overview-size", "640",
                 "--segmenter", "s", "--limit", "3")  # fmt: skip
    assert "stop here" in result.stderr
    assert seen["engine"] == "clicks" and seen["limit"] == 3
    assert seen["ask_options"] == AskOptions(overview_size=640)
    assert seen["models"] == ModelOptions(segmenter="s")
    assert seen["protocol"] == "reference" and seen["judge"] is None  # the defaults


def test_protocol_and_judge_reach_the_referring_evaluation(tmp_path, monkeypatch):
    from terramask.eval import referring

    seen = _capture(monkeypatch, referring, "evaluate_asking")
    result = run("eval", "earthreason", "--root", tmp_path, "--mllm-url", "http://h/v1",
                 "--mllm-model", "m", "--protocol", "all-texts", "--judge-url", "http://j/v1",
                 "--judge-model", "judge")  # fmt: skip
    assert "stop here" in result.stderr
    assert seen["protocol"] == "all-texts" and callable(seen["judge"])
    half = run("eval", "earthreason", "--root", tmp_path, "--judge-url", "http://j/v1")
    assert half.exit_code == 2 and "go together" in half.output


def test_calibrate_flags_reach_the_api(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, api, "calibrate")
    run("calibrate", "earthreason", "--root", tmp_path, "--mllm-url", "http://h/v1",
        "--mllm-model", "m", "--mllm-retries", "0", "--limit", "5")  # fmt: skip
    assert seen["mllm"] == MLLMOptions(url="http://h/v1", model="m", retries=0)
    assert seen["limit"] == 5


def test_a_folder_given_to_a_one_scene_verb_points_to_its_many_twin(scene, tmp_path):
    with pytest.raises(InputError, match="Use `segment_many`"):
        api.segment(scene.parent, ["field"], output=tmp_path / "o")
    with pytest.raises(InputError, match="Use `prompt_many`"):
        api.prompt(scene.parent, points=[(1, 1)], output=tmp_path / "o")


def test_amg_and_featup_reach_the_predictor_spec(scene, tmp_path, monkeypatch):
    from terramask.pipeline.engines import PredictorSpec

    specs = []

    def build(spec):
        specs.append(spec)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(PredictorSpec, "build", build)
    run("segment", scene, "-c", "field", "--amg", "reference", "--featup", "up.ckpt", "-o",
        tmp_path)  # fmt: skip
    [spec] = specs
    assert spec.generation == REFERENCE_GENERATION and spec.models.featup == "up.ckpt"
    assert spec.description["featup"] == "up.ckpt"
    assert spec.description["generation"]["amg"] == "reference"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["segment", "-c", "a", "--engine", "sam3", "--featup", "x"], "--featup does not apply"),
        (["segment", "-c", "a", "--engine", "clip", "--amg", "fast"], "--amg does not apply"),
        (["ask", "roof", "--engine", "clicks", "--boxes", "all"], "--boxes does not apply"),
    ],
)
def test_new_reference_options_are_refused_where_they_do_not_apply(scene, tmp_path, args,
                                                                  message):  # fmt: skip
    verb, *rest = args
    result = run(verb, scene, *rest, "-o", tmp_path / "o")
    assert result.exit_code == 2 and message in result.stderr
