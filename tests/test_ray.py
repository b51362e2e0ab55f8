"""The Ray backend on a local Ray (this machine's cores) with a tiny real CLIP: outputs are
identical to the in-process backend's, a worker that dies has its tiles retried, and without
Ray the flag says how to install it."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import rasterio
import torch

from terramask import api
from terramask.errors import InputError
from terramask.methods.vocabulary import ClassVocabulary
from terramask.options import ModelOptions, RayOptions, Tiling
from terramask.pipeline.engines import PredictorSpec
from terramask.pipeline.segment_run import run_segment
from terramask.scene import OutputSet, open_scene
from terramask.testing.scenes import write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_clip
from tests.helpers import flaky
from tests.helpers.flaky import DieOnceSpec

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'terramask[ray]')")

CLASSES = ["field", "road,street", "water"]
FILES = ("_labels.tif", "_score.tif", ".gpkg", ".geojson", "_preview.png", ".json")
TILING = {"tiling": Tiling(tile=128, overlap=32)}


@pytest.fixture(scope="module", autouse=True)
def flaky_travels_by_value():
    """DieOnceSpec goes to Ray workers pickled by value, not as a reference to the module
    `tests.helpers.flaky`: workers need not be able to import `tests` (Ray puts the driver's
    working directory on their sys.path, which is the checkout only when pytest runs there)."""
    ray.cloudpickle.register_pickle_by_value(flaky)  # Ray pickles arguments with ray.cloudpickle
    yield
    ray.cloudpickle.unregister_pickle_by_value(flaky)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    scene = write_synthetic_scene(root / "scene.tif", width=300, height=260)
    clip = save_tiny_clip(root / "clip")
    yield scene, clip
    from terramask.pipeline.ray_backend import release_workers

    release_workers()
    if ray.is_initialized():
        ray.shutdown()


def digests(folder, stem="scene"):
    return {s: hashlib.sha256((folder / f"{stem}{s}").read_bytes()).hexdigest() for s in FILES}


def test_ray_local_gives_the_same_outputs_as_in_process(setup, tmp_path):
    """Byte-identical when a worker has as many CPUs (torch threads) as this process uses;
    with fewer threads float sums are ordered differently: scores (after a softmax at logit
    scale 50, which amplifies) agree to about 1e-4, and labels except at near-ties."""
    scene, clip = setup
    common = dict(engine="clip", models=ModelOptions(clip=str(clip), device="cpu"), **TILING)
    local = api.segment(scene, CLASSES, output=tmp_path / "local", **common)
    one = api.segment(
        scene,
        CLASSES,
        output=tmp_path / "ray1",
        **common,
        ray=RayOptions(address="local", workers=1),
    )  # fmt: skip
    assert one.tiles == local.tiles == {"total": 9, "skipped_no_data": 0, "resumed": 0}
    assert ray.cluster_resources()["CPU"] == torch.get_num_threads()  # 1 worker: all of them
    assert digests(tmp_path / "ray1") == digests(tmp_path / "local")

    api.segment(
        scene,
        CLASSES,
        output=tmp_path / "ray2",
        **common,
        ray=RayOptions(address="local", workers=2),
    )
    for kind in ("labels", "score"):
        with rasterio.open(tmp_path / "ray2" / f"scene_{kind}.tif") as a, rasterio.open(
            tmp_path / "local" / f"scene_{kind}.tif"
        ) as b:
            if kind == "labels":  # near-ties of the random model may flip (seen: 1 in 78 000)
                assert (a.read() != b.read()).mean() < 1e-3
            else:
                np.testing.assert_allclose(a.read(), b.read(), atol=2e-3)  # seen: up to 5e-4


def test_a_worker_that_dies_has_its_tiles_retried(setup, tmp_path):
    from terramask.pipeline.ray_backend import RayRunner

    scene, clip = setup
    spec = PredictorSpec("clip", ModelOptions(clip=str(clip), device="cpu"))
    vocabulary = ClassVocabulary.parse(CLASSES)
    marker = tmp_path / "died"
    with open_scene(scene) as opened:
        runner = RayRunner(RayOptions("local", workers=1), DieOnceSpec(spec, str(marker)),
                           opened, vocabulary)  # fmt: skip
        outputs = OutputSet(tmp_path / "flaky", opened.name)
        result = run_segment(opened, vocabulary, runner, outputs, **TILING)
    assert marker.exists()  # a worker really died midway
    assert result.tiles["total"] == 9
    api.segment(
        scene,
        CLASSES,
        engine="clip",
        output=tmp_path / "local",
        **TILING,
        models=ModelOptions(clip=str(clip), device="cpu"),
    )  # fmt: skip
    flaky, local = digests(tmp_path / "flaky"), digests(tmp_path / "local")
    assert flaky.pop(".json") and local.pop(".json")  # the reports name other spec options
    assert flaky == local


def test_a_worker_dying_beyond_the_retries_stops_the_run_with_a_reason(setup, tmp_path):
    from terramask.errors import TerraMaskError
    from terramask.pipeline.ray_backend import RayRunner

    scene, clip = setup
    spec = DieOnceSpec(PredictorSpec("clip", ModelOptions(clip=str(clip))), str(tmp_path / "died"))
    vocabulary = ClassVocabulary.parse(CLASSES)
    with open_scene(scene) as opened:
        runner = RayRunner(RayOptions("local", workers=1), spec, opened, vocabulary, retries=0)
        outputs = OutputSet(tmp_path / "o", opened.name)
        with pytest.raises(TerraMaskError, match=r"tried 1 times .* worker died"):
            run_segment(opened, vocabulary, runner, outputs, **TILING)
    assert not (tmp_path / "o" / "scene_labels.tif").exists()


def test_without_ray_the_flag_says_how_to_install_it(setup, tmp_path, monkeypatch):
    scene, clip = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'terramask\[ray\]'"):
        api.segment(
            scene,
            CLASSES,
            engine="clip",
            output=tmp_path / "o",
            models=ModelOptions(clip=str(clip)),
            ray=RayOptions(address="local"),
        )  # fmt: skip
    assert not (tmp_path / "o" / "scene_labels.tif").exists()


def test_cli_ray_flag_without_ray_is_one_paragraph_and_exit_2(setup, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from terramask.cli import cli

    scene, clip = setup
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(cli, ["segment", str(scene), "-c", "field", "--engine", "clip",
                                      "--clip", str(clip), "--ray", "local", "-o",
                                      str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2
    assert "terramask[ray]" in result.stderr and "Traceback" not in result.output


def test_ray_address_joins_a_running_cluster(setup, tmp_path):
    """The CLI in another process, with --ray and the address of the Ray this process runs:
    it joins that cluster, its tiles run there, and the outputs are the same. (This process
    itself cannot move to another cluster, which Ray does not support once actors ran: it
    refuses with a clear error.)"""
    import json
    import subprocess

    from terramask.pipeline.ray_backend import _connect, release_workers

    scene, clip = setup
    _connect(ray, "local")  # started by the tests above, or now
    release_workers()  # leave the cluster's CPUs to the other process
    address = ray.get_runtime_context().gcs_address
    with pytest.raises(InputError, match="cannot switch"):
        _connect(ray, "10.0.0.1:6379")
    args = ["segment", scene, "-c", CLASSES[0], "-c", CLASSES[1], "-c", CLASSES[2],
            "--engine", "clip", "--clip", clip, "--device", "cpu", "--tile", "128",
            "--overlap", "32", "--ray", address, "--ray-workers", "1", "--json",
            "-o", tmp_path / "joined"]  # fmt: skip
    joined = subprocess.run([sys.executable, "-m", "terramask.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert json.loads(joined.stdout)["tiles"]["total"] == 9
    api.segment(
        scene,
        CLASSES,
        output=tmp_path / "local",
        engine="clip",
        **TILING,
        models=ModelOptions(clip=str(clip), device="cpu"),
    )  # fmt: skip
    assert digests(tmp_path / "joined") == digests(tmp_path / "local")
