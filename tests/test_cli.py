"""The command line: options parse as documented, errors are one paragraph without traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from terramask.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], obj={})

    return invoke


def test_every_documented_command_exists(run):
    result = run("--help")
    assert result.exit_code == 0
    for command in ("prompt", "segment", "ask", "eval", "score", "models", "doctor"):
        assert command in result.output
    for sub in ("list", "where", "pull"):
        assert sub in run("models", "--help").output


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--point", "12", "2 comma-separated numbers"),
        ("--point", "a,b", "2 comma-separated numbers"),
        ("--box", "1,2,3", "4 comma-separated numbers"),
        ("--bands", "4,x,2", "1-based integers"),
    ],
)
def test_malformed_options_are_rejected_before_any_work(run, tmp_path, option, value, message):
    result = run("prompt", tmp_path / "missing.tif", option, value)
    assert result.exit_code == 2
    assert message in result.output


def test_negative_map_coordinates_parse_as_values(run, tmp_path):
    # a negative longitude must not be mistaken for an option
    result = run(
        "prompt", tmp_path / "missing.tif", "--point", "-122.41,37.77", "--crs", "EPSG:4326"
    )
    assert result.exit_code == 2
    assert "2 comma-separated numbers" not in result.output
    assert "No such option" not in result.output


def test_models_list_and_where(run, tmp_path, monkeypatch):
    import json

    from huggingface_hub import constants

    from terramask.testing.tiny_models import save_tiny_sam

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    # online, so that `where` itself must refrain from contacting the hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    listed = run("models", "list", "--json")
    assert listed.exit_code == 0
    names = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
    assert names["sam-vit-large"]["hub_id"] == "facebook/sam-vit-large"
    assert names["sam-vit-large"]["local"] is None

    folder = save_tiny_sam(tmp_path / "my-sam")
    where = run("models", "where", folder, "--json")
    assert where.exit_code == 0, where.output
    assert json.loads(where.stdout) == {
        "model": str(folder),
        "path": str(folder.resolve()),
        "family": "sam",
        "origin": "local",
    }
    missing = run("models", "where", "sam-vit-base")
    assert missing.exit_code == 2
    assert (
        "not contacted" in missing.output and "terramask models pull sam-vit-base" in missing.output
    )


def test_progress_rate_column():
    from rich.progress import Progress

    from terramask.cli import RateColumn

    with Progress(auto_refresh=False) as bar:
        fast, slow, new = (bar.add_task(n, total=100) for n in ("fast", "slow", "new"))
        column = RateColumn()
        assert str(column.render(bar.tasks[new])) == ""  # no speed yet: nothing shown
        bar.tasks[fast].finished_speed = 10.0
        bar.tasks[slow].finished_speed = 0.25
        assert str(column.render(bar.tasks[fast])) == "10.00/s"
        assert str(column.render(bar.tasks[slow])) == "4.0 s each"
