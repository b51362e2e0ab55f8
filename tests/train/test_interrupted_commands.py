"""Ctrl-C in `train clicks` / `train unigeoseg` says how to continue: with --resume once a
checkpoint was saved (the same command without it is refused), else the same command; in
`terramask clicks` it says that nothing was kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from terramask import api
from terramask.cli import cli


def _stopped_after_a_checkpoint(output, **_):
    state = Path(output) / "checkpoints" / "step-0000005"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}")
    raise KeyboardInterrupt


def _stopped_before_a_checkpoint(*_, **__):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command,function", [("clicks", "train_clicks"),
                                              ("unigeoseg", "train_unigeoseg")])
def test_ctrl_c_after_a_checkpoint_names_resume(command, function, tmp_path, monkeypatch):
    output = tmp_path / "run"

    def stop(data, *, output, **kw):
        _stopped_after_a_checkpoint(output)

    monkeypatch.setattr(api, function, stop)
    result = CliRunner().invoke(cli, ["train", command, str(tmp_path), "-o", str(output),
                                      "--json"])  # fmt: skip
    assert result.exit_code == 130, result.output
    assert "--resume" in result.stderr and "step-0000005" in result.stderr
    assert "--resume" in json.loads(result.stdout)["error"]["message"]

    monkeypatch.setattr(api, function, _stopped_before_a_checkpoint)
    again = CliRunner().invoke(cli, ["train", command, str(tmp_path), "-o",
                                     str(tmp_path / "other")])  # fmt: skip
    assert again.exit_code == 130 and "--resume" not in again.stderr
    assert "run the same command again" in again.stderr


def test_ctrl_c_in_click_synthesis_says_nothing_was_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "synthesize_clicks", _stopped_before_a_checkpoint)
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"")
    result = CliRunner().invoke(cli, ["clicks", str(mask), "-o", str(tmp_path / "c.jsonl")])
    assert result.exit_code == 130
    assert "nothing was written" in result.stderr and "continue where" not in result.stderr
    assert not (tmp_path / "c.jsonl").exists()
