"""Scoring folders of label maps: real labels against themselves and against known damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terramask.errors import InputError
from terramask.eval import label_check
from terramask.eval.metrics import reduce_zero_label
from terramask.eval.report import score_notes
from terramask.eval.score import score_folders

LOVEDA = ["no-data", "background", "building", "road", "water", "barren", "forest", "agri"]
ISPRS = ["boundary", "impervious", "building", "low vegetation", "tree", "car", "clutter"]


@pytest.mark.parametrize("name, classes", [("loveda", LOVEDA), ("potsdam", ISPRS)])
def test_labels_against_themselves_score_100(rs_samples, name, classes):
    ann = rs_samples / name / "ann_dir"
    result = score_folders(ann, ann, classes)
    assert result["miou"] == 100.0 and result["aacc"] == 100.0
    present = {c for c, iou in result["iou"].items() if iou is not None}
    stored = set().union(*(np.unique(np.asarray(Image.open(p))) for p in ann.glob("*.png")))
    assert present == {classes[v] for v in stored}
    assert result["images"] == len(list(ann.glob("*.png")))


def test_reduced_labels_against_themselves_score_100(rs_samples, tmp_path):
    ann = rs_samples / "vaihingen" / "ann_dir"
    preds = _write(tmp_path / "pred", {p.stem: reduce_zero_label(_read(p)) for p in ann.iterdir()})
    result = score_folders(preds, ann, ISPRS[1:], reduce_zero_label=True)
    assert result["miou"] == 100.0
    assert result["iou"]["clutter"] is None  # not in this crop: left out of the mean


def test_known_corruption_in_raw_ids(rs_samples, tmp_path):
    gt_path = rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"
    gt = _read(gt_path)
    damaged = gt.copy()
    damaged[100:200, 50:300] = 2
    damaged[400:, :] = 4
    preds = _write(tmp_path / "pred", {gt_path.stem: damaged})
    result = score_folders(preds, gt_path.parent, ISPRS)
    expected = _independent_ious([(damaged, gt)], len(ISPRS), valid=lambda g: g != 255)
    for index, name in enumerate(ISPRS):
        assert result["iou"][name] == pytest.approx(expected.get(index), abs=0.005)
    assert result["miou"] == pytest.approx(np.mean(list(expected.values())), abs=0.005)
    assert result["miou"] < 100


def test_known_corruption_with_reduce_zero_label_over_several_images(rs_samples, tmp_path):
    ann = rs_samples / "loveda" / "ann_dir"
    gts = {p.stem: _read(p) for p in sorted(ann.glob("*.png"))}
    preds, pairs = {}, []
    for i, (stem, gt) in enumerate(gts.items()):
        pred = np.where(gt == 0, 255, gt.astype(np.int64) - 1)
        pred[: 100 * (i + 1), :300] = 5  # forest painted over a growing corner
        pred[gt == 7] = 1  # agriculture always called building
        preds[stem] = pred
        pairs.append((pred, gt))
    folder = _write(tmp_path / "pred", preds)
    result = score_folders(folder, ann, LOVEDA[1:], reduce_zero_label=True)

    def shifted(pairs_):
        return [(p, g.astype(np.int64) - 1) for p, g in pairs_]

    expected = _independent_ious(shifted(pairs), 7, valid=lambda g: g >= 0)
    assert result["iou"]["agri"] == 0.0
    for index, name in enumerate(LOVEDA[1:]):
        assert result["iou"][name] == pytest.approx(expected.get(index), abs=0.005)
    assert result["miou"] == pytest.approx(np.mean(list(expected.values())), abs=0.005)


def test_unmatched_files_are_counted_not_scored(rs_samples, tmp_path):
    ann = rs_samples / "loveda" / "ann_dir"
    preds = _write(tmp_path / "pred", {"0": _read(ann / "0.png"), "extra": np.zeros((4, 4))})
    result = score_folders(preds, ann, LOVEDA)
    assert result["images"] == 1
    assert result["unmatched_predictions"] == 1 and result["unmatched_ground_truth"] == 2


def test_folder_errors_name_the_folder_or_file(rs_samples, tmp_path):
    ann = rs_samples / "loveda" / "ann_dir"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no PNG or TIFF"):
        score_folders(empty, ann, LOVEDA)
    with pytest.raises(InputError, match="does not exist"):
        score_folders(tmp_path / "missing", ann, LOVEDA)
    other = _write(tmp_path / "other", {"x": np.zeros((4, 4))})
    with pytest.raises(InputError, match="same name"):
        score_folders(other, ann, LOVEDA)
    small = _write(tmp_path / "small", {"1": np.zeros((4, 4))})
    with pytest.raises(InputError, match=r"1\.png is 4x4"):
        score_folders(small, ann, LOVEDA)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_tiff_predictions_are_read(rs_samples, tmp_path):
    import rasterio

    gt_path = rs_samples / "vaihingen" / "ann_dir" / "area1_0_0_512_512.png"
    gt = _read(gt_path)
    (tmp_path / "pred").mkdir()
    profile = {"driver": "GTiff", "width": 512, "height": 512, "count": 1, "dtype": "uint8"}
    with rasterio.open(tmp_path / "pred" / f"{gt_path.stem}.tif", "w", **profile) as dst:
        dst.write(gt, 1)
    assert score_folders(tmp_path / "pred", gt_path.parent, ISPRS)["miou"] == 100.0


def test_loveda_labels_scored_without_reduce_zero_label_are_refused(rs_samples):
    # before the check: agriculture (stored 7, 47 % of pixels) silently fell out of the scores
    ann = rs_samples / "loveda" / "ann_dir"
    with pytest.raises(InputError) as info:
        score_folders(ann, ann, LOVEDA[1:])
    message = str(info.value)
    assert message.startswith("The ground truth holds values that `classes`, `ignore_index`")
    assert "7 (" in message and "one more than the 7 names in `classes`" in message
    assert "set `reduce_zero_label`" in message and "\n" not in message
    assert "Expected: 0 background, 1 building" in message and "255 ignored" in message
    assert score_folders(ann, ann, LOVEDA)["miou"] == 100.0  # 0 named: 8 classes, 0..7


def test_raw_binary_masks_are_refused_with_the_conversion(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 4:20] = 255
    gt = _write(tmp_path / "gt", {"a": mask, "b": mask})
    pred = _write(tmp_path / "pred", {"a": mask // 255, "b": mask // 255})
    with pytest.raises(InputError, match=r"0 and 255 .*255 → 1.*label_cvt"):
        score_folders(pred, gt, ["background", "building"])
    converted = _write(tmp_path / "gt_cvt", {"a": mask // 255, "b": mask // 255})
    assert score_folders(pred, converted, ["background", "building"])["miou"] == 100.0


def test_a_few_unexpected_ground_truth_values_are_scored_and_reported(rs_samples, tmp_path):
    gt = _read(rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png").copy()
    gt[:2, :100] = 9  # 200 of 262,144 pixels: under the limit
    gts = _write(tmp_path / "gt", {"p": gt})
    preds = _write(tmp_path / "pred", {"p": np.where(gt == 9, 0, gt)})
    result = score_folders(preds, gts, ISPRS)
    assert result["unexpected_labels"] == {
        "pixels": 200, "percent": round(100 * 200 / 512**2, 4), "values": {"9": 200},
        "limit_percent": 1.0,
    }  # fmt: skip
    assert result["iou"]["boundary"] < 100.0  # boundary predicted on them: false positives
    assert score_notes(result)[-1].startswith(
        "Ground-truth values outside the expected ones: 200 pixels (0.0763 %, under the 1 % limit)"
    )


def test_score_stops_at_the_first_bad_file_once_enough_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(label_check, "LABEL_CHECK_MIN_PIXELS", 100)
    good, bad = np.zeros((10, 10)), np.full((10, 10), 40)
    arrays = {"a": good, "b": good, "c": bad, "d": good}
    gts, preds = _write(tmp_path / "gt", arrays), _write(tmp_path / "pred", arrays)
    seen = []
    with pytest.raises(InputError, match=r"40 \(33\.33 %\).*3 label maps.*c\.png"):
        score_folders(preds, gts, ["x", "y"], progress=lambda s, done, n: seen.append(done))
    assert seen == [1, 2]


def test_two_label_maps_of_one_name_are_refused(rs_samples, tmp_path):
    preds = _write(tmp_path / "pred", {"0": np.zeros((4, 4))})
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(preds / "0.tif")
    with pytest.raises(InputError, match=r"more than one label map called 0 \(0\.png, 0\.tif\)"):
        score_folders(preds, rs_samples / "loveda" / "ann_dir", LOVEDA)


def _independent_ious(pairs, k, valid) -> dict[int, float]:
    """class -> IoU% from boolean masks summed over images; classes with empty union omitted."""
    inter, union = np.zeros(k), np.zeros(k)
    for pred, gt in pairs:
        keep = valid(gt)
        for c in range(k):
            p, g = (pred == c) & keep, (gt == c) & keep
            inter[c] += np.logical_and(p, g).sum()
            union[c] += np.logical_or(p, g).sum()
    return {c: 100 * inter[c] / union[c] for c in range(k) if union[c]}


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _write(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for stem, array in arrays.items():
        Image.fromarray(np.asarray(array).astype(np.uint8)).save(folder / f"{stem}.png")
    return folder
