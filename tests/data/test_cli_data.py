"""`terramask data build` from the command line: the shared Potsdam sample end to end (no MLLM),
and flags that are wrong or do not apply stopped in one line before any work."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from terramask.cli import cli
from terramask.eval.referring_datasets import load_referring_dataset

POTSDAM = ["-c", "0=ignore", "-c", "1=impervious surface", "-c", "2=building", "-c",
           "3=low vegetation", "-c", "4=tree", "-c", "5=car", "-c", "6=clutter"]  # fmt: skip


def test_potsdam_sample_builds_and_reads_back(rs_samples, tmp_path):
    root = rs_samples / "potsdam"
    out = tmp_path / "out"
    args = ["data", "build", str(root / "img_dir"), str(root / "ann_dir"), *POTSDAM,
            "-o", str(out), "--split", "test", "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert set(stats["tasks"]) == {"interactive"}
    kept = stats["instances"]["kept"]
    assert kept > 0 and stats["tasks"]["interactive"]["samples"] == kept
    removed = sum(stats["rules"].values())
    assert stats["instances"]["candidates"] == kept + removed
    data = load_referring_dataset("unigeoseg-bench", out, split="test")
    assert len(data.samples) == kept and all(s.coordinates for s in data.samples)
    again = CliRunner().invoke(cli, args)  # the same command: everything was done already
    assert json.loads(again.output)["patches"]["done_before"] == stats["patches"]["total"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--min-area", "2"], "--min-area"),
        (["--stride", "600"], "--stride"),
        (["--mask-check"], "--mask-check"),
        (["--mllm-timeout", "5"], "--mllm-timeout"),
        (["--task", "referring"], "generator"),
        (["--judge-url", "http://127.0.0.1:9/v1"], "--judge-model"),
        (["--point-weights", "1,2"], "three comma-separated"),
        (["--split", "stats"], "--split"),
        (["--device", "cpu"], "--device"),
    ],
)
def test_bad_flags_are_one_line_errors_before_any_work(tmp_path, flags, message):
    out = tmp_path / "out"
    args = ["data", "build", str(tmp_path), str(tmp_path), "-c", "1=building", "-o", str(out),
            *flags]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("which", ["images", "labels"])
def test_a_missing_images_or_labels_path_is_refused_before_anything_is_written(
    rs_samples, tmp_path, which
):
    root = rs_samples / "potsdam"
    paths = {"images": str(root / "img_dir"), "labels": str(root / "ann_dir")}
    paths[which] = str(tmp_path / "nowhere")
    out = tmp_path / "out"
    args = ["data", "build", paths["images"], paths["labels"], *POTSDAM, "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"The {which} path" in result.output and "nowhere" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # no empty data set that a corrected re-run would meet


def test_a_patch_whose_label_was_edited_is_made_again_not_reused(rs_samples, tmp_path):
    """Fixing a label and re-running the same command must not serve the old samples."""
    import shutil

    import numpy as np
    from PIL import Image

    root = rs_samples / "potsdam"
    images, labels = tmp_path / "img", tmp_path / "ann"
    shutil.copytree(root / "img_dir", images)
    shutil.copytree(root / "ann_dir", labels)
    out = tmp_path / "out"
    args = ["data", "build", str(images), str(labels), *POTSDAM, "-o", str(out), "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    before = json.loads(first.output)
    assert before["classes"]["car"]["kept"] > 0
    label = next(labels.iterdir())
    values = np.asarray(Image.open(label)).copy()
    values[values == 5] = 6  # every car relabelled clutter
    Image.fromarray(values).save(label)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    after = json.loads(again.output)
    assert after["patches"]["done_before"] == 0 and after["patches"]["processed"] == 1
    assert after["classes"].get("car", {}).get("kept", 0) == 0
    listed = json.loads((out / "interactive" / "train.json").read_text())
    assert listed and not any("_car" in entry["mask"] for entry in listed)
    assert not list((out / "interactive" / "masks").glob("*_car*"))  # the old ones removed
