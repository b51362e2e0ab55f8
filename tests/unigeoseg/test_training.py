"""Fine-tuning UniGeoSeg: the criterion, a few steps lowering the loss, checkpoints and
resuming, LoRA merged back into the released layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terramask.errors import InputError, OutputExistsError
from terramask.options import UniGeoSegTraining
from terramask.testing.tiny_unigeoseg import write_tiny_instruction_data
from terramask.train.unigeoseg_loss import UniGeoSegCriterion, language_loss


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_instruction_data(tmp_path_factory.mktemp("unigeoseg-data"), per_task=2)


def _recipe(model, **changes) -> UniGeoSegTraining:
    base = dict(init=str(model), epochs=1, batch_size=2, points=128, learning_rate=1e-3,
                warmup=0.0, val_fraction=0.0, curve="none", seed=0)  # fmt: skip
    return UniGeoSegTraining(**{**base, **changes})


def test_matching_pairs_each_query_with_its_own_target_and_the_loss_sees_it():
    criterion = UniGeoSegCriterion(points=400)
    a = torch.zeros(20, 20)
    a[:10] = 1
    b = 1 - a
    logits = torch.stack([b, a])[None] * 20 - 10  # query 0 draws b, query 1 draws a
    (queries, targets), = criterion.match(logits, [torch.stack([a, b])])
    assert dict(zip(targets.tolist(), queries.tolist(), strict=True)) == {0: 1, 1: 0}
    right = criterion((a[None, None] * 20 - 10,), a[None])
    wrong = criterion((b[None, None] * 20 - 10,), a[None])
    # the sampled points sit mostly on the boundary (importance 0.75), where even the right
    # mask's interpolated logit is near 0; away from it the right mask costs nothing
    assert right.mask < wrong.mask / 10 and right.dice < 0.15
    assert wrong.mask > 5 and wrong.dice > 0.85
    assert float(wrong.total) == pytest.approx(5 * wrong.mask + 5 * wrong.dice, rel=1e-5)


def test_the_language_loss_covers_only_labelled_next_tokens():
    logits = torch.randn(1, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100]])
    expected = F.cross_entropy(logits[0, 1:3], torch.tensor([3, 4]))
    assert float(language_loss(logits, labels)) == pytest.approx(float(expected), rel=1e-6)
    assert float(language_loss(logits, torch.full((1, 5), -100))) == 0.0


def _canvas_loss(model_folder, data, device="cpu") -> float:
    """Full-canvas BCE + Dice of a checkpoint on every training sample (no sampling)."""
    from terramask.methods.unigeoseg_prompts import route_instruction
    from terramask.models.unigeoseg import UniGeoSegSettings, load_unigeoseg_fresh
    from terramask.train.unigeoseg import load_training_samples, prepare_sample

    loaded = load_unigeoseg_fresh(str(model_folder), device=device)
    total = []
    for sample in load_training_samples(data, "train"):
        canvas, truth = prepare_sample(sample, loaded.canvas_size)
        result = loaded.segment(canvas, route_instruction(sample.question, sample.group),
                                UniGeoSegSettings(task=sample.group))  # fmt: skip
        logits = torch.from_numpy(result.canvas_logits)
        target = torch.from_numpy(truth).float()
        probs = logits.sigmoid()
        dice = 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
        total.append(float(F.binary_cross_entropy_with_logits(logits, target) + dice))
    return float(np.mean(total))


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_the_result_loads_as_a_checkpoint(
    tiny_unigeoseg_folder, tiny_data, tmp_path
):
    from terramask import api

    logged = []
    report = api.train_unigeoseg(
        tiny_data, output=tmp_path / "run", device="cpu",
        training=_recipe(tiny_unigeoseg_folder, max_steps=8, epochs=3), on_step=logged.append,
    )  # fmt: skip
    steps = [e for e in logged if "loss" in e]
    assert report["steps"] == 8 == len(steps)
    assert {e["task"] for e in steps} <= {"interactive", "referring", "reasoning"}
    assert all(e["lm"] > 0 for e in steps)  # the reply is labelled for every task
    before = _canvas_loss(tiny_unigeoseg_folder, tiny_data)
    after = _canvas_loss(tmp_path / "run" / "final", tiny_data)
    assert after < before * 0.9, (before, after)
    # the frozen Swin did not move
    from safetensors.torch import load_file

    old = load_file(str(tiny_unigeoseg_folder / "model.safetensors"))
    new = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    swin = [k for k in old if k.startswith("model.vision_tower.") and old[k].is_floating_point()]
    assert swin and all(torch.equal(old[k], new[k]) for k in swin)
    moved = [k for k in old if k.startswith("model.layers.") and not torch.equal(old[k], new[k])]
    assert moved
    assert json.loads((tmp_path / "run" / "report.json").read_text())["steps"] == 8
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(OutputExistsError):
        api.train_unigeoseg(tiny_data, output=tmp_path / "run", device="cpu",
                            training=_recipe(tiny_unigeoseg_folder, max_steps=1))  # fmt: skip


@pytest.mark.slow
def test_the_command_trains_and_reports_its_samples_per_task(tiny_unigeoseg_folder, tiny_data,
                                                              tmp_path):  # fmt: skip
    from click.testing import CliRunner

    from terramask.cli import cli

    res = CliRunner().invoke(cli, ["train", "unigeoseg", str(tiny_data), "--init",
                                   str(tiny_unigeoseg_folder), "--max-steps", "1", "--points",
                                   "128", "--val-fraction", "0", "--device", "cpu", "-o",
                                   str(tmp_path / "run")], obj={}, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "1 steps on 6 samples (interactive 2, referring 2, reasoning 2)" in res.stdout
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_an_interrupted_training_resumes_where_it_stopped(tiny_unigeoseg_folder, tiny_data,
                                                          tmp_path):  # fmt: skip
    from terramask import api

    recipe = _recipe(tiny_unigeoseg_folder, max_steps=4, epochs=4, curve="linear",
                     val_fraction=0.3)

    def stop_at_two(entry):
        if entry.get("step") == 2 and "loss" in entry:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        api.train_unigeoseg(tiny_data, output=out, device="cpu", training=recipe,
                            on_step=stop_at_two)  # fmt: skip
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000002"]
    with pytest.raises(OutputExistsError, match="resume"):
        api.train_unigeoseg(tiny_data, output=out, device="cpu", training=recipe)
    with pytest.raises(InputError, match="learning_rate"):
        api.train_unigeoseg(tiny_data, output=out, device="cpu", resume=True,
                            training=_recipe(tiny_unigeoseg_folder, max_steps=4, epochs=4,
                                             curve="linear", val_fraction=0.3,
                                             learning_rate=5e-4))  # fmt: skip
    logged = []
    report = api.train_unigeoseg(tiny_data, output=out, device="cpu", training=recipe,
                                 resume=True, on_step=logged.append)  # fmt: skip
    assert [e["step"] for e in logged if "loss" in e] == [3, 4]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert report["validations"] and "all" in report["validations"][-1]


def test_lora_trains_only_adapters_and_merges_back_to_the_released_layout(
    tiny_unigeoseg_folder, tmp_path, offline_hub
):
    from terramask.models.unigeoseg import UniGeoSegSettings, load_unigeoseg_fresh
    from terramask.train.unigeoseg import freeze_for_training, save_final

    loaded = load_unigeoseg_fresh(str(tiny_unigeoseg_folder), device="cpu")
    model = loaded.model
    trainable = freeze_for_training(model, _recipe(tiny_unigeoseg_folder, lora_rank=4))
    lm = [n for n in trainable if n.startswith("language_model.")]
    assert lm and all("lora_" in n for n in lm)
    assert not any(n.startswith(("vision.", "lm_head")) for n in trainable)
    assert any(n.startswith("tate.") for n in trainable)
    with torch.no_grad():  # a trained adapter: B is zero at start
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    image = np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    with_lora = loaded.segment(image, "the red roof", UniGeoSegSettings(task="referring"))
    save_final(model, loaded.tokenizer, tmp_path / "merged")
    merged = load_unigeoseg_fresh(str(tmp_path / "merged"), device="cpu")
    again = merged.segment(image, "the red roof", UniGeoSegSettings(task="referring"))
    np.testing.assert_allclose(again.logits, with_lora.logits, atol=1e-4)


@pytest.mark.parametrize(("changes", "field"), [
    ({"learning_rate": 0}, "learning_rate"), ({"warmup": 1.0}, "warmup"),
    ({"curve": "cosine"}, "curve"), ({"interactive_end": 1.5}, "interactive_end"),
    ({"lora_rank": 0}, "lora_rank"), ({"init": " "}, "init"),
])  # fmt: skip
def test_bad_recipes_are_refused_naming_the_option(changes, field):
    with pytest.raises(InputError, match=f"UniGeoSegTraining.{field}"):
        UniGeoSegTraining(**changes)


def test_bad_data_is_refused_before_any_model_loads(tmp_path):
    from terramask import api

    recipe = UniGeoSegTraining(init=str(tmp_path / "no-model"))
    with pytest.raises(InputError, match="DATA"):
        api.train_unigeoseg(tmp_path / "nowhere", output=tmp_path / "out", device="cpu",
                            training=recipe)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_tiny_helper_writes_a_checkpoint_and_data_from_the_command_line(tmp_path, capsys):
    """`python -m terramask.testing.tiny_unigeoseg FOLDER`, as docs/unigeoseg.md shows it."""
    from terramask.testing.tiny_unigeoseg import main

    main([str(tmp_path / "ug")])
    assert capsys.readouterr().out.split() == [str(tmp_path / "ug" / "unigeoseg"),
                                               str(tmp_path / "ug" / "data")]  # fmt: skip
    assert (tmp_path / "ug" / "unigeoseg" / "model.safetensors").is_file()
    assert all((tmp_path / "ug" / "data" / task / "train.json").is_file()
               for task in ("interactive", "ref", "reason"))  # fmt: skip
