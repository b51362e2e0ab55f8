"""Prompts, task routing and the canvas agree with the released code and the benchmark loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramask.errors import InputError
from terramask.eval.referring_datasets import letterbox, load_referring_dataset, parse_interactive
from terramask.methods.unigeoseg_prompts import (
    DATASET_STYLES,
    conversation,
    conversation_parts,
    coordinate_rows,
    interactive_instruction,
    route_instruction,
)
from terramask.models.unigeoseg.canvas import Letterbox, letterbox_canvas
from terramask.models.unigeoseg.model import IGNORE_INDEX, encode_prompt
from terramask.testing.tiny_unigeoseg import tiny_tokenizer
from tests.helpers.referring_data import build_unigeoseg_release

SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)


def test_the_conversation_is_the_released_llama2_style_template():
    assert conversation("benchmark") == (
        f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\nThis is an image <image>, Please doing "
        "Reasoning Segmentation according to the following instruction:\n<refer> [/INST] "
        "Sure, It is <seg>. \n<answer>. <|endoftext|>"
    )
    assert conversation("referring").endswith(
        "Referring Segmentation according to the following instruction:\n<refer> [/INST] "
        "\nSure. <|endoftext|>"
    )
    parts = conversation_parts("benchmark")
    assert parts[1:4] == [
        "<image>", ", Please doing Reasoning Segmentation according to the following "
        "instruction:\n", "<refer>",
    ]  # fmt: skip
    assert conversation_parts("benchmark", with_answer=False)[-1] == ". \n"


def test_pieces_drop_seg_put_the_instruction_at_refer_and_label_only_the_reply():
    tokenizer = tiny_tokenizer()
    seg = tokenizer.encode("[SEG]", add_special_tokens=False)[0]
    prompt = encode_prompt(tokenizer, seg, "the red roof", "referring", answer="it is red")
    kinds = [p.kind for p in prompt.pieces]
    assert kinds == ["text", "image", "text", "refer", "text", "text", "answer", "text"]
    refer = prompt.pieces[3]
    assert refer.ids.tolist() == [*tokenizer.encode(" the red roof", add_special_tokens=False), seg]
    assert refer.labels is None and prompt.pieces[0].labels is None
    reply_start = prompt.pieces[4]  # " [/INST] Sure, It is "
    head = len(tokenizer.encode(" [/INST]", add_special_tokens=False))
    assert (reply_start.labels[:head] == IGNORE_INDEX).all()
    assert (reply_start.labels[head:] == reply_start.ids[head:]).all()
    assert prompt.pieces[6].labels.tolist()[-1] == seg
    short = encode_prompt(tokenizer, seg, "the red roof", "referring", upto="refer")
    assert [p.kind for p in short.pieces] == kinds[:4]


def test_routing_follows_the_benchmark_folders_and_reads_coordinates_as_its_parser(tmp_path):
    expected = build_unigeoseg_release(tmp_path)
    data = load_referring_dataset("unigeoseg-bench", tmp_path, protocol="reference")
    assert DATASET_STYLES["unigeoseg-bench"] == ("benchmark", None)
    for sample in data.samples:
        routed = route_instruction(sample.question, sample.group)
        assert routed.task == expected[sample.id]["task"] == sample.group
        if sample.interactive and sample.coordinates is not None:
            c = sample.coordinates
            rows = [list(c.box)] if c.box else [[x, y, 0.0, 0.0] for x, y in c.points]
            np.testing.assert_allclose(routed.coordinates, rows)
        elif sample.interactive:  # four points: the parser reads none, the model one zero row
            assert routed.coordinates is None
        else:
            assert routed.coordinates is None


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Please segment the region corresponding to the points [0.1,0.2].", "interactive"),
        ("x0,y0=[0.1,0.2], x1,y1=[0.3,0.4]", "interactive"),
        ("Which building casts the longest shadow?", "reasoning"),
        ("where could a plane land", "reasoning"),
        ("the swimming pool left of the tennis court", "referring"),
        ("Points [0.1,0.1] [0.2,0.2] [0.3,0.3] [0.4,0.4]", "referring"),  # four: no coordinates
    ],
)
def test_free_text_is_routed_by_what_it_says(text, task):
    assert route_instruction(text).task == task


def test_interactive_instructions_are_written_so_the_released_parser_reads_them_back():
    box = interactive_instruction(box=[0.1, 0.25, 0.5, 0.875])
    assert box.text == ("Please segment the target corresponding to the box "
                        "x0,y0=[0.1,0.25], x1,y1=[0.5,0.875].")  # fmt: skip
    assert parse_interactive(box.text).box == (0.1, 0.25, 0.5, 0.875)
    np.testing.assert_allclose(box.coordinates, coordinate_rows(box.text))
    points = interactive_instruction(points=[[0.12345, 0.5], [1.0, 0.0]])
    assert "[0.123,0.5], [1,0]" in points.text
    np.testing.assert_allclose(points.coordinates, [[0.123, 0.5, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(points.coordinates, coordinate_rows(points.text))
    for bad in ({"points": [[0.1, 0.1]] * 4}, {"box": [0, 0, 1.5, 1]}, {}):
        with pytest.raises(InputError):
            interactive_instruction(**bad)


@pytest.mark.parametrize("shape", [(300, 500), (500, 300), (512, 512), (100, 100), (7, 513)])
def test_the_canvas_geometry_is_the_benchmark_loaders_letterbox(shape):
    height, width = shape
    placed = letterbox(np.ones(shape, bool), 512)
    rows, cols = np.flatnonzero(placed.any(1)), np.flatnonzero(placed.any(0))
    box = Letterbox.of(height, width, 512)
    assert (box.top, box.new_height) == (rows[0], len(rows))
    assert (box.left, box.new_width) == (cols[0], len(cols))


def test_the_canvas_image_is_bilinear_rounded_and_zero_padded():
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    canvas, box = letterbox_canvas(image, 64)
    assert canvas.shape == (64, 64, 3) and (box.top, box.new_height) == (16, 32)
    assert not canvas[:16].any() and not canvas[48:].any()
    # exact halving: bilinear at half-pixel centres averages 2x2 blocks
    block = image[:2, :2].astype(float).mean(axis=(0, 1))
    np.testing.assert_array_equal(canvas[16, 0], np.floor(block + 0.5).astype(np.uint8))
    try:
        from terramask.eval.referring_datasets import letterbox_image
    except ImportError:
        return
    # the evaluation's own canvas differs at most by the rounding of exact halves
    theirs = letterbox_image(image, 64)
    assert np.abs(theirs.astype(int) - canvas.astype(int)).max() <= 1


def test_coordinate_rows_pad_points_like_the_released_code():
    from terramask.models.unigeoseg.modules import coordinate_rows_tensor

    like = torch.zeros(1)
    np.testing.assert_array_equal(coordinate_rows_tensor(None, like).numpy(), [[0, 0, 0, 0]])
    got = coordinate_rows_tensor(torch.tensor([[0.5, 0.25]]), like).numpy()
    np.testing.assert_array_equal(got, [[0.5, 0.25, 0, 0]])
