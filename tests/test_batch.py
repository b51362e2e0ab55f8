"""Many scenes: inputs from folders, globs, lists and STAC; per-scene results, a merged index,
failures isolated, and a re-run that resumes instead of redoing."""

from __future__ import annotations

import json
import re

import pyogrio
import pytest

from terramask import api
from terramask.errors import InputError
from terramask.methods.ovss import OvssPredictor
from terramask.options import Tiling
from terramask.scene import expand_inputs
from terramask.testing.scenes import write_synthetic_scene
from tests.helpers.doubles import ColourEngine, InterruptedColourEngine

CLASSES = ["bright", "dark"]
PROTOTYPES = [(220, 220, 220), (40, 40, 40)]


def test_folder_glob_and_list(tmp_path):
    for name in ("b.tif", "a.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs(tmp_path) == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    assert expand_inputs(str(tmp_path / "*.tif")) == [
        str(tmp_path / "a.tif"), str(tmp_path / "b.tif"),
    ]  # fmt: skip
    listing = tmp_path / "scenes.txt"
    listing.write_text("# two scenes\nhttps://example.com/x.tif\n\n/data/y.tif\n")
    assert expand_inputs(listing) == ["https://example.com/x.tif", "/data/y.tif"]
    assert expand_inputs("s3://bucket/z.tif") == ["s3://bucket/z.tif"]


def test_stac_item_and_collection(tmp_path):
    item = {
        "type": "Feature", "id": "one",
        "assets": {"thumbnail": {"href": "t.png"}, "visual": {"href": "one.tif"}},
    }  # fmt: skip
    (tmp_path / "item.json").write_text(json.dumps(item))
    assert expand_inputs(tmp_path / "item.json") == [str(tmp_path / "one.tif")]
    other = {"id": "two", "assets": {"B04": {"href": "https://x/two_b04.tif"}}}
    collection = {"type": "FeatureCollection", "features": [item, other]}
    (tmp_path / "items.json").write_text(json.dumps(collection))
    with pytest.raises(InputError, match="B04"):
        expand_inputs(tmp_path / "items.json")
    (tmp_path / "one_b.json").write_text(
        json.dumps({"id": "o", "assets": {"B04": {"href": "a.tif"}}})
    )
    assert expand_inputs(tmp_path / "one_b.json", asset="B04") == [str(tmp_path / "a.tif")]


def test_nothing_to_process_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no raster"):
        expand_inputs(tmp_path)
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs(str(tmp_path / "*.tif"))


def test_many_scenes_with_one_broken_then_resumed(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_synthetic_scene(scenes / "north.tif", width=120, height=90)
    write_synthetic_scene(scenes / "south.tif", width=100, height=80, crs="EPSG:32634")
    (scenes / "broken.tif").write_text("not a raster")
    out = tmp_path / "out"
    engine = ColourEngine(PROTOTYPES)
    predictor = OvssPredictor(engine)
    summary = api.segment_many(
        scenes,
        CLASSES,
        predictor=predictor,
        output=out,
        tiling=Tiling(tile=64, overlap=16),
    )  # fmt: skip
    assert [s.rsplit("/", 1)[-1] for s in summary.processed] == ["north.tif", "south.tif"]
    assert len(summary.failed) == 1 and "broken.tif" in summary.failed[0]["reason"]
    assert summary.tiles > 2
    meta, _, geometry, values = pyogrio.raw.read(out / "index.gpkg")
    fields = dict(zip(meta["fields"], values, strict=True))
    assert set(fields["scene"]) == {"north", "south"}
    assert len(geometry) == sum(
        len(pyogrio.raw.read(out / f"{n}.gpkg")[2]) for n in ("north", "south")
    )
    before = {p.name: p.read_bytes() for p in out.glob("north*")}
    calls = engine.calls

    again = api.segment_many(
        scenes,
        CLASSES,
        predictor=predictor,
        output=out,
        tiling=Tiling(tile=64, overlap=16),
    )  # fmt: skip
    assert len(again.already_done) == 2 and not again.processed and len(again.failed) == 1
    assert engine.calls == calls  # nothing recomputed
    assert {p.name: p.read_bytes() for p in out.glob("north*")} == before
    saved = json.loads((out / "summary.json").read_text())
    assert saved["already_done"] == 2 and saved["failed"][0]["scene"].endswith("broken.tif")


def test_two_inputs_with_one_name_are_refused(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_synthetic_scene(tmp_path / folder / "tile.tif", width=40, height=40)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'a' / 'tile.tif'}\n{tmp_path / 'b' / 'tile.tif'}\n")
    with pytest.raises(InputError, match="share the name tile"):
        api.segment_many(listing, CLASSES, predictor=OvssPredictor(ColourEngine(PROTOTYPES)),
                         output=tmp_path / "out")  # fmt: skip


@pytest.mark.slow
def test_cli_runs_a_folder_with_a_tiny_clip(tmp_path):
    from click.testing import CliRunner

    from terramask.cli import cli
    from terramask.testing.tiny_models import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    (tmp_path / "in").mkdir()
    for name in ("east", "west"):
        write_synthetic_scene(tmp_path / "in" / f"{name}.tif", width=96, height=80)
    args = ["segment", tmp_path / "in", "-c", "roof", "-c", "grass", "--engine", "clip",
            "--clip", clip, "-o", tmp_path / "out", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in args], obj={})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["processed"] == 2 and data["failed"] == []
    assert (tmp_path / "out" / "east_labels.tif").exists()
    assert (tmp_path / "out" / "index.gpkg").exists()

    one = ["segment", tmp_path / "in" / "east.tif", "-c", "roof", "-c", "grass", "--engine",
           "clip", "--clip", clip, "-o", tmp_path / "single", "--tile", "64",
           "--overlap", "8"]  # fmt: skip
    result = CliRunner().invoke(cli, [str(a) for a in one], obj={})
    assert result.exit_code == 0, result.output
    assert re.search(r"4 tiles \(0 without data skipped\) in [\d.]+ s, peak memory \d+ MiB",
                     result.stdout)  # fmt: skip


def test_a_batch_interrupted_inside_a_scene_resumes_to_identical_outputs(tmp_path):
    import hashlib

    scenes = tmp_path / "scenes"
    for i in range(3):
        write_synthetic_scene(scenes / f"s{i}.tif", width=200, height=150, seed=i)

    def run(out, engine):
        return api.segment_many(
            scenes,
            CLASSES,
            output=out,
            predictor=OvssPredictor(engine),
            tiling=Tiling(tile=64, overlap=16),
        )  # fmt: skip

    run(tmp_path / "whole", InterruptedColourEngine(PROTOTYPES))
    with pytest.raises(KeyboardInterrupt):
        # scene s0 has 12 tiles: call 22 is inside s1
        run(tmp_path / "resumed", InterruptedColourEngine(PROTOTYPES, stop_at=22))
    engine = InterruptedColourEngine(PROTOTYPES)
    summary = run(tmp_path / "resumed", engine)
    assert [s.rsplit("/", 1)[-1] for s in summary.already_done] == ["s0.tif"]
    assert engine.calls == 2 * 12 - 9  # s1's 9 finished tiles are not redone

    def digest(folder):
        names = sorted(p.name for p in folder.iterdir() if p.name != "summary.json")
        return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}

    assert digest(tmp_path / "resumed") == digest(tmp_path / "whole")
    assert ".terramask-work" not in digest(tmp_path / "resumed")
