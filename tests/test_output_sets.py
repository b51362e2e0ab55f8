"""Output sets are all or nothing; batches never stop for one scene and never reuse outputs
made with other settings; the index is right for any mix of CRSs."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from PIL import Image

from terramask import api
from terramask.errors import InputError, OutputError
from terramask.methods.ovss import OvssPredictor
from terramask.options import ModelOptions, Tiling
from terramask.scene.outputs import STAGING_FOLDER, OutputSet
from terramask.testing.scenes import write_synthetic_scene
from tests.helpers.doubles import ColourEngine, ShapeSegmenter

PROTOTYPES = [(220, 220, 220), (40, 40, 40)]
CLASSES = ["bright", "dark"]


def digests(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def prompt(scene, out, **kw):
    return api.prompt(scene, points=[(60, 40)], models=ModelOptions(segmenter=ShapeSegmenter()),
                      output=out, **kw)  # fmt: skip


def segment(scene, out, engine=None, classes=CLASSES, **kw):
    predictor = OvssPredictor(engine or ColourEngine(PROTOTYPES))
    return api.segment(scene, classes, predictor=predictor, output=out,
                       tiling=Tiling(tile=128, overlap=32), **kw)  # fmt: skip


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def scene(tmp_path):
    return write_synthetic_scene(tmp_path / "in" / "scene.tif", width=160, height=120)


# ------------------------------------------------------------------ all or nothing


def test_prompt_overwrite_that_fails_leaves_the_old_set_whole(scene, tmp_path, monkeypatch):
    from terramask.pipeline import object_outputs

    out = tmp_path / "out"
    prompt(scene, out)
    before = digests(out)
    monkeypatch.setattr(object_outputs, "write_preview", disk_full)
    with pytest.raises(OutputError) as error:
        prompt(scene, out, overwrite=True)
    message = str(error.value)
    assert "disk is full" in message and "Nothing was replaced" in message
    assert "\n" not in message
    assert digests(out) == before  # the old mask, score, vectors, preview and report
    assert not (out / STAGING_FOLDER).exists()


def test_segment_overwrite_that_fails_keeps_rasters_vectors_and_report(scene, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    from terramask.pipeline import segment_run

    out = tmp_path / "out"
    segment(scene, out)
    before = digests(out)
    monkeypatch.setattr(segment_run, "write_preview", disk_full)
    with pytest.raises(OutputError, match="Nothing was replaced"):
        segment(scene, out, overwrite=True)
    assert digests(out) == before
    assert (out / "scene.json").exists()  # the report is never deleted first


def test_permission_errors_are_one_line_naming_the_folder(scene, tmp_path, monkeypatch):
    from terramask.pipeline import object_outputs

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "x")

    monkeypatch.setattr(object_outputs, "write_preview", denied)
    with pytest.raises(OutputError, match=r"not writable") as error:
        prompt(scene, tmp_path / "out")
    assert str(tmp_path / "out") in str(error.value)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_an_interrupted_prompt_blocks_nothing(scene, tmp_path, monkeypatch):
    from terramask.pipeline import object_outputs

    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(object_outputs, "write_preview", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prompt(scene, out)
    assert list(out.iterdir()) == []
    prompt(scene, out)  # the same command, no overwrite needed
    assert (out / "scene.json").exists() and (out / "scene_mask.tif").exists()


def test_a_swap_cut_short_is_finished_by_the_next_run(tmp_path):
    """A process killed between moving the staged files into place: the journal lists them,
    and the next run touching the set moves the rest before anything else."""
    outputs = OutputSet(tmp_path, "scene", overwrite=True)
    for kind, text in (("mask", "old mask"), ("gpkg", "old gpkg"), ("report", "old report")):
        outputs.path(kind).write_text(text)
    with outputs.writing():
        for kind in ("mask", "gpkg", "report"):
            outputs.target(kind).write_text(f"new {kind}")
        order = ["scene_mask.tif", "scene.gpkg", "scene.json"]
        (outputs.staging / "commit.json").write_text(json.dumps(order))
        os.replace(outputs.target("mask"), outputs.path("mask"))  # ... and then killed
        assert outputs.path("report").read_text() == "old report"
        OutputSet(tmp_path, "scene").recover()
    assert {k: outputs.path(k).read_text() for k in ("mask", "gpkg", "report")} == {
        "mask": "new mask", "gpkg": "new gpkg", "report": "new report"
    }  # fmt: skip
    assert not (tmp_path / STAGING_FOLDER).exists()


def test_temporary_files_of_a_killed_run_are_swept(scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    orphan = out / ".scene_mask.tmp-1a2b3c4d.tif"
    orphan.write_bytes(b"x" * 1000)
    (out / STAGING_FOLDER / "scene").mkdir(parents=True)
    (out / STAGING_FOLDER / "scene" / "scene.gpkg").write_bytes(b"half")
    prompt(scene, out)
    assert not orphan.exists() and not (out / STAGING_FOLDER).exists()


def test_overwrite_removes_outputs_the_new_set_does_not_hold(tmp_path):
    georeferenced = write_synthetic_scene(tmp_path / "a" / "scene.tif", width=100, height=80)
    plain = tmp_path / "b" / "scene.png"
    plain.parent.mkdir()
    Image.open(georeferenced).save(plain)  # same name, no georeferencing
    out = tmp_path / "out"
    prompt(georeferenced, out)
    assert (out / "scene.geojson").exists()
    with pytest.warns(UserWarning):
        prompt(plain, out, overwrite=True)
    assert not (out / "scene.geojson").exists()  # no GeoJSON of the old scene left beside


# ------------------------------------------------------------------ batches


def test_one_scene_failing_in_any_way_does_not_stop_the_batch(tmp_path):
    folder = tmp_path / "scenes"
    for name in ("a", "b", "c"):
        write_synthetic_scene(folder / f"{name}.tif", width=90, height=70, seed=ord(name))

    class Exploding(ShapeSegmenter):
        calls = 0

        def embed(self, image):
            type(self).calls += 1
            if type(self).calls == 2:
                raise ZeroDivisionError("a bug met on the second scene")
            return super().embed(image)

    summary = api.prompt_many(folder, points=[(30, 30)], output=tmp_path / "o",
                              models=ModelOptions(segmenter=Exploding()))  # fmt: skip
    assert len(summary.processed) == 2 and len(summary.failed) == 1
    assert "unexpected error (ZeroDivisionError" in summary.failed[0]["reason"]
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["failed"]


def test_a_batch_where_every_scene_fails_still_writes_its_summary(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        (folder / name).write_bytes(b"not a raster")
    out = tmp_path / "new" / "out"
    summary = api.segment_many(folder, CLASSES, predictor=OvssPredictor(ColourEngine(PROTOTYPES)),
                               output=out)  # fmt: skip
    assert len(summary.failed) == 2 and not summary.processed
    saved = json.loads((out / "summary.json").read_text())
    assert [f["scene"].rsplit("/", 1)[-1] for f in saved["failed"]] == ["a.tif", "b.tif"]


def test_a_folder_of_one_scene_is_a_batch(scene, tmp_path):
    from click.testing import CliRunner

    from terramask.cli import cli

    result = CliRunner().invoke(cli, ["segment", str(scene.parent), "-c", "field", "--engine",
                                      "clip", "--clip", str(tmp_path / "no-model"), "-o",
                                      str(tmp_path / "o")])  # fmt: skip
    assert "1 scenes:" in result.output and "1 failed" in result.output  # a batch summary
    assert (tmp_path / "o" / "summary.json").exists()


def test_a_batch_rerun_with_other_settings_is_refused(tmp_path):
    folder = tmp_path / "scenes"
    for name in ("a", "b"):
        write_synthetic_scene(folder / f"{name}.tif", width=90, height=70, seed=ord(name))
    out = tmp_path / "out"
    predictor = OvssPredictor(ColourEngine(PROTOTYPES))
    first = api.segment_many(folder, CLASSES, predictor=predictor, output=out)
    assert len(first.processed) == 2
    again = api.segment_many(folder, CLASSES, predictor=predictor, output=out)
    assert len(again.already_done) == 2  # the same settings: done, skipped
    before = digests(out)
    with pytest.raises(InputError, match=r"2 scenes .* other settings .*classes"):
        api.segment_many(folder, ["light", "shadow"], predictor=predictor, output=out)
    assert digests(out) == before
    redone = api.segment_many(folder, ["light", "shadow"], predictor=predictor, output=out,
                              overwrite=True)  # fmt: skip
    assert len(redone.processed) == 2
    report = json.loads((out / "a.json").read_text())
    assert [c["name"] for c in report["classes"]] == ["light", "shadow"]


def test_a_scene_skipped_for_its_prompts_is_reconsidered_with_other_prompts(tmp_path):
    folder = tmp_path / "scenes"
    write_synthetic_scene(folder / "a.tif", width=90, height=70)
    out = tmp_path / "out"
    options = dict(models=ModelOptions(segmenter=ShapeSegmenter()), output=out,
                   crs="EPSG:32633")  # fmt: skip
    with rasterio.open(folder / "a.tif") as src:
        inside = src.transform @ (30, 30)
    first = api.prompt_many(folder, points=[(0.0, 0.0)], **options)  # far away
    assert len(first.skipped) == 1
    with pytest.raises(InputError, match=r"other settings .*points"):
        api.prompt_many(folder, points=[inside], **options)
    second = api.prompt_many(folder, points=[inside], overwrite=True, **options)
    assert len(second.processed) == 1 and (out / "a_mask.tif").exists()


def test_the_index_holds_every_crs_in_one_and_leaves_out_pixel_scenes(tmp_path):
    """A scene without georeferencing first, then scenes in UTM 14N and UTM 40N: the index
    is in EPSG:4326, each polygon where its scene is, the pixel-space scene left out."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(folder / "a_plain.png")
    write_synthetic_scene(folder / "b_texas.tif", width=80, height=60, crs="EPSG:32614",
                          transform=Affine(0.5, 0, 600000, 0, -0.5, 3300000))  # fmt: skip
    write_synthetic_scene(folder / "c_dubai.tif", width=80, height=60, crs="EPSG:32640",
                          transform=Affine(0.5, 0, 330000, 0, -0.5, 2780000))  # fmt: skip
    with pytest.warns(UserWarning):
        summary = api.prompt_many(folder, points=[(40, 30)],
                                  models=ModelOptions(segmenter=ShapeSegmenter()),
                                  output=tmp_path / "out")  # fmt: skip
    assert len(summary.processed) == 3
    assert summary.index_crs == "EPSG:4326"
    assert [left["scene"] for left in summary.index_left_out] == ["a_plain"]
    meta, _, geometry, values = pyogrio.raw.read(summary.index)
    assert pyogrio.read_info(summary.index)["crs"] == "EPSG:4326"
    import shapely

    scenes = dict(zip(meta["fields"], values, strict=True))["scene"].tolist()
    centres = {s: shapely.from_wkb(g).centroid for s, g in zip(scenes, geometry, strict=True)}
    assert set(centres) == {"b_texas", "c_dubai"}
    assert -100 < centres["b_texas"].x < -96 and 29 < centres["b_texas"].y < 30.5
    assert 54 < centres["c_dubai"].x < 56 and 24.5 < centres["c_dubai"].y < 25.5


