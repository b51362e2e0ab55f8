"""`terramask serve` from the command line: bad flags are one line naming the flag, refused
before anything is written; a good command builds the app and hands it to uvicorn."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from terramask.cli import cli
from tests.server.conftest import make_root


def run(*args):
    return CliRunner().invoke(cli, ["serve", *[str(a) for a in args]], obj={})


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "--root"),
        (("--root", "{missing}"), "--root"),
        (("--root", "{root}", "--host", "0.0.0.0"), "--token"),
        (("--root", "{root}", "--token", "short"), "--token"),
        (("--root", "{root}", "--cors", "ftp://x"), "--cors"),
        (("--root", "{root}", "--basemap", "http://x/{{z}}"), "--basemap"),
        (("--root", "{root}", "--port", "70000"), "--port"),
        (("--root", "{root}", "--job-workers", "0"), "--job-workers"),
        (("--root", "{root}", "--max-request-size", "5"), "--max-request-size"),
        (("--root", "{root}", "--embedding-cache-mb", "-1"), "--embedding-cache-mb"),
        (("--root", "{root}", "--segmenter", "{missing}"), "was not found"),
        (("{missing}/scene.tif",), "scene.tif"),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, monkeypatch, args, needle):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    root = make_root(tmp_path)
    values = {"root": root, "missing": tmp_path / "missing"}
    out = tmp_path / "out"
    result = run(*[a.format(**values) for a in args], "-o", out)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "\n" not in text and "Traceback" not in text
    assert needle in text
    assert not out.exists()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_port_in_use_is_one_line_naming_the_flag_and_writes_nothing(
    tmp_path, monkeypatch, tiny_sam
):
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    root = make_root(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run("--root", root, "--port", port, "--segmenter", tiny_sam, "--device", "cpu",
                     "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "\n" not in text and "Serving" not in text
    assert f"--port {port} is in use" in text
    assert not (tmp_path / "out").exists()


def test_an_mllm_url_without_a_model_is_refused_at_start(tmp_path, monkeypatch, tiny_sam):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    root = make_root(tmp_path)
    result = run("--root", root, "--port", free_port(), "--segmenter", tiny_sam,
                 "--mllm-url", "http://127.0.0.1:9/v1", "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "--mllm-model" in text and "\n" not in text
    assert not (tmp_path / "out").exists()


def test_serve_builds_the_app_and_runs_uvicorn(tmp_path, monkeypatch, tiny_sam):
    import uvicorn

    calls = {}
    port = free_port()

    def fake_run(app, **kwargs):
        calls["app"], calls["kwargs"] = app, kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)
    root = make_root(tmp_path)
    result = run(root / "scene.tif", "--root", root, "--port", port, "--segmenter", tiny_sam,
                 "--device", "cpu", "-o", tmp_path / "out", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["url"] == f"http://127.0.0.1:{port}/" and info["docs"].endswith("/docs")
    assert info["scenes"][0] == "scene.tif" and "sub/small.tif" in info["scenes"]
    assert calls["kwargs"]["host"] == "127.0.0.1" and calls["kwargs"]["port"] == port
    assert str(calls["app"].state.server.options.root) == str(root)
    assert (tmp_path / "out" / "jobs.sqlite").exists()
