"""`--prune/--no-prune` reaches the mask generator's settings from `segment` and `eval`."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from terramask import api, models
from terramask.cli import cli
from terramask.errors import InputError
from terramask.options import REFERENCE_GENERATION, GenerationSettings
from terramask.pipeline.engines import PredictorSpec
from terramask.testing.scenes import write_geotiff_from_image


def test_the_predictor_gets_the_generation_settings_unchanged(monkeypatch):
    model = SimpleNamespace(name="stand-in")  # building the predictor only names the models
    monkeypatch.setattr(models, "load_image_text", lambda *a, **k: model)
    monkeypatch.setattr(models, "load_segmenter", lambda *a, **k: model)
    pruned = PredictorSpec("sam+clip", generation=GenerationSettings(grid=12)).build()
    assert pruned.generation.prune is True
    settings = GenerationSettings(grid=12, prune=False)
    assert PredictorSpec("sam+clip", generation=settings).build().generation is settings


@pytest.fixture
def scene(rs_samples, tmp_path):
    image = rs_samples / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"
    return write_geotiff_from_image(image, tmp_path / "potsdam.tif")


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-prune"], False)])
def test_segment_flag_reaches_the_predictor_spec(flag, expected, scene, tmp_path, monkeypatch):
    seen = []

    def build(spec):
        seen.append(spec)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(PredictorSpec, "build", build)
    args = ["segment", str(scene), "-c", "building", "-o", str(tmp_path / "out"), *flag]
    result = CliRunner().invoke(cli, args, obj={})
    assert "stop here" in result.output
    assert seen[0].generation == GenerationSettings(grid=29, prune=expected)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ([], None),  # evaluate's default: REFERENCE_GENERATION
        (["--prune"], dataclasses.replace(REFERENCE_GENERATION, prune=True)),
        (["--amg", "fast"], GenerationSettings()),
        (["--amg", "fast", "--no-prune"], GenerationSettings(prune=False)),
    ],
)
def test_eval_flag_reaches_the_generation_settings(flag, expected, tmp_path, monkeypatch):
    seen = {}

    def evaluate(dataset, root, **options):
        seen.update(options)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(api, "evaluate", evaluate)
    args = ["eval", "potsdam", "--root", str(tmp_path), *flag]
    result = CliRunner().invoke(cli, args, obj={})
    assert "stop here" in result.output
    assert seen["generation"] == expected  # unset: the engine's default (on)
