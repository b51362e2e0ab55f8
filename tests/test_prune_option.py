"""`--prune/--no-prune` reaches the mask generator's settings from `segment` and `eval`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from terramask import api, models
from terramask.cli import cli
from terramask.errors import InputError
from terramask.pipeline import engines
from terramask.testing.scenes import write_geotiff_from_image


def test_build_predictor_passes_prune_to_the_generation_settings(monkeypatch):
    model = SimpleNamespace(name="stand-in")  # building the predictor only names the models
    monkeypatch.setattr(models, "load_image_text", lambda *a, **k: model)
    monkeypatch.setattr(models, "load_segmenter", lambda *a, **k: model)
    assert engines.build_predictor("sam+clip", grid=12).generation.prune is True
    settings = engines.build_predictor("sam+clip", grid=12, prune=False).generation
    assert (settings.grid, settings.prune) == (12, False)


@pytest.fixture
def scene(rs_samples, tmp_path):
    image = rs_samples / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"
    return write_geotiff_from_image(image, tmp_path / "potsdam.tif")


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-prune"], False)])
def test_segment_flag_reaches_build_predictor(flag, expected, scene, tmp_path, monkeypatch):
    seen = {}

    def build(engine, **options):
        seen.update(options)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(engines, "build_predictor", build)
    args = ["segment", str(scene), "-c", "building", "-o", str(tmp_path / "out"), *flag]
    result = CliRunner().invoke(cli, args, obj={})
    assert "stop here" in result.output
    assert seen["prune"] is expected and seen["grid"] == 29


@pytest.mark.parametrize(("flag", "expected"), [([], None), (["--no-prune"], False)])
def test_eval_flag_reaches_the_model_options(flag, expected, tmp_path, monkeypatch):
    seen = {}

    def evaluate(dataset, root, **options):
        seen.update(options)
        raise InputError("stop here: only the options are under test")

    monkeypatch.setattr(api, "evaluate", evaluate)
    args = ["eval", "potsdam", "--root", str(tmp_path), *flag]
    result = CliRunner().invoke(cli, args, obj={})
    assert "stop here" in result.output
    assert seen.get("prune") is expected  # unset: the preset build's default (on)