def test_index_crs_is_a_choice_and_checked(tmp_path):
    folder = tmp_path / "scenes"
    write_synthetic_scene(folder / "a.tif", width=80, height=60)
    summary = api.prompt_many(folder, points=[(40, 30)], index_crs="EPSG:3857",
                              models=ModelOptions(segmenter=ShapeSegmenter()),
                              output=tmp_path / "out")  # fmt: skip
    assert pyogrio.read_info(summary.index)["crs"] == "EPSG:3857"
    with pytest.raises(InputError, match="`index_crs`"):
        api.prompt_many(folder, points=[(40, 30)], index_crs="EPSG:nope",
                        models=ModelOptions(segmenter=ShapeSegmenter()),
                        output=tmp_path / "o2")  # fmt: skip
    assert not (tmp_path / "o2").exists()


# ------------------------------------------------------------------ classes


def test_one_class_gets_a_background_class_beside_it(scene, tmp_path):
    result = segment(scene, tmp_path / "out", classes=["bright"])
    assert [c["name"] for c in result.classes] == ["bright", "background"]
    assert 0 < result.classes[0]["pixels"] < 160 * 120  # not the whole scene


def test_two_classes_of_one_name_are_refused(scene, tmp_path):
    with pytest.raises(InputError, match="Two classes are named 'road'"):
        segment(scene, tmp_path / "out", classes=["road", "road,street"])
    assert not (tmp_path / "out").exists()
