"""Training data for click tuning: layouts, the held-out split, the resumable click cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from terramask.errors import InputError
from terramask.options import ClickTraining, ModelOptions
from terramask.train.data import detect_layout, load_training_data, split_held_out
from terramask.train.synthesis import prepare_training_data
from tests.helpers.referring_data import build_earthreason
from tests.train.disc import DiscSegmenter


def write_pair(root, name, mask, shape=None, value=255):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    pixels = np.random.default_rng(len(name)).integers(0, 256, (*(shape or mask.shape), 3),
                                                       np.uint8)  # fmt: skip
    Image.fromarray(pixels).save(root / "images" / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * value).save(root / "masks" / f"{name}.png")


def square(shape, r0, r1, c0, c1):
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def folder_data(root, n=4):
    for i in range(n):
        write_pair(root, f"s{i}", square((32, 40), 4 + i, 20 + i, 6 + 2 * i, 30))
        (root / "instructions").mkdir(exist_ok=True)
        (root / "instructions" / f"s{i}.txt").write_text(f"the field {i}\n\nthe plot {i}\n")
    return root


def test_layouts_are_recognised_and_read(tmp_path):
    root = folder_data(tmp_path / "own")
    data = load_training_data(root)
    assert data.layout == "folder" and len(data.samples) == 8  # two instructions an image
    assert data.samples[1].instruction == "the plot 0"
    assert data.samples[0].load_mask().sum() == 16 * 24

    lines = [{"image": "own/images/s0.png", "mask": "own/masks/s0.png", "instruction": "a"},
             {"image": "own/images/s1.png", "mask": "own/masks/s1.png", "question": " b ",
              "value": 255}]  # fmt: skip
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = load_training_data(tmp_path / "d.jsonl")
    assert data.layout == "jsonl" and [s.instruction for s in data.samples] == ["a", "b"]
    assert data.samples[1].mask_name.endswith("s1.png (value 255)")

    build_earthreason(tmp_path / "er", split="train")
    data = load_training_data(tmp_path / "er")
    assert data.layout == "earthreason" and data.split == "train"
    assert all(s.no_target_allowed for s in data.samples)


def test_bad_layouts_and_entries_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "empty": "not one TerraMask knows",
        tmp_path / "absent": "does not exist",
    }
    (tmp_path / "x.txt").write_text("hello")
    cases[tmp_path / "x.txt"] = "not a .jsonl list"
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n')
    cases[tmp_path / "bad.jsonl"] = "needs \"image\", \"mask\" and \"instruction\""
    (tmp_path / "gone.jsonl").write_text('{"image": "a.png", "mask": "m.png", "text": "t"}\n')
    cases[tmp_path / "gone.jsonl"] = "does not exist"
    for source, message in cases.items():
        with pytest.raises(InputError, match=message) as info:
            load_training_data(source)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="must be one of"):
        load_training_data(tmp_path / "bad.jsonl", layout="coco")
    assert detect_layout(folder_data(tmp_path / "f", 1)) == "folder"


def test_held_out_images_are_stable_and_whole():
    from pathlib import Path

    from terramask.train.data import TrainingSample

    samples = [TrainingSample(f"{i}-{j}", Path(f"/img/{i}.png"), "t", lambda: None, "m")
               for i in range(10) for j in range(2)]  # fmt: skip
    train, held = split_held_out(samples, 0.2)
    assert len(held) == 4 and len({s.image_path for s in held}) == 2
    assert not {s.image_path for s in held} & {s.image_path for s in train}
    assert split_held_out(list(reversed(samples)), 0.2)[1][0].image_path in {
        s.image_path for s in held}
    with pytest.raises(InputError, match="val_fraction"):
        split_held_out(samples[:1], 0.9)


class CountingDisc(DiscSegmenter):
    def __init__(self, fail_after: int | None = None):
        super().__init__(radius=6)
        self.embeds, self.fail_after = 0, fail_after

    def embed(self, image):
        if self.fail_after is not None and self.embeds >= self.fail_after:
            raise KeyboardInterrupt
        self.embeds += 1
        return super().embed(image)


def test_clicks_are_cached_once_per_mask_and_a_stopped_run_resumes(tmp_path):
    root = folder_data(tmp_path / "own")
    training = ClickTraining(val_fraction=0.25, clicks=3)
    stopping = CountingDisc(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        prepare_training_data(root, layout="auto", split=None, training=training,
                              models=ModelOptions(segmenter=stopping), cache=None, progress=None)
    cache_files = list((root / ".terramask-clicks").glob("clicks-*.jsonl"))
    assert len(cache_files) == 1 and len(cache_files[0].read_text().splitlines()) == 2

    seen = []
    resumed = CountingDisc()
    prepared = prepare_training_data(
        root, layout="auto", split=None, training=training,
        models=ModelOptions(segmenter=resumed), cache=None,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )  # fmt: skip
    assert resumed.embeds == 2  # only the two images not finished before
    assert seen[0] == ("clicks", 2, 4) and seen[-1] == ("clicks", 4, 4)
    assert len(prepared.train) == 6 and len(prepared.validation) == 2
    for p in prepared.train + prepared.validation:
        assert p.trace is not None and p.trace.labels[0] == 1 and len(p.trace.labels) <= 3
    sentences = [p for p in prepared.train if p.sample.image_path.stem == "s0"]
    if sentences:  # both sentences of an image share its clicks
        assert sentences[0].trace.points.tolist() == sentences[-1].trace.points.tolist()
    described = prepared.describe()
    assert described["train_samples"] == 6 and described["no_target_samples"] == 0

    again = CountingDisc()
    prepare_training_data(root, layout="auto", split=None, training=training,
                          models=ModelOptions(segmenter=again), cache=None, progress=None)
    assert again.embeds == 0  # everything came from the cache


def test_mismatched_and_empty_masks_name_the_file(tmp_path):
    training = ClickTraining(val_fraction=0.0)
    models = ModelOptions(segmenter=DiscSegmenter())
    write_pair(tmp_path / "a", "x", square((16, 16), 2, 8, 2, 8), shape=(16, 18))
    (tmp_path / "a" / "instructions").mkdir()
    (tmp_path / "a" / "instructions" / "x.txt").write_text("the roof")
    with pytest.raises(InputError, match=r"x\.png is 16 x 16 pixels but its image is 18 x 16"):
        prepare_training_data(tmp_path / "a", layout="auto", split=None, training=training,
                              models=models, cache=tmp_path / "c", progress=None)
    write_pair(tmp_path / "b", "y", np.zeros((16, 16), bool))
    (tmp_path / "b" / "instructions").mkdir()
    (tmp_path / "b" / "instructions" / "y.txt").write_text("the roof")
    with pytest.raises(InputError, match=r"y\.png is empty"):
        prepare_training_data(tmp_path / "b", layout="auto", split=None, training=training,
                              models=models, cache=tmp_path / "c", progress=None)


def test_earthreason_empty_labels_teach_the_no_target_answer(tmp_path):
    build_earthreason(tmp_path / "er", split="train")
    prepared = prepare_training_data(
        tmp_path / "er", layout="auto", split=None, training=ClickTraining(val_fraction=0.0),
        models=ModelOptions(segmenter=DiscSegmenter(radius=2)), cache=tmp_path / "c",
        progress=None,
    )  # fmt: skip
    by_image = {p.sample.image_path.stem: p for p in prepared.train}
    assert by_image["b"].no_target and by_image["c"].no_target
    assert not by_image["a"].no_target and by_image["a"].trace.labels[0] == 1


def test_unigeoseg_json_lists_are_read_through_the_benchmark_loader(tmp_path):
    from tests.helpers.referring_data import build_unigeoseg, build_unigeoseg_release

    build_unigeoseg(tmp_path / "flat", split="train")
    data = load_training_data(tmp_path / "flat")
    assert data.layout == "unigeoseg-bench" and data.split == "train"
    # the interactive entry (coordinates, not words) is left out
    assert [s.instruction for s in data.samples] == ["the red roof", "Why 1?", "Why 2?"]
    assert data.samples[0].load_mask().sum() == 16

    build_unigeoseg_release(tmp_path / "release", split="train")
    data = load_training_data(tmp_path / "release")
    assert data.layout == "unigeoseg-bench"
    assert {s.instruction for s in data.samples} >= {"the roof left of the road",
                                                     "Where could people swim?"}
    assert not any("segment the target corresponding to the box" in s.instruction
                   for s in data.samples)  # fmt: skip
    with pytest.raises(InputError, match=r"val\.json, which does not exist") as missing:
        load_training_data(tmp_path / "flat", split="val")
    assert "\n" not in str(missing.value)
