"""The tiny UniGeoSeg runs every task end to end and answers at the input's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramask.errors import InputError
from terramask.methods.interactive import PointBoxPrompt, segment_prompts
from terramask.methods.unigeoseg_prompts import interactive_instruction
from terramask.models.unigeoseg import UniGeoSegSettings
from terramask.models.unigeoseg.canvas import Letterbox, canvas_to_image
from terramask.protocols import Segmenter


def _image(height=100, width=140, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("question", "task"),
    [
        ("the long building north of the road", "referring"),
        ("which field could flood if the river rises?", "reasoning"),
        ("Please segment the target corresponding to the points [0.25,0.5], [0.5,0.5].",
         "interactive"),
        ("Please segment the target corresponding to the box x0,y0=[0.1,0.2], x1,y1=[0.6,0.9].",
         "interactive"),
    ],
)  # fmt: skip
def test_each_task_gives_a_mask_of_the_input_size(tiny_unigeoseg, question, task):
    image = _image()
    result = tiny_unigeoseg.segment(image, question)
    assert result.task == task and result.decided_by == "text"
    assert result.mask.shape == (100, 140) and result.mask.dtype == bool
    assert result.logits.shape == (100, 140) and result.logits.dtype == np.float32
    np.testing.assert_array_equal(result.mask, result.logits > 0)
    assert result.canvas_logits.shape == (128, 128)
    assert 0.0 <= result.score <= 1.0
    if task == "interactive":
        assert result.coordinates is not None
    # the image-size logits are the canvas logits of the image's part, resized
    box = Letterbox.of(100, 140, 128)
    back = canvas_to_image(torch.from_numpy(result.canvas_logits), box).numpy()
    np.testing.assert_allclose(back, result.logits, atol=1e-5)


def test_the_task_changes_the_answer_and_the_same_request_gives_the_same_mask(tiny_unigeoseg):
    image = _image(seed=3)
    text = "the pool behind the house"
    referring = tiny_unigeoseg.segment(image, text, UniGeoSegSettings(task="referring"))
    reasoning = tiny_unigeoseg.segment(image, text, UniGeoSegSettings(task="reasoning"))
    again = tiny_unigeoseg.segment(image, text, UniGeoSegSettings(task="referring"))
    np.testing.assert_array_equal(referring.logits, again.logits)
    assert not np.allclose(referring.logits, reasoning.logits)


def test_an_explanation_is_generated_without_changing_the_mask(tiny_unigeoseg):
    image = _image(seed=1)
    plain = tiny_unigeoseg.segment(image, "which roof is red?")
    explained = tiny_unigeoseg.segment(
        image, "which roof is red?", UniGeoSegSettings(explain=True, max_new_tokens=5)
    )
    assert isinstance(explained.explanation, str) and plain.explanation is None
    np.testing.assert_allclose(plain.logits, explained.logits, atol=1e-4)
    # RRSIS-D's template has no explanation to generate
    referring = tiny_unigeoseg.segment(
        image, "the red roof", UniGeoSegSettings(prompt="referring", explain=True)
    )
    assert referring.explanation is None


def test_a_square_canvas_sized_image_is_the_canvas_itself(tiny_unigeoseg):
    image = _image(128, 128, seed=2)
    result = tiny_unigeoseg.segment(image, "the river")
    np.testing.assert_array_equal(result.logits, result.canvas_logits)


def test_clicks_and_boxes_reach_it_as_a_segmenter(tiny_unigeoseg):
    assert isinstance(tiny_unigeoseg, Segmenter)
    image = _image(90, 60, seed=4)
    prompts = [
        PointBoxPrompt(np.array([[30.0, 45.0]]), np.array([1])),
        PointBoxPrompt(np.zeros((0, 2)), np.zeros(0, int), box=np.array([5.0, 10.0, 40.0, 80.0])),
        PointBoxPrompt(np.array([[10.0, 10.0], [50.0, 80.0]]), np.array([1, 1])),
    ]
    found = segment_prompts(tiny_unigeoseg, image, prompts)
    assert [f.mask.shape for f in found] == [(90, 60)] * 3
    # a click is the interactive instruction naming it, normalised by the image's size
    direct = tiny_unigeoseg.segment(image, interactive_instruction(points=[[0.5, 0.5]]))
    np.testing.assert_allclose(found[0].logits, direct.logits, atol=1e-4)
    embedding = tiny_unigeoseg.embed(image)
    prediction = tiny_unigeoseg.predict(
        embedding, boxes=np.array([[5.0, 10.0, 40.0, 80.0]]), full_resolution=False
    )
    assert prediction.masks is None and prediction.low_res_logits.shape == (1, 1, 32, 32)
    upsampled = tiny_unigeoseg.upsample(embedding, prediction.low_res_logits[:, 0])
    np.testing.assert_allclose(upsampled[0], found[1].logits, atol=1e-4)


@pytest.mark.parametrize(
    "prompt",
    [
        PointBoxPrompt(np.array([[3.0, 3.0], [9.0, 9.0]]), np.array([1, 0])),
        PointBoxPrompt(np.array([[1.0, 1.0]] * 4), np.ones(4, int)),
        PointBoxPrompt(np.array([[3.0, 3.0]]), np.array([1]), box=np.array([0, 0, 9, 9.0])),
    ],
    ids=["negative click", "four clicks", "clicks and box"],
)
def test_prompts_its_instruction_cannot_say_are_refused(tiny_unigeoseg, prompt):
    with pytest.raises(InputError) as info:
        segment_prompts(tiny_unigeoseg, _image(20, 20), [prompt])
    assert "\n" not in str(info.value)


def test_a_batch_of_requests_matches_one_at_a_time(tiny_unigeoseg):
    image = _image(64, 64, seed=5)
    embedding = tiny_unigeoseg.embed(image)
    boxes = np.array([[0.0, 0.0, 30.0, 30.0], [10.0, 5.0, 60.0, 40.0]])
    both = tiny_unigeoseg.predict(embedding, boxes=boxes, multimask=False)
    for b in range(2):
        one = tiny_unigeoseg.predict(embedding, boxes=boxes[b : b + 1], multimask=False)
        np.testing.assert_allclose(both.logits[b], one.logits[0], atol=1e-4)


def test_bad_images_and_settings_are_refused(tiny_unigeoseg):
    with pytest.raises(InputError):
        tiny_unigeoseg.segment(np.zeros((10, 10), np.uint8), "x")
    with pytest.raises(InputError):
        UniGeoSegSettings(task="semantic")
    with pytest.raises(InputError):
        UniGeoSegSettings(prompt="chatty")
    with pytest.raises(InputError):
        tiny_unigeoseg.segment(_image(), "   ")
