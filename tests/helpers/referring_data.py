"""Builders of tiny referring-segmentation benchmark layouts (RRSIS-D, EarthReason, GeoSeg's
GeoSeg-Bench, UniGeoSeg's GeoSeg-Bench) in a temporary folder; each returns the masks a loader
must read back."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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


# --- EarthReason -------------------------------------------------------------------------


def build_earthreason(root: Path, split: str = "test") -> dict[str, np.ndarray]:
    """Four images: "a" with two questions, "b" answered "none" (all-zero label), "c" with an
    empty answer and no label file, "d" with an answer list; stem -> expected mask."""
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
    write_image(base / "images" / "d.png", (7, 9), 6)
    courts = box((7, 9), 1, 3, 2, 6)
    write_mask(base / "labels" / "d.png", courts)
    write_json(base / "QAs" / "d.json", {"questions": ["Where are the courts?"],
                                          "answer": ["the courts", "tennis"]})  # fmt: skip
    return {"a": target, "b": np.zeros((6, 6), bool), "c": np.zeros((5, 7), bool), "d": courts}


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


def build_unigeoseg_release(root: Path, split: str = "test") -> dict[str, dict]:
    """The Hugging Face release's layout: interactive/, ref/ and reason/, each holding
    `{split}.json` and its files; masks 0/255 with a stray 128 (background for UniGeoSeg).

    Returns sample id -> {"task", "question", "mask", "coordinates"} as the reference
    protocol reads them.
    """
    wide = (8, 16)  # letterboxed to 256x512 on the 512 canvas: 128 rows of padding above
    specs = {
        "interactive": [
            ("box", wide, box(wide, 2, 6, 4, 12),
             {"question": ["Please segment the target corresponding to the box "
                           "x0,y0=[0.25,0.25], x1,y1=[0.75,0.75]."], "reason": []},
             {"box": [0.25, 0.25, 0.75, 0.75]}),
            ("points", (10, 10), box((10, 10), 0, 5, 0, 5),
             {"question": ["Please segment the region corresponding to the points [0.1,0.2], "
                           "[0.3,0.4]. Also [0.5, 0.5] is no point."]},
             {"points": [[0.1, 0.2], [0.3, 0.4]]}),
            ("four", (6, 6), box((6, 6), 0, 2, 0, 2),
             {"question": ["Points [0.1,0.1] [0.2,0.2] [0.3,0.3] [0.4,0.4]."]}, None),
        ],
        "ref": [
            ("roof", (12, 6), box((12, 6), 0, 6, 0, 3),
             {"question": ["the roof left of the road", "another phrasing"],
              "reason": ["it is red"]}, None),
        ],
        "reason": [
            ("pool", (6, 6), box((6, 6), 1, 3, 1, 3),
             {"question": ["Where could people swim?"], "reason": []}, None),
        ],
    }  # fmt: skip
    expected: dict[str, dict] = {}
    for folder, entries in specs.items():
        listing = []
        for n, (stem, shape, mask, doc, coordinates) in enumerate(entries):
            entry = {"img": f"images/{stem}.png", "mask": f"masks/{stem}.png",
                     "json": f"json/{stem}.json"}  # fmt: skip
            write_image(root / folder / entry["img"], shape, n + 10 * len(folder))
            stored = mask.astype(np.uint8) * 255
            stored[-1, -1] = 128  # neither 0 nor 255: not target for UniGeoSeg
            write_mask(root / folder / entry["mask"], stored, on=1)
            write_json(root / folder / entry["json"], doc)
            listing.append(entry)
            task = {"interactive": "interactive", "ref": "referring", "reason": "reasoning"}
            expected[f"{folder}-{n}-{stem}"] = {
                "task": task[folder],
                "question": doc["question"][0],
                "mask": mask,
                "coordinates": coordinates,
            }
        write_json(root / folder / f"{split}.json", listing)
    return expected
