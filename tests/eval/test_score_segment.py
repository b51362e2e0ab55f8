"""`score` reads `terramask segment` label rasters as written: <scene>_labels.tif, value k+1 for
class k (matched to `classes` by name), 0 no class, 255 nodata left out."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from terramask import api
from terramask.errors import InputError
from terramask.eval.metrics import reduce_zero_label
from terramask.eval.report import score_notes
from terramask.eval.score import score_folders
from terramask.methods.ovss import OvssPredictor
from terramask.methods.vocabulary import ClassVocabulary
from terramask.options import Tiling
from terramask.pipeline.segment_run import label_raster_tags
from terramask.scene.writers import RasterWriter
from terramask.testing.scenes import write_geotiff_from_image
from tests.helpers.doubles import ColourEngine

CLASSES = ["background", "building", "road"]


def truth() -> np.ndarray:
    gt = np.zeros((64, 64), np.uint8)
    gt[5:30, 5:40] = 1
    gt[40:50, :] = 2
    return gt


def predicted() -> np.ndarray:
    """Class ids as the engine saw them (-1 no class, -2 nodata), with known mistakes."""
    pred = truth().astype(np.int64)
    pred[5:15, 5:40] = 2  # building called road
    pred[52:60, 0:20] = 1  # background called building
    pred[0:4, :] = -1  # no class
    pred[60:, :] = -2  # nodata: the scene had no pixels there
    return pred


def write_segment_labels(path, pred: np.ndarray, specs: list[str], background=None):
    """`pred` (ids into CLASSES) written as segment writes it for the vocabulary `specs`."""
    vocabulary = ClassVocabulary.parse(specs, background)
    values = np.zeros(pred.shape, np.uint8)
    for index, name in enumerate(vocabulary.names):
        values[pred == CLASSES.index(name)] = index + 1
    values[pred == -2] = 255
    height, width = pred.shape
    with RasterWriter(
        path, width=width, height=height, dtype="uint8", crs="EPSG:32633",
        transform=Affine(1, 0, 500_000, 0, -1, 4_000_000), nodata=255,
        tags=label_raster_tags(vocabulary), block_size=64,
    ) as writer:  # fmt: skip
        writer.write(values, Window(0, 0, width, height))
    return path


def expected_ious(pred: np.ndarray, gt: np.ndarray, keep: np.ndarray) -> dict[str, float | None]:
    ious = {}
    for c, name in enumerate(CLASSES):
        p, g = (pred == c) & keep, (gt == c) & keep
        union = (p | g).sum()
        ious[name] = round(100 * (p & g).sum() / union, 2) if union else None
    return ious


@pytest.fixture
def folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    Image.fromarray(truth()).save(gt_dir / "scene.png")
    return gt_dir, pred_dir


def test_segment_labels_are_paired_and_shifted_down_one(folders):
    # before: scene_labels.tif matched no ground truth ("same name"), or, renamed, its values
    # 1..K were scored as class ids 0..K-1 and its nodata as "no class"
    gt_dir, pred_dir = folders
    write_segment_labels(pred_dir / "scene_labels.tif", predicted(), CLASSES)
    side = np.zeros((64, 64), np.uint8)
    Image.fromarray(side).save(pred_dir / "scene_preview.png")
    with RasterWriter(pred_dir / "scene_score.tif", width=64, height=64, dtype="float32",
                      crs="EPSG:32633", transform=Affine(1, 0, 0, 0, -1, 0)) as writer:  # fmt: skip
        writer.write(side.astype("float32"), Window(0, 0, 64, 64))
    result = score_folders(pred_dir, gt_dir, CLASSES)

    pred = predicted()
    assert result["iou"] == expected_ious(pred, truth(), keep=pred != -2)
    assert result["images"] == 1 and result["unmatched_predictions"] == 0
    assert result["segment_side_files"] == 2
    assert result["prediction_nodata_pixels"] == 4 * 64
    [encoding] = result["prediction_encodings"]
    assert encoding["encoding"] == "terramask segment" and encoding["files"] == 1
    assert encoding["offset"] == -1 and encoding["classes"] == CLASSES
    assert encoding["value_to_class"] == {"1": "background", "2": "building", "3": "road"}
    assert encoding["no_class_value"] == 0 and encoding["nodata_value"] == 255
    assert encoding["description"].startswith("terramask segment label raster (offset -1): ")
    assert "1 background -> 0 background" in encoding["description"]
    notes = score_notes(result)
    assert notes[0] == f"1 file: {encoding['description']}."
    assert "256 pixels where a prediction has no data were left out" in notes[1]
    assert notes[2].startswith("2 score/preview rasters of segment runs were skipped")


def test_classes_are_matched_by_name_whatever_the_segment_order(folders):
    gt_dir, pred_dir = folders
    # `segment -c building -c road,street --background background`: background comes last
    write_segment_labels(pred_dir / "scene_labels.tif", predicted(), ["building", "road,street"],
                         background="background")  # fmt: skip
    result = score_folders(pred_dir, gt_dir, ["Background", "building", "road"])
    pred = predicted()
    expected = expected_ious(pred, truth(), keep=pred != -2)
    assert list(result["iou"].values()) == list(expected.values())
    [encoding] = result["prediction_encodings"]
    assert encoding["offset"] is None and "matched by name" in encoding["description"]
    assert encoding["value_to_class"] == {"1": "building", "2": "road", "3": "Background"}


def test_class_ids_and_segment_rasters_in_one_folder_are_both_described(folders):
    gt_dir, pred_dir = folders
    Image.fromarray(truth()).save(gt_dir / "other.png")
    Image.fromarray(truth()).save(pred_dir / "other.png")
    write_segment_labels(pred_dir / "scene_labels.tif", predicted(), CLASSES)
    result = score_folders(pred_dir, gt_dir, CLASSES)
    kinds = {e["encoding"]: e["files"] for e in result["prediction_encodings"]}
    assert kinds == {"class ids": 1, "terramask segment": 1}
    assert result["images"] == 2


def test_a_renamed_segment_raster_is_still_read_by_its_tags(folders):
    gt_dir, pred_dir = folders
    write_segment_labels(pred_dir / "scene.tif", predicted(), CLASSES)
    result = score_folders(pred_dir, gt_dir, CLASSES)
    pred = predicted()
    assert result["iou"] == expected_ious(pred, truth(), keep=pred != -2)
    assert result["prediction_encodings"][0]["encoding"] == "terramask segment"


def test_a_class_the_names_do_not_hold_is_refused(folders):
    gt_dir, pred_dir = folders
    write_segment_labels(pred_dir / "scene_labels.tif", predicted(), CLASSES)
    with pytest.raises(InputError) as info:
        score_folders(pred_dir, gt_dir, ["background", "house", "road"])
    message = str(info.value)
    assert "scene_labels.tif" in message and "does not name building" in message
    assert "by name" in message and "\n" not in message


def test_untagged_segment_rasters_are_explained(folders):
    gt_dir, pred_dir = folders
    Image.fromarray(truth()).save(pred_dir / "scene_labels.png")
    with pytest.raises(InputError, match="without its TERRAMASK_CLASSES tags"):
        score_folders(pred_dir, gt_dir, CLASSES)


def test_segment_then_score_end_to_end(rs_samples, tmp_path):
    stored = rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png"
    scene = write_geotiff_from_image(
        rs_samples / "potsdam" / "img_dir" / stored.name, tmp_path / "potsdam.tif"
    )
    prototypes = [(150, 150, 150), (200, 90, 70), (90, 130, 70), (40, 70, 40)]
    run = api.segment(
        scene, ["impervious surface,road", "building,roof", "low vegetation", "tree"],
        predictor=OvssPredictor(ColourEngine(prototypes), threshold=None),
        output=tmp_path / "out", tiling=Tiling(tile=256, overlap=32),
    )  # fmt: skip
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / "potsdam.png").symlink_to(stored)
    isprs = ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
    result = score_folders(tmp_path / "out", gt_dir, isprs, reduce_zero_label=True)

    with rasterio.open(run.outputs["labels"]) as src:
        values = src.read(1).astype(np.int64)
    pred = np.where((values >= 1) & (values <= 4), values - 1, -1)
    gt = reduce_zero_label(np.asarray(Image.open(stored)))
    for c, name in enumerate(isprs):
        p, g = (pred == c) & (gt != 255), gt == c
        union = (p | g).sum()
        expected = round(100 * (p & g).sum() / union, 2) if union else None
        assert result["iou"][name] == expected, name
    assert result["images"] == 1 and result["unmatched_predictions"] == 0
    assert result["segment_side_files"] == 2  # potsdam_score.tif, potsdam_preview.png
    assert result["prediction_encodings"][0]["offset"] == -1
