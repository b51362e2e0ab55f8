"""LoRA click training of tiny random Qwen-VL models (no weights): the loss falls, only LoRA
weights change, an interrupted run resumes to the same adapter, the tuned model answers a
training image with its clicks through `ask`, and adapters are refused on another base."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("peft")

from terramask import api
from terramask.cli import cli
from terramask.errors import InputError, ModelLoadError, OutputExistsError
from terramask.methods.replies import parse_reply, prompt_for
from terramask.models.mllm import load_mllm
from terramask.options import ClickTraining, MLLMOptions, ModelOptions
from terramask.testing.tiny_click_models import save_tiny_click_base
from terramask.testing.tiny_models import save_tiny_sam

pytestmark = pytest.mark.slow

INSTRUCTIONS = ("the red roof", "the pool", "a tennis court", "the ship")
#: Optimizer steps of the overfitting runs (4 samples, 2 x 2 per step: one step per epoch);
#: what the tiny models need for every training answer to come back exactly.
STEPS = 80


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine, two threads that spin-wait for each
    other make these tiny models ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(root):
    """Four 96x128 images, each with a coloured rectangle (the target) and an instruction."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "msk").mkdir()
    lines = []
    for i, text in enumerate(INSTRUCTIONS):
        image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), np.uint8)
        mask[10 + 15 * i:40 + 15 * i, 12 + 20 * i:52 + 20 * i] = 255
        image[mask > 0] = [200, 50 + 40 * i, 30]
        Image.fromarray(image).save(root / "img" / f"{i}.png")
        Image.fromarray(mask).save(root / "msk" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "mask": f"msk/{i}.png",
                                 "instruction": text}))  # fmt: skip
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl"


def settings(base, **changes):
    values = dict(base=str(base), epochs=STEPS, batch_size=2, grad_accumulation=2,
                  learning_rate=1.5e-2, dropout=0.0, clicks=2, val_fraction=0.0, max_side=128,
                  warmup=0.1, save_every=20)  # fmt: skip
    return ClickTraining(**(values | changes))


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("clicks")
    return {
        "root": root,
        "sam": str(save_tiny_sam(root / "sam")),
        "data": make_data(root / "data"),
        "qwen2_5_vl": save_tiny_click_base(root / "qwen2_5_vl", "qwen2_5_vl"),
        "qwen3_vl": save_tiny_click_base(root / "qwen3_vl", "qwen3_vl"),
    }


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def trained(request, world):
    family = request.param
    base = world[family]
    before = digests(base)
    output = world["root"] / f"adapter-{family}"
    result = api.train_clicks(world["data"], training=settings(base),
                              models=ModelOptions(segmenter=world["sam"], device="cpu"),
                              output=output)  # fmt: skip
    return {"family": family, "base": base, "before": before, "output": output,
            "result": result, **world}  # fmt: skip


def test_loss_falls_and_only_lora_weights_change(trained):
    result, output = trained["result"], trained["output"]
    assert result["steps"] == STEPS and result["last_loss"] < 0.02 * result["first_loss"]
    assert digests(trained["base"]) == trained["before"]  # the base folder is untouched
    from safetensors.torch import load_file

    adapter = load_file(str(output / "adapter_model.safetensors"))
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    assert all("language_model" in k for k in adapter)  # the vision tower stays frozen
    client = load_mllm(str(trained["base"]), device="cpu", adapter=output)
    base_state = load_mllm(str(trained["base"]), device="cpu")._weights.model.state_dict()
    changed = 0
    for name, value in client._weights.model.named_parameters():
        if "lora_" in name:
            changed += 1
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, base_state[key]), name
    assert changed == len(adapter)
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, STEPS + 1))
    assert {"loss", "lr", "samples_per_s", "epoch"} <= set(log[0])
    record = json.loads((output / "terramask_training.json").read_text())
    assert record["frame"] == {"qwen2_5_vl": "pixel", "qwen3_vl": "norm1000"}[trained["family"]]
    card = (output / "README.md").read_text()
    assert "rank | 32" in card and str(trained["base"]) in card and "Validation" in card


