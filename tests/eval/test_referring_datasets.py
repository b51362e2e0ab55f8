"""Each referring benchmark layout, built tiny in a temporary folder, read back exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.eval.referring_datasets import (
    NO_TARGET_ANSWER,
    InteractivePrompt,
    letterbox,
    letterbox_image,
    load_referring_dataset,
    parse_interactive,
    referring_dataset_names,
    unigeoseg_task,
    unigeoseg_task_folder,
)
from tests.helpers.referring_data import (
    box,
    build_earthreason,
    build_geoseg_bench,
    build_rrsisd,
    build_unigeoseg,
    build_unigeoseg_release,
    write_json,
    write_mask,
)


def one_paragraph(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


# --- RRSIS-D -----------------------------------------------------------------------------


def test_rrsisd_one_sample_per_sentence_with_coco_masks(tmp_path):
    """The all-texts protocol (TerraMask's earlier reading): every sentence, "sent" first."""
    expected = build_rrsisd(tmp_path)
    data = load_referring_dataset("rrsis-d", tmp_path, protocol="all-texts")  # split: test
    assert data.split == "test" and data.group_name == "category"
    assert data.score_size is None and data.protocol == "all-texts"
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
    val = load_referring_dataset("RRSIS_D", tmp_path, split="val", protocol="all-texts")
    assert [s.id for s in val.samples] == ["2-0"]
    assert np.array_equal(val.samples[0].load_mask(), expected["2"])
    assert (
        len(load_referring_dataset("rrsis-d", tmp_path, limit=2, protocol="all-texts").samples) == 2
    )


def test_rrsisd_reference_one_sample_per_ref_first_raw_sentence_on_the_512_canvas(tmp_path):
    expected = build_rrsisd(tmp_path)
    data = load_referring_dataset("rrsis-d", tmp_path)  # the reference protocol by default
    assert data.protocol == "reference" and data.score_size == 512 and data.letterbox_centred
    # ref 0: its first sentence's "raw" text as written, not "sent"; its second sentence is
    # not a sample
    assert [(s.id, s.question, s.group, s.target_name) for s in data.samples] == [
        ("0-0", "The vehicle", "vehicle", "vehicle"),
        ("1-0", "the dam", "dam", "dam"),
    ]
    for sample in data.samples:
        assert np.array_equal(sample.load_mask(), expected[sample.id.split("-")[0]])
    assert any("512x512" in note for note in data.notes)


def test_rrsisd_reference_test_split_takes_every_split_naming_test_and_refer_layout(tmp_path):
    build_rrsisd(tmp_path)
    refs_file = tmp_path / "refs(unc).p"
    refs = pickle.loads(refs_file.read_bytes())
    refs[2]["split"] = "testB"
    # REFER's own layout: refs and instances in root/rrsisd/, images in root/images/rrsisd/
    (tmp_path / "rrsisd").mkdir()
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    (tmp_path / "instances.json").rename(tmp_path / "rrsisd" / "instances.json")
    refs_file.unlink()
    data = load_referring_dataset("rrsis-d", tmp_path)
    assert [s.id for s in data.samples] == ["0-0", "1-0", "2-0"]
    assert [s.id for s in load_referring_dataset("rrsis-d", tmp_path, protocol="all-texts")
            .samples] == ["0-0", "0-1", "1-0"]  # fmt: skip


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
    """The all-texts protocol: every question; an empty answer forces an empty mask."""
    expected = build_earthreason(tmp_path)
    data = load_referring_dataset("earthreason", tmp_path, protocol="all-texts")
    assert data.split == "test" and data.group_name is None and data.score_size is None
    assert [(s.id, s.question, s.answer_text, s.group) for s in data.samples] == [
        ("a-0", "Where could boats dock?", "the pier", None),
        ("a-1", "Q2", "the pier", None),
        ("b-0", "Which field floods?", "none", None),
        ("c-0", "Any airport?", "", None),
        ("d-0", "Where are the courts?", "the courts tennis", None),
    ]
    for sample in data.samples:
        assert np.array_equal(sample.load_mask(), expected[sample.id[0]])


def test_earthreason_reference_first_question_label_as_is_and_the_empty_answer(tmp_path):
    expected = build_earthreason(tmp_path)
    # an empty answer whose label nevertheless holds target pixels
    write_mask(tmp_path / "test" / "labels" / "c.png", box((5, 7), 0, 2, 0, 3))
    data = load_referring_dataset("earthreason", tmp_path)
    assert data.protocol == "reference" and data.score_size == 512 and data.letterbox_centred
    assert [(s.id, s.question, s.answer_text) for s in data.samples] == [
        ("a-0", "Where could boats dock?", "the pier"),
        ("b-0", "Which field floods?", "none"),
        ("c-0", "Any airport?", NO_TARGET_ANSWER),  # the reply UniGeoSeg expects
        ("d-0", "Where are the courts?", "the courts"),  # answer[0]
    ]
    masks = {s.id[0]: s.load_mask() for s in data.samples}
    for stem in "abd":
        assert np.array_equal(masks[stem], expected[stem])
    # the reference reads the label whatever the answer; all-texts forced it empty
    assert np.array_equal(masks["c"], box((5, 7), 0, 2, 0, 3))
    texts = load_referring_dataset("earthreason", tmp_path, protocol="all-texts")
    assert not next(s for s in texts.samples if s.id == "c-0").load_mask().any()
    # a missing label with an empty answer reads as no target, in both protocols
    (tmp_path / "test" / "labels" / "c.png").unlink()
    data = load_referring_dataset("earthreason", tmp_path)
    assert not next(s for s in data.samples if s.id == "c-0").load_mask().any()


def test_earthreason_val_and_test_splits_are_both_loadable(tmp_path):
    build_earthreason(tmp_path, split="val")
    build_earthreason(tmp_path, split="test")
    for split in ("val", "test"):
        data = load_referring_dataset("earthreason", tmp_path, split=split)
        assert data.split == split and len(data.samples) == 4
        assert all(s.image_path.parent.parent.name == split for s in data.samples)


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
    """The all-texts protocol: every text, task from "/ref/" and "/intera/", non-zero mask."""
    expected = build_unigeoseg(tmp_path)
    data = load_referring_dataset("unigeoseg-bench", tmp_path, protocol="all-texts")
    assert data.score_size == 512 and data.group_name == "task"
    assert not data.letterbox_centred and not any(s.interactive for s in data.samples)
    assert [s.id for s in data.samples] == list(expected)
    for sample in data.samples:
        task, question, mask = expected[sample.id]
        assert (sample.group, sample.question) == (task, question)
        assert np.array_equal(sample.load_mask(), mask)


def test_unigeoseg_reference_reads_the_release_layout(tmp_path):
    expected = build_unigeoseg_release(tmp_path)
    data = load_referring_dataset("unigeoseg-bench", tmp_path)
    assert data.protocol == "reference" and data.score_size == 512 and data.letterbox_centred
    assert [s.id for s in data.samples] == list(expected)
    for sample in data.samples:
        want = expected[sample.id]
        # the task from the folder name: "interactive/" holds no "/intera/"
        assert (sample.group, sample.question) == (want["task"], want["question"])
        assert sample.interactive == (want["task"] == "interactive")
        # 255 is target; the stray 128 is not
        assert np.array_equal(sample.load_mask(), want["mask"])
        got = sample.coordinates.describe() if sample.coordinates else None
        assert got == want["coordinates"]
    roof = next(s for s in data.samples if s.group == "referring")
    assert roof.answer_text == "it is red"  # reason[0]
    assert next(s for s in data.samples if s.group == "reasoning").answer_text == ""
    # all-texts on the same files: tasks by substring, so every entry reads as reasoning
    texts = load_referring_dataset("unigeoseg-bench", tmp_path, protocol="all-texts")
    assert {s.group for s in texts.samples} == {"reasoning"}
    assert len(texts.samples) == len(expected) + 1  # the roof's second phrasing
    assert texts.samples[0].load_mask()[-1, -1]  # non-zero: the 128 counts


def test_unigeoseg_reference_task_folder_of_a_single_task_root(tmp_path):
    build_unigeoseg_release(tmp_path)
    data = load_referring_dataset("unigeoseg-bench", tmp_path / "interactive")
    assert {s.group for s in data.samples} == {"interactive"} and len(data.samples) == 3
    assert data.samples[0].id == "0-box"
    # entries whose paths name no task folder are reasoning, as in UniGeoSeg, with a note
    plain = tmp_path / "plain"
    (tmp_path / "reason").rename(plain)
    data = load_referring_dataset("unigeoseg-bench", plain)
    assert data.samples[0].group == "reasoning" and any("no task folder" in n for n in data.notes)
    # today's test layout: "bench/ref", "bench/intera", "bench/reason"
    build_unigeoseg(tmp_path / "old")
    groups = [s.group for s in load_referring_dataset("unigeoseg-bench", tmp_path / "old").samples]
    assert groups == ["referring", "interactive", "reasoning"]  # one sample each: first text


def test_parse_interactive_box_first_then_one_to_three_points():
    box_text = "segment x0,y0=[0.1,0.2], x1,y1=[0.3,0.4] near [0.5,0.5]"
    assert parse_interactive(box_text) == InteractivePrompt(box=(0.1, 0.2, 0.3, 0.4))
    assert parse_interactive("the points [0.1,0.2], [0.3,0.4]") == InteractivePrompt(
        points=((0.1, 0.2), (0.3, 0.4))
    )
    assert parse_interactive("[1,1] [0.2,0.2] [0.3,0.3]").points[0] == (1.0, 1.0)
    assert parse_interactive("[0.1,0.1] [0.2,0.2] [0.3,0.3] [0.4,0.4]") is None  # four
    assert parse_interactive("[0.1, 0.2]") is None  # a space inside the brackets
    assert parse_interactive("[-0.1,0.2]") is None  # no sign
    assert parse_interactive("[1.2.3,0.2]") is None  # not a number
    assert parse_interactive("the red roof") is None


def test_interactive_prompt_in_pixels():
    prompt = InteractivePrompt(box=(0.25, 0.5, 0.75, 1.0)).in_pixels(height=8, width=16)
    assert prompt.box.tolist() == [4.0, 4.0, 12.0, 8.0] and len(prompt.points) == 0
    prompt = InteractivePrompt(points=((0.5, 0.25), (0.1, 1.0))).in_pixels(height=8, width=20)
    assert prompt.points.tolist() == [[10.0, 2.0], [2.0, 8.0]]
    assert prompt.labels.tolist() == [1, 1] and prompt.box is None  # positive clicks


def test_unigeoseg_task_folder_names():
    assert unigeoseg_task_folder("interactive/images/x.png") == "interactive"
    assert unigeoseg_task_folder("data/intera/x.json") == "interactive"
    assert unigeoseg_task_folder("a/ref/b/x.png") == "referring"
    assert unigeoseg_task_folder("reason\\x.json") == "reasoning"
    assert unigeoseg_task_folder("refer/x.json", "x/reasoning/y.png") == "reasoning"
    assert unigeoseg_task_folder("images/x.png", "masks/x.png") is None
    assert unigeoseg_task_folder("ref.png") is None  # a file, not a folder


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
    """The all-texts protocol's letterbox (TerraMask's earlier one), kept as centred=False."""
    wide = box((4, 8), 1, 3, 2, 5)
    out = letterbox(wide, 16, centred=False)
    assert out.shape == (16, 16) and out.dtype == bool
    assert np.array_equal(out[:8], np.kron(wide, np.ones((2, 2), bool)))
    assert not out[8:].any()
    tall = box((6, 3), 0, 6, 1, 2)
    out = letterbox(tall, 12, centred=False)
    assert np.array_equal(out[:, :6], np.kron(tall, np.ones((2, 2), bool)))
    assert not out[:, 6:].any()
    assert letterbox(np.zeros((700, 300), bool), centred=False).shape == (512, 512)


def test_the_image_shown_is_on_the_masks_canvas_resampled_as_opencv_bilinear():
    """UniGeoSeg's preprocess_image: the mask letterbox's geometry, INTER_LINEAR values."""
    flat = np.full((7, 19, 3), 200, np.uint8)
    shown = letterbox_image(flat, 32)
    assert shown.shape == (32, 32, 3) and shown.dtype == np.uint8
    content = letterbox(np.ones((7, 19), bool), 32)
    assert (shown[content] == 200).all() and (shown[~content] == 0).all()
    # Halving: OpenCV's INTER_LINEAR samples source 2i + 0.5, the mean of each 2x2 block
    # (values are multiples of 4, so the mean is whole and no rounding rule matters).
    rng = np.random.default_rng(3)
    image = (rng.integers(0, 64, (64, 64, 3)) * 4).astype(np.uint8)
    blocks = image.reshape(32, 2, 32, 2, 3).astype(int).sum(axis=(1, 3)) // 4
    np.testing.assert_array_equal(letterbox_image(image, 32), blocks)


def test_letterbox_centred_as_unigeoseg_truncates_and_splits_the_padding():
    """UniGeoSeg's preprocess_mask (cv2.resize INTER_NEAREST + copyMakeBorder); checked
    against OpenCV 4.10 and 5.0 on 3,000 random masks while writing it."""
    wide = box((4, 8), 1, 3, 2, 5)
    out = letterbox(wide, 16)  # 8x16, padding 8: 4 rows above, 4 below
    assert out.shape == (16, 16) and out.dtype == bool
    assert not out[:4].any() and not out[12:].any()
    assert np.array_equal(out[4:12], np.kron(wide, np.ones((2, 2), bool)))
    # 3x7 into 10: short side int(3 * 10 / 7) = 4 (4.29 truncated), padding 6 -> 3 above
    odd = np.zeros((3, 7), bool)
    odd[2, :] = True
    out = letterbox(odd, 10)
    # OpenCV's nearest rule: row i reads source row floor(i * 3 / 4) = 0, 0, 1, 2
    assert out[3:7].any(axis=1).tolist() == [False, False, False, True]
    assert not out[:3].any() and not out[7:].any()
    middle = np.zeros((3, 7), bool)
    middle[1, :] = True  # PIL's nearest would give rows 1 and 2 of the four
    assert letterbox(middle, 10)[3:7].any(axis=1).tolist() == [False, False, True, False]
    # columns: floor(j * 7 / 10) for j in 0..9
    cols = np.zeros((1, 7), bool)
    cols[0, 1] = True
    # 1x7 into 10: one row, padding 9 -> 4 above; only j = 2 reads source column 1
    assert np.nonzero(letterbox(cols, 10)[4])[0].tolist() == [2]
    # an odd padding puts the extra row below: 5x16 into 16 -> 5 rows, padding 11: 5 above
    assert np.nonzero(letterbox(np.ones((5, 16), bool), 16).any(axis=1))[0].tolist() == [
        5, 6, 7, 8, 9
    ]  # fmt: skip
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
