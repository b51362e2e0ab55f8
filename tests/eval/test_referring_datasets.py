"""Each referring benchmark layout, built tiny in a temporary folder, read back exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.eval.referring_datasets import (
    letterbox,
    load_referring_dataset,
    referring_dataset_names,
    unigeoseg_task,
)
from tests.helpers.referring_data import (
    box,
    build_earthreason,
    build_geoseg_bench,
    build_rrsisd,
    build_unigeoseg,
    write_json,
)


def one_paragraph(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


# --- RRSIS-D -----------------------------------------------------------------------------


def test_rrsisd_one_sample_per_sentence_with_coco_masks(tmp_path):
    expected = build_rrsisd(tmp_path)
    data = load_referring_dataset("rrsis-d", tmp_path)  # default split: test
    assert data.split == "test" and data.group_name == "category"
    assert [(s.id, s.question, s.group) for s in data.samples] == [
        ("0-0", "the vehicle on the left", "vehicle"),
        ("0-1", "a car", "vehicle"),
        ("1-0", "the dam", "dam"),
    ]
    for sample in data.samples:
        assert np.array_equal(sample.load_mask(), expected[sample.id.split("-")[0]])
        assert sample.answer_text is None
    assert data.samples[2].image_path.name == "00002.jpg"
    assert data.samples[0].load_image().shape == (12, 14, 3)
    val = load_referring_dataset("RRSIS_D", tmp_path, split="val")
    assert [s.id for s in val.samples] == ["2-0"]
    assert np.array_equal(val.samples[0].load_mask(), expected["2"])
    assert len(load_referring_dataset("rrsis-d", tmp_path, limit=2).samples) == 2


def test_rrsisd_layout_errors(tmp_path):
    build_rrsisd(tmp_path)
    with pytest.raises(InputError) as exc:
        load_referring_dataset("rrsis-d", tmp_path, split="train")
    assert "test, val" in one_paragraph(exc) and "`split`" in str(exc.value)
    refs_file = tmp_path / "refs(unc).p"
    refs = pickle.loads(refs_file.read_bytes())
    refs[0]["ann_id"] = 99
    refs_file.write_bytes(pickle.dumps(refs))
    with pytest.raises(InputError) as exc:
        load_referring_dataset("rrsis-d", tmp_path)
    assert "99" in one_paragraph(exc) and "refs(unc).p" in str(exc.value)
    (tmp_path / "instances.json").unlink()
    with pytest.raises(InputError) as exc:
        load_referring_dataset("rrsis-d", tmp_path)
    assert "instances.json" in one_paragraph(exc)
    (tmp_path / "refs(unc).p").write_bytes(b"not a pickle")
    with pytest.raises(InputError) as exc:
        load_referring_dataset("rrsis-d", tmp_path)
    assert "refs(unc).p" in one_paragraph(exc)


def test_rrsisd_missing_image_is_named(tmp_path):
    build_rrsisd(tmp_path)
    (tmp_path / "images" / "rrsisd" / "JPEGImages" / "00002.jpg").unlink()
    with pytest.raises(InputError) as exc:
        load_referring_dataset("rrsis-d", tmp_path)
    assert "00002.jpg" in one_paragraph(exc)


# --- EarthReason -------------------------------------------------------------------------


def test_earthreason_one_sample_per_question_and_empty_targets(tmp_path):
    expected = build_earthreason(tmp_path)
    data = load_referring_dataset("earthreason", tmp_path)
    assert data.split == "test" and data.group_name is None
    assert [(s.id, s.question, s.answer_text, s.group) for s in data.samples] == [
        ("a-0", "Where could boats dock?", "the pier", None),
        ("a-1", "Q2", "the pier", None),
        ("b-0", "Which field floods?", "none", None),
        ("c-0", "Any airport?", "", None),
    ]
    for sample in data.samples:
        assert np.array_equal(sample.load_mask(), expected[sample.id[0]])


def test_earthreason_layout_errors(tmp_path):
    build_earthreason(tmp_path)
    with pytest.raises(InputError) as exc:
        load_referring_dataset("earthreason", tmp_path, split="val")
    assert str(tmp_path / "val" / "images") in one_paragraph(exc)
    (tmp_path / "test" / "labels" / "a.png").unlink()
    with pytest.raises(InputError) as exc:
        load_referring_dataset("earthreason", tmp_path)
    assert "a.png" in one_paragraph(exc) and "labels" in str(exc.value)
    write_json(tmp_path / "test" / "QAs" / "a.json", {"answer": "x"})
    with pytest.raises(InputError) as exc:
        load_referring_dataset("earthreason", tmp_path)
    assert "a.json" in one_paragraph(exc) and "questions" in str(exc.value)


# --- GeoSeg-Bench (GeoSeg's) -------------------------------------------------------------


def test_geoseg_bench_groups_by_difficulty(tmp_path):
    expected = build_geoseg_bench(tmp_path)
    data = load_referring_dataset("geoseg-bench", tmp_path)
    assert data.split is None and data.binary_metrics and data.group_name == "difficulty"
    assert [s.id for s in data.samples] == list(expected)
    for sample in data.samples:
        level, mask = expected[sample.id]
        assert sample.group == level and sample.question == f"Q {sample.id}?"
        assert sample.image_path.parent == tmp_path / "images" / level
        assert np.array_equal(sample.load_mask(), mask)


def test_geoseg_bench_layout_errors(tmp_path):
    with pytest.raises(InputError) as exc:
        load_referring_dataset("geoseg-bench", tmp_path)
    assert "annotations" in one_paragraph(exc)
    build_geoseg_bench(tmp_path)
    with pytest.raises(InputError) as exc:
        load_referring_dataset("geoseg-bench", tmp_path, split="test")
    assert "no splits" in one_paragraph(exc)
    (tmp_path / "masks" / "Level2" / "img8.png").unlink()
    with pytest.raises(InputError) as exc:
        load_referring_dataset("geoseg-bench", tmp_path)
    assert "img8.png" in one_paragraph(exc)
    write_json(tmp_path / "annotations" / "water.json", [{"id": 1, "question": "q"}])
    with pytest.raises(InputError) as exc:
        load_referring_dataset("geoseg-bench", tmp_path)
    assert "water.json" in one_paragraph(exc) and "difficulty" in str(exc.value)


# --- UniGeoSeg's GeoSeg-Bench ------------------------------------------------------------


def test_unigeoseg_entries_tasks_and_instructions(tmp_path):
    expected = build_unigeoseg(tmp_path)
    data = load_referring_dataset("unigeoseg-bench", tmp_path)
    assert data.score_size == 512 and data.group_name == "task"
    assert [s.id for s in data.samples] == list(expected)
    for sample in data.samples:
        task, question, mask = expected[sample.id]
        assert (sample.group, sample.question) == (task, question)
        assert np.array_equal(sample.load_mask(), mask)


def test_unigeoseg_task_from_path():
    assert unigeoseg_task("ref/x.json") == "referring"
    assert unigeoseg_task("data/intera/x.json") == "interactive"
    assert unigeoseg_task("data\\ref\\x.json") == "referring"
    assert unigeoseg_task("data/reason/x.json") == "reasoning"
    assert unigeoseg_task("data/refer/x.json") == "reasoning"  # only the folder "ref" counts


def test_unigeoseg_layout_errors(tmp_path):
    with pytest.raises(InputError) as exc:
        load_referring_dataset("unigeoseg-bench", tmp_path, split="val")
    assert "val.json" in one_paragraph(exc)
    build_unigeoseg(tmp_path)
    write_json(tmp_path / "bench" / "ref" / "a.json", {"shapes": []})
    with pytest.raises(InputError) as exc:
        load_referring_dataset("unigeoseg-bench", tmp_path)
    assert "a.json" in one_paragraph(exc) and "question" in str(exc.value)
    write_json(tmp_path / "test.json", [{"img": "bench/ref/a.png", "json": "bench/ref/a.json"}])
    with pytest.raises(InputError) as exc:
        load_referring_dataset("unigeoseg-bench", tmp_path)
    assert "mask" in one_paragraph(exc)


def test_letterbox_resizes_the_long_side_and_pads_right_and_below():
    wide = box((4, 8), 1, 3, 2, 5)
    out = letterbox(wide, 16)
    assert out.shape == (16, 16) and out.dtype == bool
    assert np.array_equal(out[:8], np.kron(wide, np.ones((2, 2), bool)))
    assert not out[8:].any()
    tall = box((6, 3), 0, 6, 1, 2)
    out = letterbox(tall, 12)
    assert np.array_equal(out[:, :6], np.kron(tall, np.ones((2, 2), bool)))
    assert not out[:, 6:].any()
    assert letterbox(np.zeros((700, 300), bool)).shape == (512, 512)


def test_unknown_dataset_and_missing_root(tmp_path):
    assert referring_dataset_names() == [
        "rrsis-d",
        "earthreason",
        "geoseg-bench",
        "unigeoseg-bench",
    ]
    with pytest.raises(InputError) as exc:
        load_referring_dataset("refcoco", tmp_path)
    assert "rrsis-d" in one_paragraph(exc)
    with pytest.raises(InputError) as exc:
        load_referring_dataset("earthreason", tmp_path / "nowhere")
    assert "nowhere" in one_paragraph(exc)
