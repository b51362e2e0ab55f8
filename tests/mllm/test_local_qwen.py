"""A tiny random Qwen-VL driven through `load_mllm` + `ask`, exactly as a downloaded one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from terramask.errors import InputError, MLLMError, ModelLoadError, ModelNotFoundError
from terramask.methods.replies import box_prompt, parse_reply
from terramask.models.mllm import ReplyCache, load_mllm
from terramask.testing.tiny_models import save_tiny_qwen_vl

# Qwen resizes to multiples of 2×patch (28 for 2.5, 32 for 3): for 120x240 both sides
# round to the nearest multiple; the tiny processor's pixel cap (64 merged patches) is not hit.
CASES = [("qwen2_5_vl", 28, "pixel"), ("qwen3_vl", 32, "norm1000")]


@pytest.mark.parametrize(("family", "factor", "frame"), CASES)
def test_tiny_qwen_answers_with_the_size_it_showed(tmp_path, family, factor, frame):
    folder = save_tiny_qwen_vl(tmp_path / family, family=family)
    mllm = load_mllm(str(folder), device="cpu", max_new_tokens=12)
    picture = np.random.default_rng(0).integers(0, 256, (120, 240, 3), dtype=np.uint8)
    reply = mllm.ask(picture, box_prompt("where is the pool?"), system="Answer in JSON.")
    expected = (round(120 / factor) * factor, round(240 / factor) * factor)
    assert expected[0] * expected[1] <= 64 * factor * factor
    assert reply.shown_size == expected and reply.frame == frame
    assert isinstance(reply.text, str) and reply.model == str(folder)
    try:
        parsed = parse_reply(reply, (120, 240))
    except MLLMError as exc:  # random weights say noise
        assert "could not parse the model's reply" in str(exc)
    else:  # on the off chance the noise parses, it must still be a clean result
        assert parsed.no_target or len(parsed.boxes) + len(parsed.points) > 0
        assert np.all(parsed.boxes[:, [0, 2]] <= 240) and np.all(parsed.boxes[:, [1, 3]] <= 120)


def test_local_replies_are_deterministic_cached_and_downscaled(tmp_path):
    folder = save_tiny_qwen_vl(tmp_path / "q", family="qwen2_5_vl")
    cache = ReplyCache(tmp_path / "cache")
    mllm = load_mllm(str(folder), device="cpu", max_side=112, max_new_tokens=8, cache=cache)
    picture = np.random.default_rng(1).integers(0, 256, (400, 800, 3), dtype=np.uint8)
    first = mllm.ask(picture, "describe")
    second = mllm.ask(picture, "describe")
    # 800 → 112 long side: 56x112, already multiples of 28.
    assert first.shown_size == (56, 112) and not first.cached and second.cached
    assert second.text == first.text
    results = mllm.ask_many([(picture, "describe"), (picture, "")])
    assert results[0].text == first.text and type(results[1]).__name__ == "InputError"
    assert math.isfinite(len(first.text))


def test_load_mllm_refuses_other_families_and_missing_folders(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelLoadError, match="multimodal LLM"):
        load_mllm(str(tmp_path / "clip"))
    with pytest.raises(ModelNotFoundError, match="was not found"):
        load_mllm(str(tmp_path / "absent"))


def test_local_reply_is_bounded_by_max_new_tokens(tmp_path):
    folder = save_tiny_qwen_vl(tmp_path / "q", family="qwen2_5_vl")
    mllm = load_mllm(str(folder), device="cpu", max_new_tokens=5)
    model = mllm._weights.model
    real, generated = model.generate, []

    def generate(**kwargs):
        output = real(**kwargs)
        generated.append((kwargs["max_new_tokens"], output.shape[1] - kwargs["input_ids"].shape[1]))
        return output

    model.generate = generate
    try:
        picture = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        reply = mllm.ask(picture, "describe")
    finally:
        del model.generate
    [(asked, new)] = generated
    assert asked == 5 and 0 < new <= 5
    longest = max(len(token) for token in mllm._weights.tokenizer.get_vocab())
    assert len(reply.text) <= 5 * longest


def test_local_failure_advice_names_the_options_a_user_can_set(tmp_path):
    folder = save_tiny_qwen_vl(tmp_path / "q", family="qwen2_5_vl")
    mllm = load_mllm(str(folder), device="cpu", max_new_tokens=2)
    model = mllm._weights.model

    def out_of_memory(**kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    model.generate = out_of_memory
    try:
        with pytest.raises(MLLMError) as info:
            mllm.ask(np.zeros((32, 32, 3), np.uint8), "describe")
    finally:
        del model.generate
    message = str(info.value)
    assert "(RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB)" in message
    assert message.endswith(
        "If memory ran out, show smaller images (`AskOptions.overview_size`) or use a smaller "
        "model (`MLLMOptions.model`); otherwise re-download the model folder.")
    assert "max_side" not in message


@pytest.mark.parametrize(("family", "factor", "frame"), CASES)
def test_local_qwen_says_the_size_it_will_show_and_is_asked_in_its_frame(
    tmp_path, family, factor, frame
):
    from terramask.methods.replies import prompt_for

    folder = save_tiny_qwen_vl(tmp_path / family, family=family)
    mllm = load_mllm(str(folder), device="cpu", max_side=200, max_new_tokens=2)
    picture = np.random.default_rng(3).integers(0, 256, (150, 400, 3), dtype=np.uint8)
    # 400 → 200 long side: 75x200, then Qwen's processor rounds it to its patch grid
    shown = mllm.shown_size(picture.shape[:2])
    prompt = prompt_for(mllm, "where is the pool?", picture.shape[:2])
    reply = mllm.ask(picture, prompt)
    assert reply.shown_size == shown and shown[0] % factor == 0 and shown[1] % factor == 0
    assert mllm.frame == reply.frame == frame
    if frame == "pixel":
        assert f"Image size: {shown[1]} x {shown[0]} pixels" in prompt
    else:
        assert "0-1000, not pixels" in prompt and "Image size:" not in prompt


def test_local_qwen_coords_override_the_family_frame(tmp_path):
    folder = save_tiny_qwen_vl(tmp_path / "q3", family="qwen3_vl")
    mllm = load_mllm(str(folder), device="cpu", max_new_tokens=2, coords="pixel")
    assert mllm.frame == "pixel"
    assert mllm.ask(np.zeros((64, 64, 3), np.uint8), "describe").frame == "pixel"
    with pytest.raises(InputError, match="coordinate frame 'thousandths'"):
        load_mllm(str(folder), device="cpu", coords="thousandths")
