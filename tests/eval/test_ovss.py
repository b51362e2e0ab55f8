"""Evaluating an engine on mini LoveDA/Potsdam/Vaihingen layouts built from the real samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from terramask.errors import InputError
from terramask.eval.ovss import evaluate_ovss
from terramask.eval.presets import load_preset
from terramask.eval.score import score_folders
from tests.helpers.eval_engines import OracleEngine, UniformEngine, answers_for
from tests.helpers.eval_layouts import read_pairs


@pytest.mark.parametrize("name", ["loveda", "potsdam", "vaihingen"])
def test_an_engine_that_knows_the_truth_scores_100(mini_layout, tmp_path, name):
    root = mini_layout(name)
    preset = load_preset(name)
    pairs = read_pairs(root)
    engine = OracleEngine(answers_for(pairs, reduce=preset.reduce_zero_label))
    seen = []
    result = evaluate_ovss(
        preset,
        root,
        engine=engine,
        output_dir=tmp_path / "out",
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert result["miou"] == 100.0 and result["aacc"] == 100.0
    assert result["images"] == engine.calls == len(pairs)
    assert result["split"] == "val" and result["engine"] == "oracle"
    assert seen[-1] == ("evaluate", len(pairs), len(pairs))
    present = {v for _, label in pairs for v in np.unique(label)} - {0}
    expected_present = {preset.labels[v - 1] for v in present}
    assert {c for c, v in result["iou"].items() if v is not None} == expected_present

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["miou"] == 100.0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "mIoU 100.00" in markdown and "SegEarth-OV3" in markdown and "val split" in markdown
    predictions = sorted((tmp_path / "out" / "predictions").glob("*.png"))
    assert len(predictions) == len(pairs)


def test_systematic_confusion_gives_the_independently_computed_iou(mini_layout, tmp_path):
    root = mini_layout("loveda")
    preset = load_preset("loveda")
    pairs = read_pairs(root)
    # reduced ids: 1 building -> 2 road, 6 agriculture -> 5 forest
    engine = OracleEngine(answers_for(pairs, reduce=True), remap={1: 2, 6: 5})
    result = evaluate_ovss(preset, root, engine=engine, output_dir=tmp_path / "out")

    inter, union = np.zeros(7), np.zeros(7)
    for _, stored in pairs:
        valid = stored != 0
        truth = stored.astype(int) - 1
        pred = truth.copy()
        pred[truth == 1], pred[truth == 6] = 2, 5
        for c in range(7):
            inter[c] += ((pred == c) & (truth == c) & valid).sum()
            union[c] += (((pred == c) | (truth == c)) & valid).sum()
    expected = {preset.labels[c]: 100 * inter[c] / union[c] for c in range(7) if union[c]}
    assert result["iou"]["building"] == 0.0 and result["iou"]["agriculture"] == 0.0
    for name, value in expected.items():
        assert result["iou"][name] == pytest.approx(value, abs=0.005)
    assert result["miou"] == pytest.approx(np.mean(list(expected.values())), abs=0.005)

    # the saved predictions reproduce the numbers through `score`
    rescored = score_folders(
        tmp_path / "out" / "predictions", root / "ann_dir" / "val", preset.labels,
        reduce_zero_label=True,
    )  # fmt: skip
    assert rescored["iou"] == result["iou"] and rescored["miou"] == result["miou"]


def test_unsure_pixels_become_the_background_class(mini_layout, tmp_path):
    root = mini_layout("loveda")
    preset = load_preset("loveda")
    result = evaluate_ovss(preset, root, engine=UniformEngine(), output_dir=tmp_path / "a")
    labels = np.concatenate([label.ravel() for _, label in read_pairs(root)])
    background_share = 100 * (labels == 1).sum() / (labels != 0).sum()
    assert result["threshold"] == 0.3
    assert result["iou"]["background"] == pytest.approx(background_share, abs=0.005)
    assert result["miou"] == pytest.approx(background_share / 6, abs=0.005)  # barren absent

    # a threshold of 0 keeps the argmax (class 0 on ties): the same here, but via no rejection
    kept = evaluate_ovss(
        preset, root, engine=UniformEngine(), threshold=0.0, output_dir=tmp_path / "b"
    )
    assert kept["threshold"] == 0.0


def test_no_class_pixels_are_saved_as_255(mini_layout, tmp_path):
    root = mini_layout("potsdam")
    preset = load_preset("potsdam")
    no_background = type(preset)(**{**preset.__dict__, "background_index": None})
    evaluate_ovss(
        no_background, root, engine=UniformEngine(), threshold=0.5, output_dir=tmp_path / "out"
    )  # uniform 1/6 < 0.5 everywhere
    saved = np.asarray(Image.open(next((tmp_path / "out" / "predictions").glob("*.png"))))
    assert set(np.unique(saved)) == {255}


def test_limit_takes_the_first_images_by_name(mini_layout, tmp_path):
    root = mini_layout("loveda")
    pairs = read_pairs(root)
    engine = OracleEngine(answers_for(pairs, reduce=True))
    preset = load_preset("loveda")
    result = evaluate_ovss(preset, root, limit=2, engine=engine, output_dir=tmp_path / "out")
    assert result["images"] == 2 and result["limit"] == 2
    assert sorted(p.stem for p in (tmp_path / "out" / "predictions").iterdir()) == ["0", "1"]
    assert "limited to the first 2 by name" in (tmp_path / "out" / "report.md").read_text()


def test_earlier_results_are_kept_without_overwrite(mini_layout, tmp_path):
    root = mini_layout("vaihingen")
    preset = load_preset("vaihingen")
    engine = OracleEngine(answers_for(read_pairs(root), reduce=True))
    evaluate_ovss(preset, root, engine=engine, output_dir=tmp_path / "out")
    with pytest.raises(FileExistsError, match="`overwrite`"):
        evaluate_ovss(preset, root, engine=engine, output_dir=tmp_path / "out")
    assert engine.calls == 1  # refused before any model work
    again = evaluate_ovss(preset, root, engine=engine, output_dir=tmp_path / "out", overwrite=True)
    assert again["miou"] == 100.0


def test_missing_label_folder_is_named(mini_layout, tmp_path):
    root = mini_layout("potsdam")
    (root / "ann_dir" / "val").rename(root / "ann_dir" / "test")
    with pytest.raises(InputError) as info:
        evaluate_ovss(
            load_preset("potsdam"), root, engine=UniformEngine(), output_dir=tmp_path / "o"
        )
    message = str(info.value)
    assert str(root / "ann_dir" / "val") in message and "img_dir/val/*.png" in message
    assert "\n" not in message
    assert not (tmp_path / "o").exists()


def test_other_bad_layouts(mini_layout, tmp_path):
    preset = load_preset("loveda")
    run = dict(engine=UniformEngine(), output_dir=tmp_path / "o")
    with pytest.raises(InputError, match="is not a folder"):
        evaluate_ovss(preset, tmp_path / "nowhere", **run)
    root = mini_layout("loveda")
    with pytest.raises(InputError, match=r"img_dir/test does not exist"):
        evaluate_ovss(preset, root, split="test", **run)
    for link in (root / "img_dir" / "val").iterdir():
        link.unlink()
    with pytest.raises(InputError, match=r"img_dir/val holds no file ending in \.png"):
        evaluate_ovss(preset, root, **run)


def test_images_without_labels_are_counted(mini_layout, tmp_path):
    root = mini_layout("loveda")
    engine = OracleEngine(answers_for(read_pairs(root), reduce=True))
    (root / "ann_dir" / "val" / "2.png").unlink()
    result = evaluate_ovss(load_preset("loveda"), root, engine=engine, output_dir=tmp_path / "o")
    assert result["images"] == 2 and result["unmatched_images"] == 1