def test_the_tuned_model_answers_a_training_image_with_its_clicks(trained):
    cache_file = next((trained["data"].parent / ".terramask-clicks").glob("clicks-*.jsonl"))
    entries = [json.loads(line) for line in cache_file.read_text().splitlines()]
    client = load_mllm(str(trained["base"]), device="cpu", adapter=trained["output"],
                       max_new_tokens=64)  # fmt: skip
    base = load_mllm(str(trained["base"]), device="cpu", max_new_tokens=64)
    matched = 0
    for i, text in enumerate(INSTRUCTIONS):
        image = np.asarray(Image.open(trained["data"].parent / "img" / f"{i}.png"))
        prompt = prompt_for(client, text, image.shape[:2], clicks=True)
        assert prompt == prompt_for(base, text, image.shape[:2], clicks=True)
        parsed = parse_reply(client.ask(image, prompt), image.shape[:2])
        target = np.asarray(Image.open(trained["data"].parent / "msk" / f"{i}.png")) > 0
        expected = [e for e in entries if e["points"][0] == _first_click(target)]
        assert len(expected) == 1
        if (parsed.point_labels.tolist() == expected[0]["labels"]
                and np.allclose(parsed.points, expected[0]["points"], atol=2.0)):
            matched += 1
    assert matched == len(INSTRUCTIONS)


def _first_click(target):
    from terramask.methods.click_synthesis import deepest, depth_map

    x, y, _ = deepest(depth_map(target))
    return [x, y]


@pytest.mark.parametrize("trained", ["qwen2_5_vl"], indirect=True)  # one family is enough
def test_an_interrupted_training_resumes_without_losing_steps(trained):
    output = trained["root"] / "interrupted"
    models = ModelOptions(segmenter=trained["sam"], device="cpu")

    def stop_at_15(entry):
        if entry.get("step") == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train_clicks(trained["data"], training=settings(trained["base"]), models=models,
                         output=output, on_step=stop_at_15)  # fmt: skip
    assert (output / "checkpoints" / "step-0000015").is_dir()
    assert not (output / "adapter_model.safetensors").exists()
    with pytest.raises(InputError, match="pass `resume` to continue it"):
        api.train_clicks(trained["data"], training=settings(trained["base"]), models=models,
                         output=output)  # fmt: skip
    with pytest.raises(InputError, match=r"these differ: training\.rank"):
        api.train_clicks(trained["data"], training=settings(trained["base"], rank=8),
                         models=models, output=output, resume=True)  # fmt: skip
    steps = []
    result = api.train_clicks(trained["data"], training=settings(trained["base"]),
                              models=models, output=output, resume=True,
                              on_step=lambda e: steps.append(e["step"]))  # fmt: skip
    assert steps == list(range(16, STEPS + 1)) and result["steps"] == STEPS
    from safetensors.torch import load_file

    resumed = load_file(str(output / "adapter_model.safetensors"))
    straight = load_file(str(trained["output"] / "adapter_model.safetensors"))
    assert resumed.keys() == straight.keys()
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-6) for k in straight)
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, STEPS + 1))
    with pytest.raises(OutputExistsError, match="An adapter already exists"):
        api.train_clicks(trained["data"], training=settings(trained["base"]), models=models,
                         output=output)  # fmt: skip


