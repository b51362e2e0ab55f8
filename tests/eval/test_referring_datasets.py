"""Each referring benchmark layout, built tiny in a temporary folder, read back exactly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from terramask.errors import InputError
from terramask.eval.referring_datasets import (
    letterbox,
    load_referring_dataset,
    referring_dataset_names,
    unigeoseg_task,
)


def box(shape, r0, r1, c0, c1):
    out = np.zeros(shape, dtype=bool)
    out[r0:r1, c0:c1] = True
    return out


def write_image(path: Path, shape, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_mask(path: Path, mask: np.ndarray, on: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * on).save(path)


def write_json(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")


def one_paragraph(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


# --- RRSIS-D -----------------------------------------------------------------------------


def build_rrsisd(root: Path) -> dict[str, np.ndarray]:
    """Two images, a polygon and an RLE target in `test`, one ref in `val`; expected masks."""
    coco_mask = pytest.importorskip("pycocotools.mask")

    images = root / "images" / "rrsisd" / "JPEGImages"
    write_image(images / "00001.jpg", (12, 14), 1)
    write_image(images / "00002.jpg", (10, 8), 2)
    rle_target = box((10, 8), 1, 4, 5, 8)
    rle = coco_mask.encode(np.asfortranarray(rle_target.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    coco = {
        "images": [
            {"id": 1, "file_name": "00001.jpg", "height": 12, "width": 14},
            {"id": 2, "file_name": "00002.jpg", "height": 10, "width": 8},
        ],
        "annotations": [
            # Polygon corners on pixel edges: rows 3..7, columns 2..9.
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[2, 3, 10, 3, 10, 8, 2, 8]],
            },
            {"id": 11, "image_id": 2, "category_id": 2, "segmentation": rle},
            {
                "id": 12,
                "image_id": 2,
                "category_id": 1,
                # Uncompressed RLE, column-major runs from a 0-run: rows 0-1 of columns 0-1.
                "segmentation": {"size": [10, 8], "counts": [0, 2, 8, 2, 68]},
            },
        ],
        "categories": [{"id": 1, "name": "vehicle"}, {"id": 2, "name": "dam"}],
    }
    write_json(root / "instances.json", coco)
    refs = [
        {
            "ref_id": 0,
            "ann_id": 10,
            "image_id": 1,
            "split": "test",
            "sentences": [
                {"sent": "the vehicle on the left", "raw": "The vehicle"},
                {"sent": "a car"},
            ],
        },
        {
            "ref_id": 1,
            "ann_id": 11,
            "image_id": 2,
            "split": "test",
            "sentences": [{"raw": "the dam"}],
        },
        {"ref_id": 2, "ann_id": 12, "image_id": 2, "split": "val", "sentences": [{"sent": "x"}]},
    ]
    with (root / "refs(unc).p").open("wb") as handle:
        pickle.dump(refs, handle)
    return {"0": box((12, 14), 3, 8, 2, 10), "1": rle_target, "2": box((10, 8), 0, 2, 0, 2)}


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


def build_earthreason(root: Path, split: str = "test") -> dict[str, np.ndarray]:
    base = root / split
    write_image(base / "images" / "a.png", (8, 10), 3)
    write_image(base / "images" / "b.jpg", (6, 6), 4)
    write_image(base / "images" / "c.png", (5, 7), 5)
    target = box((8, 10), 2, 5, 1, 4)
    labels = target.astype(np.uint8)  # 1 = target: any non-zero value counts
    labels[2, 1] = 7
    write_mask(base / "labels" / "a.png", labels, on=1)
    write_mask(base / "labels" / "b.png", np.zeros((6, 6), bool))  # all zero: no target
    write_json(
        base / "QAs" / "a.json",
        {"questions": ["Where could boats dock?", "Q2"], "answer": "the pier"},
    )
    write_json(base / "QAs" / "b.json", {"questions": ["Which field floods?"], "answer": "none"})
    write_json(base / "QAs" / "c.json", {"question": "Any airport?", "answer": ""})  # no label file
    return {"a": target, "b": np.zeros((6, 6), bool), "c": np.zeros((5, 7), bool)}


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


GEOSEG_TRUTH = {
    "building-1": ("Level1", box((20, 20), 2, 6, 3, 9)),  # 24 pixels
    "building-2": ("Level2", box((20, 20), 0, 10, 0, 10)),  # 100 pixels
    "water-7": ("Level1", np.zeros((20, 20), bool)),  # no target
    "water-8": ("Level2", box((20, 20), 0, 4, 0, 5)),  # 20 pixels
}


def build_geoseg_bench(root: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Two categories, two levels, four 20x20 images; returns id -> (level, mask)."""
    entries: dict[str, list] = {"building": [], "water": []}
    for n, (sample_id, (level, mask)) in enumerate(GEOSEG_TRUTH.items()):
        category, number = sample_id.split("-")
        name = f"img{number}" + (".jpg" if n % 2 else ".png")
        write_image(root / "images" / level / name, (20, 20), n)
        write_mask(root / "masks" / level / f"img{number}.png", mask)
        entries[category].append(
            {
                "id": int(number),
                "difficulty": level,
                "question": f"Q {sample_id}?",
                "file_name": name,
            }
        )
    for category, listed in entries.items():
        write_json(root / "annotations" / f"{category}.json", listed)
    return GEOSEG_TRUTH


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


def build_unigeoseg(root: Path, split: str = "test") -> dict[str, tuple[str, str, np.ndarray]]:
    """A referring, an interactive and a two-question reasoning entry; id -> (task, q, mask)."""
    specs = [
        ("bench/ref/a", (16, 32), box((16, 32), 0, 4, 0, 4), {"sentence": "the red roof"}),
        ("bench/intera/b", (8, 8), box((8, 8), 2, 4, 2, 4), {"points": [[3, 2]]}),
        ("bench/reason/c", (10, 10), np.zeros((10, 10), bool), {"text": ["Why 1?", "Why 2?"]}),
    ]
    listing, expected = [], {}
    for n, (stem, shape, mask, doc) in enumerate(specs):
        entry = {"img": f"{stem}.png", "mask": f"{stem}_mask.png", "json": f"{stem}.json"}
        write_image(root / entry["img"], shape, n)
        write_mask(root / entry["mask"], mask, on=1)
        write_json(root / entry["json"], doc)
        listing.append(entry)
    write_json(root / f"{split}.json", listing)
    expected["0-a"] = ("referring", "the red roof", specs[0][2])
    expected["1-b"] = (
        "interactive",
        "Segment the object at the point(s) [[3, 2]] (pixel x, y).",
        specs[1][2],
    )
    expected["2-c-0"] = ("reasoning", "Why 1?", specs[2][2])
    expected["2-c-1"] = ("reasoning", "Why 2?", specs[2][2])
    return expected


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
