"""Ground truth in an encoding the preset does not expect stops `eval` early, with the fix."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.eval import label_check
from terramask.eval.label_check import LabelCheck, expected_text
from terramask.eval.ovss import evaluate_ovss
from terramask.eval.presets import load_preset
from tests.helpers.eval_engines import OracleEngine, answers_for
from tests.helpers.eval_layouts import write_preset_layout


def building_tiles(count: int, size: int = 64, building: int = 255) -> dict:
    """name -> (random RGB image, mask with a building block valued `building`)."""
    rng = np.random.default_rng(7)
    tiles = {}
    for i in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[8 + i : 30 + i, 10:40] = building
        tiles[f"tile_{i}"] = (image, mask)
    return tiles


class Factory:
    """An engine factory that records whether it was ever called."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0

    def __call__(self):
        self.calls += 1
        return self.engine


def test_inria_with_raw_0_255_masks_stops_before_any_model(tmp_path):
    # before the check: building IoU 0 and mIoU ~49 with no warning (255 silently ignored)
    preset = load_preset("inria")
    raw = building_tiles(3)
    root = write_preset_layout(preset, tmp_path / "inria", raw)
    converted = {k: (img, (m == 255).astype(np.uint8)) for k, (img, m) in raw.items()}
    factory = Factory(OracleEngine(answers_for(converted.values(), reduce=False)))
    with pytest.raises(InputError) as info:
        evaluate_ovss(preset, root, engine=factory, output_dir=tmp_path / "o")
    message = str(info.value)
    assert "Inria Aerial Image Labeling preset" in message
    assert "0 and 255" in message and "255 → 1" in message and "label_cvt" in message
    assert "255 (" in message and "0 background, 1 building" in message
    assert "tile_0.png" in message and "\n" not in message
    assert factory.calls == 0 and not (tmp_path / "o").exists()

    fixed = write_preset_layout(preset, tmp_path / "inria_cvt", converted)
    result = evaluate_ovss(preset, fixed, engine=factory, output_dir=tmp_path / "o")
    assert result["miou"] == 100.0 and result["iou"]["building"] == 100.0
    assert result["unexpected_labels"]["pixels"] == 0


def test_a_bad_label_later_in_the_run_stops_it_there(tmp_path, monkeypatch):
    size = 64
    monkeypatch.setattr(label_check, "LABEL_CHECK_MIN_PIXELS", size * size)
    preset = load_preset("whu_aerial")
    tiles = building_tiles(4, size, building=1)
    good = dict(tiles)
    image, mask = tiles["tile_2"]
    bad = mask.copy()
    bad[32:, :] = 7  # half the tile holds a value no class has
    tiles["tile_2"] = (image, bad)
    root = write_preset_layout(preset, tmp_path / "whu", tiles, split="val")
    engine = OracleEngine(answers_for(good.values(), reduce=False))
    done = []
    with pytest.raises(InputError, match=r"7 \(") as info:
        evaluate_ovss(
            preset, root, engine=engine, output_dir=tmp_path / "o",
            progress=lambda stage, d, total: done.append(d),
        )  # fmt: skip
    assert engine.calls == 2 and max(done) == 2  # tiles 0 and 1 ran; tile 2 stopped the run
    assert "tile_2.png" in str(info.value) and "3 label maps" in str(info.value)