def test_resuming_restores_the_dropout_random_state(world):
    """With dropout on, the resumed run equals the straight one only if the random state
    travels with the checkpoint."""
    models = ModelOptions(segmenter=world["sam"], device="cpu")
    short = settings(world["qwen2_5_vl"], epochs=6, dropout=0.2, save_every=100)

    def stop_at_3(entry):
        if entry.get("step") == 3:
            raise KeyboardInterrupt

    straight = world["root"] / "dropout-straight"
    api.train_clicks(world["data"], training=short, models=models, output=straight)
    resumed = world["root"] / "dropout-resumed"
    with pytest.raises(KeyboardInterrupt):
        api.train_clicks(world["data"], training=short, models=models, output=resumed,
                         on_step=stop_at_3)  # fmt: skip
    api.train_clicks(world["data"], training=short, models=models, output=resumed, resume=True)
    from safetensors.torch import load_file

    a = load_file(str(straight / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    losses = [[e["loss"] for e in map(json.loads, (f / "train_log.jsonl").read_text()
                                      .splitlines())] for f in (straight, resumed)]  # fmt: skip
    assert losses[0] == losses[1]


@pytest.mark.parametrize("trained", ["qwen2_5_vl"], indirect=True)  # one family is enough
def test_adapters_are_refused_on_another_base(trained):
    with pytest.raises(ModelLoadError, match="was trained on the base model") as other:
        load_mllm(str(trained["qwen3_vl"]), device="cpu", adapter=trained["output"])
    assert "\n" not in str(other.value) and "qwen3_vl, hidden 32" in str(other.value)
    twin = save_tiny_click_base(trained["root"] / "twin", "qwen2_5_vl", seed=1)
    with pytest.raises(ModelLoadError, match="the same shape but other weights"):
        load_mllm(str(twin), device="cpu", adapter=trained["output"])
    with pytest.raises(InputError, match="trained to answer in the 'pixel' frame"):
        load_mllm(str(trained["base"]), device="cpu", adapter=trained["output"],
                  coords="norm1000")  # fmt: skip
    with pytest.raises(InputError, match=r"no adapter_config\.json"):
        load_mllm(str(trained["base"]), device="cpu", adapter=trained["root"])
    # merging onto another base names the option of merging (`base`, --base)
    with pytest.raises(ModelLoadError, match=r"trained on as `base`\."):
        api.merge_adapter(trained["output"], trained["root"] / "m-other",
                          base=str(trained["qwen3_vl"]))  # fmt: skip
    other = CliRunner().invoke(cli, ["train", "merge", str(trained["output"]), "-o",
                                     str(trained["root"] / "m-other"), "--base",
                                     str(trained["qwen3_vl"])])  # fmt: skip
    assert other.exit_code == 2 and "trained on as --base." in other.stderr
    assert not (trained["root"] / "m-other").exists()


@pytest.mark.parametrize("trained", ["qwen3_vl"], indirect=True)  # one family is enough
def test_merged_model_answers_like_base_plus_adapter(trained):
    merged = trained["root"] / "merged"
    api.merge_adapter(trained["output"], merged)
    assert (merged / "tokenizer.json").is_file() and (merged / "chat_template.jinja").is_file()
    image = np.asarray(Image.open(trained["data"].parent / "img" / "1.png"))
    tuned = load_mllm(str(trained["base"]), device="cpu", adapter=trained["output"],
                      max_new_tokens=48)  # fmt: skip
    served = load_mllm(str(merged), device="cpu", max_new_tokens=48)
    prompt = prompt_for(tuned, INSTRUCTIONS[1], image.shape[:2], clicks=True)
    assert served.ask(image, prompt).text == tuned.ask(image, prompt).text
    # `--mllm-model MERGED` shows images at the size the adapter was trained at, as
    # `--adapter` does (a larger scene would otherwise be shown at 1024 and the clicks lost)
    from terramask.models.mllm.factory import make_mllm

    assert make_mllm(MLLMOptions(model=str(merged)), device="cpu").max_side == 128
    assert make_mllm(MLLMOptions(model=str(merged), max_side=256), device="cpu").max_side == 256
    assert make_mllm(MLLMOptions(model=str(trained["base"])), device="cpu").max_side == 1024
    with pytest.raises(InputError, match="already holds the adapter"):  # not applied twice
        make_mllm(MLLMOptions(model=str(merged), adapter=trained["output"]), device="cpu")
    with pytest.raises(OutputExistsError):
        api.merge_adapter(trained["output"], merged)
    again = CliRunner().invoke(cli, ["train", "merge", str(trained["output"]), "-o",
                                     str(trained["root"] / "merged-cli"), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["frame"] == "norm1000"
    assert (trained["root"] / "merged-cli" / "model.safetensors").is_file()
    refused = CliRunner().invoke(cli, ["train", "merge", str(trained["output"]), "-o",
                                       str(merged)])  # fmt: skip
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr


@pytest.mark.parametrize("trained", ["qwen2_5_vl"], indirect=True)  # one family is enough
def test_ask_and_eval_take_the_adapter_and_it_improves_ask(trained, tmp_path):
    image = trained["data"].parent / "img" / "0.png"
    runner = CliRunner()
    common = ["--engine", "clicks", "--mllm-model", str(trained["base"]), "--segmenter",
              trained["sam"], "--device", "cpu", "--no-mllm-cache", "--json"]  # fmt: skip
    tuned = runner.invoke(cli, ["ask", str(image), INSTRUCTIONS[0], *common, "--adapter",
                                str(trained["output"]), "-o", str(tmp_path / "tuned")])
    assert tuned.exit_code == 0, tuned.output
    answer = json.loads(tuned.stdout)
    assert answer["found"] and [p["label"] for p in answer["points"]] == [1, 1]
    plain = runner.invoke(cli, ["ask", str(image), INSTRUCTIONS[0], *common,
                                "-o", str(tmp_path / "plain")])  # fmt: skip
    assert plain.exit_code == 2 or not json.loads(plain.stdout)["found"]
    refused = runner.invoke(cli, ["ask", str(image), INSTRUCTIONS[0], "--engine", "box",
                                  "--mllm-model", str(trained["base"]), "--adapter",
                                  str(trained["output"]), "-o", str(tmp_path / "box")])
    assert refused.exit_code == 2 and "--adapter does not apply here" in refused.stderr
    endpoint = runner.invoke(cli, ["ask", str(image), "x", "--engine", "clicks", "--mllm-url",
                                   "http://127.0.0.1:9/v1", "--mllm-model", "m", "--adapter",
                                   str(trained["output"])])  # fmt: skip
    assert endpoint.exit_code == 2 and "--adapter does not apply here" in endpoint.stderr
    with pytest.raises(InputError, match=r"`MLLMOptions\.adapter` does not apply here"):
        api.ask(str(image), "x", engine="geoseg",
                mllm=MLLMOptions(model=str(trained["base"]), adapter=trained["output"]))

    from tests.helpers.referring_data import build_earthreason

    build_earthreason(tmp_path / "er", split="test")
    scored = runner.invoke(cli, ["eval", "earthreason", "--root", str(tmp_path / "er"),
                                 "--split", "test", *common, "--adapter",
                                 str(trained["output"]), "-o", str(tmp_path / "eval")])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.stdout)
    assert report["models"]["mllm"] == f"{trained['base']}+{trained['output'].name}"
    assert 0 <= report["giou"] <= 100  # per cent


@pytest.mark.parametrize("trained", ["qwen3_vl"], indirect=True)  # one family is enough
def test_validation_reports_giou_before_and_after_and_the_cli_trains(trained, tmp_path):
    output = tmp_path / "validated"
    result = CliRunner().invoke(cli, [
        "train", "clicks", str(trained["data"]), "--base", str(trained["base"]),
        "--segmenter", trained["sam"], "--device", "cpu", "--val-fraction", "0.25",
        "--max-steps", "2", "--epochs", "2", "--batch-size", "3", "--grad-accumulation", "1",
        "--clicks", "2", "--max-side", "128", "--lr", "1e-3", "-o", str(output),
        "--cache", str(tmp_path / "cache"), "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [v["epoch"] for v in summary["validation"]] == [0, 1, 2]
    assert all(v["samples"] == 1 and 0 <= v["giou"] <= 1 for v in summary["validation"])
    assert summary["data"]["validation_samples"] == 1 and summary["data"]["train_samples"] == 3
    card = (output / "README.md").read_text()
    assert "0 (base model)" in card
    again = CliRunner().invoke(cli, ["train", "clicks", str(trained["data"]), "--base",
                                     str(trained["base"]), "-o", str(output)])  # fmt: skip
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_a_segmenter_given_as_the_base_names_base_not_mllm_model(world, tmp_path):
    """A SAM folder given to `--base` is refused naming --base (before: --mllm-model, a flag
    `train clicks` does not have)."""
    result = CliRunner().invoke(cli, [
        "train", "clicks", str(world["data"]), "--base", world["sam"], "--segmenter",
        world["sam"], "--device", "cpu", "-o", str(tmp_path / "adapter"),
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "--base" in message and "--mllm-model" not in message
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()
