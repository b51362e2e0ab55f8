"""Click synthesis from masks: exact clicks with a disc segmenter, the stop and tie rules, the
text format read back by the click engine's parser, a tiny random SAM, and `terramask clicks`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from terramask import api
from terramask.cli import cli
from terramask.errors import InputError
from terramask.methods.click_synthesis import (
    NO_TARGET_CLICKS,
    format_clicks,
    next_click,
    synthesize_clicks,
)
from terramask.methods.replies import clicks_prompt, parse_reply
from terramask.options import ClickSynthesis, ModelOptions
from terramask.protocols import MLLMReply
from terramask.testing.tiny_models import save_tiny_sam
from tests.train.disc import DiscSegmenter


def brute_depth(region: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel outside `region`, the border outside too (by brute force)."""
    h, w = region.shape
    outside = [(r, c) for r in range(-1, h + 1) for c in range(-1, w + 1)
               if not (0 <= r < h and 0 <= c < w) or not region[r, c]]
    depth = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            if region[r, c]:
                depth[r, c] = min(math.hypot(r - a, c - b) for a, b in outside)
    return depth


def rectangle(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_disc_segmenter_gives_the_exact_clicks_signs_and_curve():
    target = rectangle((30, 40), (5, 15), (5, 25))  # rows 5-14, columns 5-24
    segmenter = DiscSegmenter(radius=7, negative_radius=3)
    trace = synthesize_clicks(segmenter, np.zeros((30, 40, 3), np.uint8), target)
    # first: depth 5 is reached on rows 9 and 10, columns 9-20; the topmost, leftmost wins
    assert trace.points.tolist() == [[9, 9], [20, 10], [9, 3], [3, 9], [26, 10], [20, 16]]
    assert trace.labels.tolist() == [1, 1, 0, 0, 0, 0]
    assert len(trace.ious) == 6 and not trace.stopped_early
    assert trace.ious == sorted(trace.ious) and trace.ious[0] == pytest.approx(107 / 242)
    # one prompt per step with every click so far; three candidates only for the first
    assert [len(points) for points, _, _ in segmenter.calls] == [1, 2, 3, 4, 5, 6]
    assert [multi for _, _, multi in segmenter.calls] == [True] + [False] * 5


def test_each_click_is_the_deepest_error_pixel_by_an_independent_count():
    target = rectangle((24, 32), (3, 20), (4, 14)) | rectangle((24, 32), (10, 14), (14, 30))
    segmenter = DiscSegmenter(radius=5, negative_radius=2)
    image = np.zeros((24, 32, 3), np.uint8)
    trace = synthesize_clicks(segmenter, image, target, settings=ClickSynthesis(clicks=5))
    depth = brute_depth(target)
    x, y = trace.points[0]
    assert trace.labels[0] == 1 and depth[int(y), int(x)] == depth.max()
    assert (int(y), int(x)) == tuple(np.argwhere(depth == depth.max())[0])  # row-major first
    embedding = segmenter.embed(image)
    clicked = np.zeros_like(target)
    for k in range(1, len(trace.labels)):
        points, labels = trace.points[:k], trace.labels[:k]
        predicted = segmenter.predict(embedding, points=points[None], point_labels=labels[None],
                                      multimask=k == 1).masks[0, 0]
        clicked[int(points[-1][1]), int(points[-1][0])] = True
        fn, fp = brute_depth(target & ~predicted), brute_depth(predicted & ~target)
        fn[clicked] = fp[clicked] = 0
        positive = fn.max() > fp.max()
        chosen = fn if positive else fp
        x, y = trace.points[k]
        assert trace.labels[k] == int(positive)
        assert (int(y), int(x)) == tuple(np.argwhere(chosen == chosen.max())[0])


def test_an_exact_mask_stops_early():
    rows, cols = np.mgrid[0:30, 0:40]
    target = (cols - 15) ** 2 + (rows - 10) ** 2 <= 25
    trace = synthesize_clicks(DiscSegmenter(radius=5), np.zeros((30, 40, 3), np.uint8), target)
    assert trace.points.tolist() == [[15, 10]] and trace.labels.tolist() == [1]
    assert trace.ious == [1.0] and trace.stopped_early


def test_equal_error_depths_give_a_negative_click_and_none_when_exact():
    target = rectangle((10, 20), (2, 8), (2, 8))
    predicted = rectangle((10, 20), (2, 8), (4, 10))  # misses 2 columns, adds 2 columns
    assert next_click(target, predicted) == (8, 2, 0)  # equal depths: negative, first pixel
    assert next_click(target, target) is None


def test_bad_masks_are_refused_in_one_line():
    segmenter = DiscSegmenter()
    with pytest.raises(InputError, match="is empty") as empty:
        synthesize_clicks(segmenter, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)))
    with pytest.raises(InputError, match="must match their images") as size:
        synthesize_clicks(segmenter, np.zeros((8, 8, 3), np.uint8), np.ones((8, 9)))
    assert "\n" not in str(empty.value) + str(size.value)