def test_a_few_odd_pixels_are_scored_and_reported(tmp_path):
    preset = load_preset("whu_aerial")
    tiles = building_tiles(2, 64, building=1)
    answers = answers_for(tiles.values(), reduce=False)
    image, mask = tiles["tile_1"]
    speckled = mask.copy()
    speckled[0, :20] = 2  # JPEG-like speckle: 20 of 8192 pixels (0.24 %)
    tiles["tile_1"] = (image, speckled)
    root = write_preset_layout(preset, tmp_path / "whu", tiles, split="val")
    result = evaluate_ovss(preset, root, engine=OracleEngine(answers), output_dir=tmp_path / "o")
    assert result["unexpected_labels"] == {
        "pixels": 20, "percent": round(100 * 20 / 8192, 4), "values": {"2": 20},
        "limit_percent": 1.0,
    }  # fmt: skip
    # scored as mmsegmentation does: background predicted there counts as a false positive
    background = (np.concatenate([m.ravel() for _, m in tiles.values()]) == 0).sum()
    assert result["iou"]["background"] == pytest.approx(
        100 * background / (background + 20), abs=0.005
    )
    markdown = (tmp_path / "o" / "report.md").read_text()
    assert "Ground-truth values outside the expected ones: 20 pixels" in markdown
    assert "2 (20 px)" in markdown and "under the 1 % limit" in markdown


def test_loveda_labels_without_reduce_zero_label_are_named(mini_layout, tmp_path):
    root = mini_layout("loveda")
    preset = load_preset("loveda")
    unreduced = type(preset)(**{**preset.__dict__, "reduce_zero_label": False})
    with pytest.raises(InputError) as info:
        evaluate_ovss(unreduced, root, engine=Factory(None), output_dir=tmp_path / "o")
    message = str(info.value)
    assert "7 (" in message and "one more than the preset's 7 classes" in message
    assert "stored 1..7 with 0 as no-data" in message


def test_the_rule_judges_after_the_minimum_and_at_the_end():
    check = LabelCheck(["a", "b", "c"], min_pixels=100)
    check.add(np.full((5, 5), 9, np.uint8), "first.png")  # 25 px, all odd: not judged yet
    check.add(np.zeros((5, 5), np.uint8), "second.png")
    with pytest.raises(InputError, match=r"9 \(50\.00 %\)"):
        check.finish()  # a small data set is judged whole at the end
    check = LabelCheck(["a", "b", "c"], min_pixels=100)
    check.add(np.zeros((10, 10), np.uint8), "ok.png")
    check.add(np.pad(np.full((1, 1), 9), (0, 9)).astype(np.uint8), "one.png")  # 1 of 200: 0.5 %
    check.finish()
    assert check.unexpected() == {9: 1}
    with pytest.raises(InputError, match=r"ids up to 9 need 10 names"):
        check.add(np.full((10, 10), 9, np.uint8), "bad.png")  # judged as soon as it is read


def test_negative_ground_truth_is_named():
    check = LabelCheck(["a", "b", "c"], min_pixels=1)
    with pytest.raises(InputError, match=r"-1 \(50\.00 %\).*Negative values are no class ids"):
        check.add(np.array([[0, -1]], np.int16), "signed.tif")


def test_binary_masks_count_the_ignore_index_only_without_class_one():
    check = LabelCheck(["background", "building"], min_pixels=10**9)
    check.add(np.array([[0, 0, 255, 255]], np.uint8), "raw.png")
    assert check.unexpected() == {255: 2}
    check = LabelCheck(["background", "building"], min_pixels=10**9)
    check.add(np.array([[0, 1, 1, 255]], np.uint8), "ignored_border.png")
    assert check.unexpected() == {}
    check = LabelCheck(["a", "b", "c"], min_pixels=10**9)  # not binary: 255 is just ignored
    check.add(np.array([[0, 0, 255, 255]], np.uint8), "x.png")
    assert check.unexpected() == {}


def test_expected_values_in_words():
    assert expected_text(["background", "building"], 255, False) == (
        "0 background, 1 building; 255 ignored"
    )
    reduced = expected_text(["a", "b", "c"], 255, True)
    assert reduced.startswith("1 a, 2 b, 3 c (class ids 0..2") and "0 and 255 ignored" in reduced
    many = expected_text([f"c{i}" for i in range(16)], 255, False)
    assert many.startswith("0 c0, 1 c1, 2 c2, ..., 15 c15")
