"""Rasters read over HTTP through GDAL's /vsicurl/, from a real server on 127.0.0.1."""

from __future__ import annotations

import http.server
import io
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.scene import open_scene
from terramask.testing.scenes import write_synthetic_scene


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the byte-range requests GDAL's /vsicurl/ relies on."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        header = self.headers.get("Range")
        if not path.is_file() or not header or not header.startswith("bytes="):
            return super().send_head()
        data = path.read_bytes()
        start_text, _, end_text = header[len("bytes=") :].partition("-")
        start = int(start_text)
        end = min(int(end_text) if end_text else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data[start : end + 1])


@pytest.fixture
def server(tmp_path):
    handler = partial(RangeHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_raster_over_http_reads_like_the_local_file(tmp_path, server):
    local = write_synthetic_scene(tmp_path / "remote.tif", width=200, height=150, nodata_border=3)
    with open_scene(f"{server}/remote.tif") as remote, open_scene(local) as here:
        assert remote.name == "remote"
        assert (remote.width, remote.height, remote.crs, remote.transform) == (
            here.width, here.height, here.crs, here.transform,
        )  # fmt: skip
        a, b = remote.overview(100), here.overview(100)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.valid, b.valid)


def test_a_missing_url_is_a_clear_error(server):
    with pytest.raises(InputError) as err:
        open_scene(f"{server}/nowhere.tif")
    assert "nowhere.tif" in str(err.value) and "Check the URL" in str(err.value)


def test_prompt_on_a_url_writes_outputs_named_after_it(tmp_path, server):
    from terramask import api
    from terramask.options import ModelOptions
    from tests.helpers.doubles import ShapeSegmenter

    write_synthetic_scene(tmp_path / "remote.tif", width=120, height=100)
    result = api.prompt(f"{server}/remote.tif", points=[(60, 50)],
                        models=ModelOptions(segmenter=ShapeSegmenter()),
                        output=tmp_path / "out")  # fmt: skip
    assert result.outputs["mask"] == tmp_path / "out" / "remote_mask.tif"
    assert result.objects[0]["area_m2"] > 0
