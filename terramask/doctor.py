"""`terramask doctor`: what this machine has, and a self-test of the whole prompt pipeline."""

from __future__ import annotations

import importlib.metadata
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REQUIRED_DRIVERS = ("GTiff", "COG", "GPKG", "GeoJSON", "PNG")
PACKAGES = (
    "torch", "transformers", "huggingface-hub", "rasterio", "shapely", "pyogrio", "pyproj",
    "openai",
)  # fmt: skip
OPTIONAL = {
    "open_clip_torch": "open_clip",
    "pycocotools": "eval",
    "ray": "ray",
    "fastapi": "server",
}


def _check(name: str, status: str, detail: str) -> dict:
    return {"name": name, "status": status, "detail": detail}


def _guarded(name: str, probe: Callable[[], list[dict]]) -> list[dict]:
    try:
        return probe()
    except Exception as exc:  # a doctor reports; it does not crash
        return [_check(name, "fail", f"{type(exc).__name__}: {exc}")]


def _versions() -> list[dict]:
    checks = [_check("python", "ok", platform.python_version())]
    for package in PACKAGES:
        try:
            checks.append(_check(package, "ok", importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(_check(package, "fail", "not installed"))
    for package, extra in OPTIONAL.items():
        try:
            version = importlib.metadata.version(package)
            checks.append(_check(package, "ok", f"{version} (extra '{extra}')"))
        except importlib.metadata.PackageNotFoundError:
            checks.append(
                _check(package, "ok", f"not installed (optional: pip install 'terramask[{extra}]')")
            )
    return checks


def _gdal() -> list[dict]:
    import rasterio

    with rasterio.Env() as env:
        drivers = env.drivers()
    missing = [d for d in REQUIRED_DRIVERS if d not in drivers]
    detail = f"GDAL {rasterio.__gdal_version__}, {len(drivers)} drivers"
    if missing:
        return [_check("gdal", "fail", f"{detail}; missing {', '.join(missing)}")]
    return [_check("gdal", "ok", f"{detail}; {', '.join(REQUIRED_DRIVERS)} present")]


def _device() -> list[dict]:
    import torch

    from terramask.models import choose_device, choose_dtype

    device = choose_device("auto")
    detail = f"{device} ({choose_dtype(device)}), torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        detail += f", {torch.cuda.get_device_name(device)}"
    return [_check("device", "ok", detail)]


def _models() -> list[dict]:
    from huggingface_hub import constants

    from terramask.models import list_models

    offline = bool(constants.HF_HUB_OFFLINE)
    checks = [
        _check(
            "hf cache",
            "ok",
            f"{constants.HF_HUB_CACHE} (offline mode {'on' if offline else 'off'})",
        )
    ]
    available = [spec.name for spec, found in list_models() if found is not None]
    checks.append(
        _check(
            "local models",
            "ok" if available else "warn",
            ", ".join(available)
            if available
            else "none in the cache: `terramask models pull sam-vit-large` on a connected machine",
        )
    )
    return checks


def self_test() -> list[dict]:
    """Run `prompt` end to end on a synthetic scene with a tiny random SAM, and check it."""
    import numpy as np
    import pyogrio
    import rasterio

    from terramask import api
    from terramask.options import ModelOptions, Tiling
    from terramask.testing.scenes import write_synthetic_scene
    from terramask.testing.tiny_models import save_tiny_sam

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="terramask-doctor-") as tmp:
        root = Path(tmp)
        scene = write_synthetic_scene(root / "scene.tif", width=300, height=200, nodata_border=4)
        model = save_tiny_sam(root / "tiny-sam")
        with rasterio.open(scene) as src:
            profile = (src.crs, src.transform, src.width, src.height)
            point = src.transform @ (150, 100)
            boxes = [
                (*(src.transform @ (x0, y1)), *(src.transform @ (x1, y0)))
                for x0, y0, x1, y1 in ((20, 20, 120, 90), (180, 100, 290, 190))
            ]
        # in map coordinates, as a user with a GIS would give them: one click, two boxes
        result = api.prompt(
            scene,
            points=[point],
            crs=profile[0].to_string(),
            boxes=boxes,
            models=ModelOptions(segmenter=str(model), device="cpu"),
            tiling=Tiling(tile=128, overlap=32),
            output=root / "out",
        )
        problems = []
        with rasterio.open(result.outputs["mask"]) as mask:
            if (mask.crs, mask.transform, mask.width, mask.height) != profile:
                problems.append("mask grid differs from the scene")
            border = mask.read(1, window=((0, 4), (0, mask.width)))
            if not np.all(border == mask.nodata):
                problems.append("nodata border not kept as nodata")
        info = pyogrio.read_info(result.outputs["gpkg"])
        if info["crs"] is None or rasterio.crs.CRS.from_user_input(info["crs"]) != profile[0]:
            problems.append("GeoPackage CRS differs from the scene")
        if len(result.objects) != 3:
            problems.append(f"expected 3 objects, got {len(result.objects)}")
    elapsed = time.perf_counter() - started
    if problems:
        return [_check("self-test", "fail", "; ".join(problems))]
    return [
        _check(
            "self-test",
            "ok",
            f"prompt pipeline on a 300x200 scene with a tiny random SAM in {elapsed:.1f} s",
        )
    ]


def run_doctor(*, with_self_test: bool = True) -> dict:
    """All checks as a list of {name, status, detail}; ok unless one failed."""
    checks: list[dict] = []
    checks += _guarded("versions", _versions)
    checks += _guarded("gdal", _gdal)
    checks += _guarded("device", _device)
    checks += _guarded("models", _models)
    if with_self_test:
        checks += _guarded("self-test", self_test)
    return {"ok": all(c["status"] != "fail" for c in checks), "checks": checks}
