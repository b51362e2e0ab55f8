"""Write instruction data in UniGeoSeg's released layout, the instances' GeoPackage and stats.

Layout (what `eval unigeoseg-bench` and UniGeoSeg's loaders read; specs/unigeoseg.md §3):

    OUT/interactive/{split}.json   a list of {"img", "mask", "json"}, paths relative to it
    OUT/interactive/images/<patch>.png      the patch (RGB)
    OUT/interactive/masks/<sample>.png      the target, 0 background / 255 target
    OUT/interactive/json/<sample>.json      {"question": [text], "reason": [explanation], ...}
    OUT/ref/...      referring, the same way
    OUT/reason/...   reasoning, the same way
    OUT/instances.gpkg   kept instances' polygons in the source CRS (georeferenced inputs)
    OUT/stats.json       per task, class and rule

Task folders carry the names of the Hugging Face release (`interactive`, `ref`, `reason`),
which is how the benchmark loader tells the tasks apart. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from terramask.atomic import write_atomic

#: Task -> folder, as in UniGeoSeg's Hugging Face release.
TASK_FOLDERS: dict[str, str] = {"interactive": "interactive", "referring": "ref",
                                "reasoning": "reason"}  # fmt: skip
STATS_NAME = "stats.json"
INSTANCES_NAME = "instances.gpkg"


def slug(name: str) -> str:
    """A category name as it appears in file names: lower case, runs of other characters '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "class"


def write_png(path: Path, array: np.ndarray) -> None:
    """An (H, W) or (H, W, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def sample_paths(patch_id: str, sample_id: str) -> dict[str, str]:
    """The entry of a sample in its task's list: paths relative to the task folder."""
    return {
        "img": f"images/{patch_id}.png",
        "mask": f"masks/{sample_id}.png",
        "json": f"json/{sample_id}.json",
    }


def write_sample(
    output: Path, task: str, patch_id: str, sample_id: str, image: np.ndarray,
    mask: np.ndarray, document: dict[str, Any],
) -> dict[str, str]:  # fmt: skip
    """The patch image (once per task folder), the 0/255 mask and the JSON of one sample."""
    folder = output / TASK_FOLDERS[task]
    entry = sample_paths(patch_id, sample_id)
    image_path = folder / entry["img"]
    if not image_path.exists():
        write_png(image_path, image)
    binary = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)
    write_png(folder / entry["mask"], binary)
    write_json(folder / entry["json"], document)
    return entry


def remove_sample(output: Path, task: str, entry: dict[str, str]) -> None:
    """Remove a sample's mask and JSON (a redone patch's samples are written afresh)."""
    folder = output / TASK_FOLDERS[task]
    for key in ("mask", "json"):
        (folder / entry[key]).unlink(missing_ok=True)


def write_listings(
    output: Path, split: str, tasks: Sequence[str], samples: Iterable[dict[str, Any]]
) -> dict[str, str]:
    """`{split}.json` in each task's folder (an empty list for a task without samples)."""
    by_task: dict[str, list[dict[str, str]]] = {task: [] for task in tasks}
    for sample in samples:
        by_task.setdefault(sample["task"], []).append(
            {"img": sample["img"], "mask": sample["mask"], "json": sample["json"]}
        )
    written = {}
    for task, entries in by_task.items():
        path = output / TASK_FOLDERS[task] / f"{split}.json"
        write_json(path, entries)
        written[task] = str(path)
    return written


def write_instances(output: Path, records: Sequence[dict[str, Any]]) -> list[str]:
    """The kept instances' polygons, one GeoPackage per source CRS (`instances.gpkg` when the
    inputs share one, else `instances_<CRS>.gpkg`); nothing for inputs without a CRS."""
    import shapely

    from terramask.scene.polygons import Feature, area_m2, to_pyproj
    from terramask.scene.vectors import write_vectors

    by_crs: dict[str, list[Feature]] = {}
    for record in records:
        crs = record.get("crs")
        if not crs:
            continue
        for instance in record.get("instances", []):
            if not instance.get("geometry"):
                continue
            geometry = shapely.from_wkt(instance["geometry"])
            properties = {
                "patch": record["patch"],
                "image": record["image"],
                "instance": int(instance["index"]),
                "pixels": int(instance["pixels"]),
                **{f"{task}_sample": instance["samples"].get(task) for task in TASK_FOLDERS},
            }
            by_crs.setdefault(crs, []).append(
                Feature(geometry, instance["class"], float("nan"),
                        area_m2(geometry, to_pyproj(crs)), properties)
            )
    written = []
    for crs, features in by_crs.items():
        name = INSTANCES_NAME
        if len(by_crs) > 1:
            code = to_pyproj(crs).to_string()
            name = f"instances_{re.sub(r'[^A-Za-z0-9]+', '_', code).strip('_')[:40]}.gpkg"
        path = output / name
        write_vectors(features, crs=crs, gpkg_path=path, geojson_path=None, overwrite=True,
                      layer="instances")  # fmt: skip
        written.append(str(path))
    return written
