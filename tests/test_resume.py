"""An interrupted `segment` resumes from its finished tiles, and its outputs are byte-identical
to an uninterrupted run's; a store left by other settings is never mixed in."""

from __future__ import annotations

import hashlib

import pytest

from terramask import api
from terramask.errors import OutputError
from terramask.methods.ovss import OvssPredictor
from terramask.options import PolygonOptions, Tiling
from terramask.pipeline.tile_store import WORK_FOLDER
from terramask.testing.scenes import write_geotiff_from_image
from tests.helpers.doubles import ColourEngine, InterruptedColourEngine

CLASSES = ["impervious surface,road", "building,roof", "low vegetation", "tree"]
PROTOTYPES = [(150, 150, 150), (200, 90, 70), (90, 130, 70), (40, 70, 40)]
FILES = ("_labels.tif", "_score.tif", ".gpkg", ".geojson", "_preview.png", ".json")


@pytest.fixture(scope="module")
def potsdam(rs_samples, tmp_path_factory):
    image = rs_samples / "potsdam" / "img_dir" / "2_10_0_0_512_512.png"
    return write_geotiff_from_image(image, tmp_path_factory.mktemp("p") / "potsdam.tif")


def digests(folder, stem="potsdam"):
    return {s: hashlib.sha256((folder / f"{stem}{s}").read_bytes()).hexdigest() for s in FILES}


def segment(scene, out, engine, classes=CLASSES):
    return api.segment(
        scene,
        classes,
        predictor=OvssPredictor(engine),
        output=out,
        tiling=Tiling(tile=128, overlap=32),
        polygons=PolygonOptions(min_area=4),
    )  # fmt: skip


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(potsdam, tmp_path):
    whole = segment(potsdam, tmp_path / "whole", ColourEngine(PROTOTYPES))
    assert whole.tiles == {"total": 25, "skipped_no_data": 0, "resumed": 0}
    assert not (tmp_path / "whole" / WORK_FOLDER).exists()  # the store goes once outputs exist

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        segment(potsdam, out, InterruptedColourEngine(PROTOTYPES, stop_at=7))
    assert sorted(p.name for p in out.iterdir()) == [WORK_FOLDER]  # no output, only tiles
    kept = list((out / WORK_FOLDER / "potsdam").glob("*.npz"))
    assert len(kept) == 6

    engine = ColourEngine(PROTOTYPES)
    resumed = segment(potsdam, out, engine)
    assert engine.calls == 19 and resumed.tiles["resumed"] == 6
    assert digests(out) == digests(tmp_path / "whole")
    assert resumed.classes == whole.classes


def test_a_store_from_other_settings_is_discarded(potsdam, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        segment(potsdam, out, InterruptedColourEngine(PROTOTYPES, stop_at=5),
                classes=["pavement", *CLASSES[1:]])  # fmt: skip
    engine = ColourEngine(PROTOTYPES)
    segment(potsdam, out, engine)  # other classes: every tile again
    assert engine.calls == 25
    segment(potsdam, tmp_path / "fresh", ColourEngine(PROTOTYPES))
    assert digests(out) == digests(tmp_path / "fresh")


def test_identical_reruns_are_byte_identical(potsdam, tmp_path):
    """Nothing in the outputs records when they were written (GeoPackage dates are fixed)."""
    segment(potsdam, tmp_path / "a", ColourEngine(PROTOTYPES))
    segment(potsdam, tmp_path / "b", ColourEngine(PROTOTYPES))
    assert digests(tmp_path / "a") == digests(tmp_path / "b")


def test_a_corrupt_tile_file_is_recomputed_not_trusted(potsdam, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        segment(potsdam, out, InterruptedColourEngine(PROTOTYPES, stop_at=4))
    store = out / WORK_FOLDER / "potsdam"
    (store / "1.npz").write_bytes(b"truncated")
    engine = ColourEngine(PROTOTYPES)
    segment(potsdam, out, engine)
    assert engine.calls == 23  # 22 never done + the corrupt one
    segment(potsdam, tmp_path / "fresh", ColourEngine(PROTOTYPES))
    assert digests(out) == digests(tmp_path / "fresh")


def test_interrupted_while_writing_outputs_the_same_command_finishes(potsdam, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """Ctrl-C after the COGs and vectors, before the preview and the report: nothing of the
    set reaches the output folder (it is all or nothing), the tiles are kept, no --overwrite
    is needed to finish, and the result is the uninterrupted one."""
    from terramask.pipeline import segment_run

    segment(potsdam, tmp_path / "whole", ColourEngine(PROTOTYPES))
    out = tmp_path / "o"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(segment_run, "write_preview", interrupted)
        with pytest.raises(KeyboardInterrupt):
            segment(potsdam, out, ColourEngine(PROTOTYPES))
    assert sorted(p.name for p in out.iterdir()) == [".terramask-work"]  # only the tiles
    engine = ColourEngine(PROTOTYPES)
    segment(potsdam, out, engine)
    assert engine.calls == 0  # every tile was kept
    assert digests(out) == digests(tmp_path / "whole")
    with pytest.raises(OutputError, match="already exist"):  # finished: no silent overwrite now
        segment(potsdam, out, ColourEngine(PROTOTYPES))


def test_seams_merge_exactly_on_a_geographic_grid_and_empty_tiles_are_kept(tmp_path):
    """Pixel sizes that are not exact in binary (1″ in degrees) must not leave seam gaps,
    and a tile with data but no polygon (all "no class") must store and load."""
    from affine import Affine

    from terramask.testing.scenes import write_synthetic_scene

    transform = Affine(1 / 3600, 0, 12.3456789, 0, -1 / 3600, 45.987654321)
    scene = write_synthetic_scene(tmp_path / "geo.tif", width=260, height=200, crs="EPSG:4326",
                                  transform=transform)  # fmt: skip
    counts = []
    for tile in (1024, 64):
        out = tmp_path / f"t{tile}"
        result = api.segment(
            scene,
            CLASSES,
            predictor=OvssPredictor(ColourEngine(PROTOTYPES)),
            output=out,
            tiling=Tiling(tile=tile, overlap=8),
        )  # fmt: skip
        counts.append([c["polygons"] for c in result.classes])
    assert counts[0] == counts[1]

    import numpy as np
    from rasterio.windows import Window

    from terramask.pipeline.segment_tiles import TileResult
    from terramask.pipeline.tile_store import TileStore

    store = TileStore(tmp_path / "store", {"k": 1})
    empty = TileResult(0, Window(0, 0, 4, 4), np.zeros((4, 4), np.uint8),
                       np.zeros((4, 4), np.float32), np.array([16, 0]))  # fmt: skip
    store.save(empty)
    assert store.load(0).features == [] and store.done() == {0}
