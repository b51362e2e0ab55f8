"""A model that is not here fails fast when the hub cannot be reached, and `models pull` on a
folder says it is already local."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from terramask.cli import cli
from terramask.errors import ModelNotFoundError
from terramask.models import registry
from terramask.testing.tiny_models import save_tiny_sam


@pytest.fixture
def online_but_unreachable(monkeypatch, tmp_path):
    """Offline mode off, an empty cache, and a hub endpoint nothing listens on."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    monkeypatch.setattr(registry, "_HUB_PROBES", {})

    def no_download(*args, **kwargs):
        raise AssertionError("the hub client must not be asked (it retries for ~30 s)")

    monkeypatch.setattr(registry, "_download", no_download)


def test_an_unreachable_hub_is_reported_without_the_hub_clients_retries(online_but_unreachable):
    with pytest.raises(ModelNotFoundError, match="cannot be reached from here") as error:
        registry.resolve_model("someone/some-sam", kind="segmenter")
    assert "models pull" in str(error.value) or "HF_HUB_OFFLINE" in str(error.value)
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        registry.pull_model("someone/some-sam")


def test_pull_of_a_local_folder_says_it_is_already_local(tmp_path):
    folder = save_tiny_sam(tmp_path / "my-sam")
    result = CliRunner().invoke(cli, ["models", "pull", str(folder)], obj={})
    assert result.exit_code == 0, result.output
    assert "already local" in result.output and "nothing to pull" in result.output
