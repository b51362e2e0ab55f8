"""s3:// rasters through GDAL's /vsis3/, against a local S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.scene import open_scene
from terramask.testing.scenes import write_synthetic_scene

moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra) not installed")
boto3 = pytest.importorskip("boto3", reason="boto3 (dev extra) not installed")


@pytest.fixture
def bucket(monkeypatch):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # GDAL's names for a custom, plain-HTTP, path-style endpoint
        "AWS_S3_ENDPOINT": f"{host}:{port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    client.create_bucket(Bucket="scenes")
    yield client
    server.stop()


def test_an_s3_raster_reads_like_the_local_file(tmp_path, bucket):
    local = write_synthetic_scene(tmp_path / "tile.tif", width=160, height=120, dtype="uint16")
    bucket.upload_file(str(local), "scenes", "area/tile.tif")
    with open_scene("s3://scenes/area/tile.tif") as remote, open_scene(local) as here:
        assert remote.name == "tile"
        assert (remote.crs, remote.transform, remote.width) == (here.crs, here.transform, 160)
        np.testing.assert_array_equal(remote.overview(80).image, here.overview(80).image)


def test_a_missing_s3_key_is_a_clear_error(bucket):
    with pytest.raises(InputError) as err:
        open_scene("s3://scenes/none.tif")
    assert "s3://scenes/none.tif" in str(err.value)