@pytest.mark.parametrize(("frame", "shown"), [("pixel", (48, 64)), ("pixel", None),
                                              ("norm1000", None), ("norm1", None)])
def test_the_text_is_what_the_clicks_prompt_asks_for_and_the_parser_reads(frame, shown):
    points = np.array([[0, 0], [127, 95], [40, 17]], dtype=float)
    labels = np.array([1, 0, 1])
    text = format_clicks(points, labels, (96, 128), frame=frame, shown_size=shown)
    assert text.startswith('{"points": [[') and text.endswith("]}")
    prompt = clicks_prompt("the pool", frame=frame, image_size=shown or (96, 128))
    assert '{"points": [[x, y], ...], "labels": [1, 0, ...]}' in prompt
    reply = MLLMReply(text=text, shown_size=shown or (96, 128), frame=frame, model="m")
    parsed = parse_reply(reply, (96, 128))
    assert parsed.point_labels.tolist() == [1, 0, 1] and not parsed.warnings
    assert np.allclose(parsed.points, points, atol=1.0)
    assert format_clicks(np.zeros((0, 2)), np.zeros(0), (5, 5)) == NO_TARGET_CLICKS
    assert parse_reply(MLLMReply(NO_TARGET_CLICKS, (5, 5), frame, "m"), (5, 5)).no_target


def test_tiny_sam_in_the_loop(tmp_path, rs_samples):
    from terramask.eval.datasets import read_image, read_label
    from terramask.models import load_segmenter

    image = read_image(rs_samples / "potsdam" / "img_dir" / "2_10_0_0_512_512.png")[:256, :256]
    labels = read_label(rs_samples / "potsdam" / "ann_dir" / "2_10_0_0_512_512.png")[:256, :256]
    target = labels == 2
    assert target.any()
    segmenter = load_segmenter(str(save_tiny_sam(tmp_path / "sam")), device="cpu")
    first = synthesize_clicks(segmenter, image, target)
    again = synthesize_clicks(segmenter, image, target)
    assert first.points.tolist() == again.points.tolist() and first.ious == again.ious
    assert 1 <= len(first.labels) <= 6 and first.labels[0] == 1
    assert len(first.ious) == len(first.labels) and all(0 <= v <= 1 for v in first.ious)
    x, y = first.points[0]
    assert target[int(y), int(x)]


def _pair(folder, name, mask, shape=None):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (*(shape or mask.shape), 3), np.uint8)
    Image.fromarray(pixels).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{name}.png")
    return folder / "masks" / f"{name}.png"


def test_clicks_command_prints_writes_and_refuses(tmp_path):
    sam = str(save_tiny_sam(tmp_path / "sam"))
    a = _pair(tmp_path / "d", "a", rectangle((64, 80), (10, 40), (20, 60)))
    b = _pair(tmp_path / "d", "b", rectangle((64, 80), (30, 60), (5, 30)))
    out = tmp_path / "clicks.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["clicks", str(a), str(b), "--segmenter", sam, "--device", "cpu",
                                 "--clicks", "3", "--frame", "norm1000", "-o", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    masks = json.loads(result.stdout)["masks"]
    assert [m["image"].endswith(f"{n}.png") for m, n in zip(masks, "ab", strict=True)]
    assert all(m["labels"][0] == 1 and len(m["ious"]) == len(m["labels"]) <= 3 for m in masks)
    assert [json.loads(line) for line in out.read_text().splitlines()] == masks
    assert json.loads(masks[0]["clicks"])["labels"] == masks[0]["labels"]
    same = api.synthesize_clicks(str(a), models=ModelOptions(segmenter=sam, device="cpu"),
                                 settings=ClickSynthesis(clicks=3, frame="norm1000"))
    assert same[0]["points"] == masks[0]["points"]

    again = runner.invoke(cli, ["clicks", str(a), "--segmenter", sam, "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    empty = _pair(tmp_path / "e", "z", np.zeros((16, 16), bool))
    failed = runner.invoke(cli, ["clicks", str(empty), "--segmenter", sam])
    assert failed.exit_code == 2 and "is empty" in failed.stderr
    other = _pair(tmp_path / "f", "w", np.ones((16, 16), bool), shape=(16, 20))
    failed = runner.invoke(cli, ["clicks", str(other), "--segmenter", sam])
    assert failed.exit_code == 2 and "must match their images" in failed.stderr
    lonely = tmp_path / "g" / "masks"
    lonely.mkdir(parents=True)
    Image.fromarray(np.ones((4, 4), np.uint8)).save(lonely / "x.png")
    failed = runner.invoke(cli, ["clicks", str(lonely / "x.png"), "--segmenter", sam])
    assert failed.exit_code == 2 and "No image was found" in failed.stderr
