"""Model resolution: aliases, local folders, the HF cache, offline errors and wrapped hub errors."""

from __future__ import annotations

import huggingface_hub
import pytest
from huggingface_hub import errors as hub_errors

from terramask.errors import ModelLoadError, ModelNotFoundError
from terramask.models import (
    KNOWN_MODELS,
    list_models,
    load_image_text,
    load_segmenter,
    pull_model,
    resolve_model,
)
from terramask.models.registry import DEFAULT_MODELS, FAMILY_KIND, KINDS, is_offline


def test_known_models_are_consistent():
    for name, spec in KNOWN_MODELS.items():
        assert spec.name == name
        assert spec.kind in KINDS
        assert FAMILY_KIND[spec.family] == spec.kind
    assert KNOWN_MODELS["sam-hq-vit-base"].hub_id == "syscv-community/sam-hq-vit-base"
    assert KNOWN_MODELS["sam3"].gated
    assert DEFAULT_MODELS["segmenter"] == "facebook/sam-vit-large"
    assert DEFAULT_MODELS["image_text"] == "openai/clip-vit-base-patch16"


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2"])
def test_local_segmenter_folder(tiny_sam, family):
    resolved = resolve_model(str(tiny_sam[family]), kind="segmenter")
    assert (resolved.origin, resolved.family, resolved.spec) == ("local", family, None)
    assert resolved.path == tiny_sam[family].resolve()


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_local_image_text_folder(tiny_clip, family):
    resolved = resolve_model(str(tiny_clip[family]), kind="image_text")
    assert (resolved.origin, resolved.family) == ("local", family)


def test_found_in_cache_offline_by_hub_id_and_alias(
    tiny_sam, tiny_clip, isolated_hub, lay_out_cache
):
    snapshot = lay_out_cache(isolated_hub, "facebook/sam-vit-base", tiny_sam["sam"])
    lay_out_cache(isolated_hub, "tiny-org/tiny-clip", tiny_clip["clip"])
    assert is_offline()

    by_id = resolve_model("facebook/sam-vit-base", kind="segmenter")
    assert (by_id.origin, by_id.family, by_id.path) == ("cache", "sam", snapshot)
    assert by_id.spec is KNOWN_MODELS["sam-vit-base"]

    by_alias = resolve_model("sam-vit-base", kind="segmenter")
    assert by_alias.path == snapshot and by_alias.requested == "sam-vit-base"

    unknown_repo = resolve_model("tiny-org/tiny-clip", kind="image_text")
    assert (unknown_repo.origin, unknown_repo.family, unknown_repo.spec) == ("cache", "clip", None)


def test_cached_models_load_through_the_user_path(tiny_sam, tiny_clip, isolated_hub, lay_out_cache):
    lay_out_cache(isolated_hub, "facebook/sam-vit-base", tiny_sam["sam"])
    lay_out_cache(isolated_hub, "openai/clip-vit-base-patch16", tiny_clip["clip"])
    assert load_segmenter("sam-vit-base").name == "sam-vit-base"
    assert load_image_text().name == "openai/clip-vit-base-patch16"  # the default


def _assert_one_paragraph(message: str):
    assert "\n" not in message
    assert "Traceback" not in message and 'File "' not in message


def test_offline_and_missing_names_model_cache_offline_and_fix(isolated_hub):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("sam-vit-huge", kind="segmenter")
    message = str(info.value)
    _assert_one_paragraph(message)
    assert "sam-vit-huge" in message
    assert str(isolated_hub) in message
    assert "offline" in message.lower()
    assert "terramask models pull sam-vit-huge" in message
    assert "hf download facebook/sam-vit-huge" in message
    assert "local folder" in message


def test_missing_local_path_names_the_folder(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(missing), kind="segmenter")
    message = str(info.value)
    _assert_one_paragraph(message)
    assert str(missing) in message and "does not exist" in message


def test_wrong_kind_folder_says_what_it_is_and_where_it_belongs(tiny_clip, tiny_sam):
    with pytest.raises(ModelLoadError) as info:
        resolve_model(str(tiny_clip["clip"]), kind="segmenter")
    message = str(info.value)
    _assert_one_paragraph(message)
    assert "'clip'" in message and "image-text" in message and "segmenter" in message
    with pytest.raises(ModelLoadError):
        load_image_text(str(tiny_sam["sam2"]))


def test_folder_without_a_model_is_a_load_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        resolve_model(str(tmp_path), kind="segmenter")


def _gated() -> Exception:
    exc = hub_errors.GatedRepoError.__new__(hub_errors.GatedRepoError)
    Exception.__init__(exc, "403 Client Error: access to model facebook/sam3 is restricted")
    return exc


def go_online(monkeypatch):
    """Lift offline mode however it was set (bin/test sets both variables), and let the hub
    count as reachable: these tests stand in for it by replacing the hub client."""
    from terramask.models import registry

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(registry, "hub_unreachable", lambda: None)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (_gated(), "hf auth login"),
        (ConnectionError("Failed to resolve 'huggingface.co'\nmore lines"), "ConnectionError"),
    ],
)
def test_hub_errors_are_wrapped_in_one_paragraph(monkeypatch, raised, expected):
    go_online(monkeypatch)

    def fake_snapshot_download(repo_id, *, local_files_only=False, **kwargs):
        if local_files_only:
            raise hub_errors.LocalEntryNotFoundError("not cached")
        raise raised

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id: [])
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("sam3", kind="concept")
    message = str(info.value)
    _assert_one_paragraph(message)
    assert expected in message and "facebook/sam3" in message
    assert "offline mode is on" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_pull_downloads_into_the_cache(monkeypatch, tiny_sam, isolated_hub, lay_out_cache):
    go_online(monkeypatch)
    calls = []

    def fake_snapshot_download(repo_id, *, local_files_only=False, cache_dir=None, **kwargs):
        calls.append((repo_id, local_files_only, kwargs))
        if local_files_only:
            raise hub_errors.LocalEntryNotFoundError("not cached")
        assert cache_dir == isolated_hub
        return str(lay_out_cache(isolated_hub, repo_id, tiny_sam["sam2"]))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo_id: ["config.json", "model.safetensors", "model.pt"])
    resolved = pull_model("sam2.1-hiera-tiny")
    assert (resolved.origin, resolved.family) == ("hub", "sam2")
    repo_id, local_only, kwargs = calls[-1]
    assert (repo_id, local_only) == ("facebook/sam2.1-hiera-tiny", False)
    assert "*.pt" in kwargs["ignore_patterns"]  # safetensors exist: skip pickled duplicates


def test_list_models_reports_what_is_cached(tiny_sam, isolated_hub, lay_out_cache):
    lay_out_cache(isolated_hub, "facebook/sam-vit-large", tiny_sam["sam"])
    rows = {spec.name: found for spec, found in list_models()}
    assert set(rows) == set(KNOWN_MODELS)
    assert rows["sam-vit-large"] is not None and rows["sam-vit-large"].origin == "cache"
    assert rows["sam-vit-base"] is None and rows["remoteclip-vit-b-32"] is None


def test_offline_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not is_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert is_offline()
