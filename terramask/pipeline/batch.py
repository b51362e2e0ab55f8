"""Run one verb over many scenes: per-scene results, a merged index, resumable, failures isolated.

A scene counts as done when its JSON report exists: reports are written last and atomically,
so re-running the same command after a crash or Ctrl-C skips finished scenes and redoes only
the one that was interrupted. One scene's failure is recorded with its reason and the batch
goes on.
"""

from __future__ import annotations

import json
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio.raw

from terramask.errors import InputError, TerraMaskError
from terramask.scene import OutputSet, atomic_output, scene_name

Progress = Callable[[str, int, int], None]
RunOne = Callable[[str], dict]

INDEX_NAME = "index.gpkg"
SUMMARY_NAME = "summary.json"


@dataclass
class BatchSummary:
    """What a batch did: counts, failures with reasons, time, peak memory, the index."""

    scenes: int
    processed: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    tiles: int = 0
    tiles_skipped: int = 0
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    index: str | None = None
    summary: str | None = None

    def to_dict(self) -> dict:
        return {
            "scenes": self.scenes,
            "processed": len(self.processed),
            "already_done": len(self.already_done),
            "failed": self.failed,
            "tiles": self.tiles,
            "tiles_skipped_no_data": self.tiles_skipped,
            "seconds": round(self.seconds, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "index": self.index,
            "summary": self.summary,
        }


def check_unique_names(sources: Sequence[str]) -> None:
    """Outputs are named after scenes: two sources with one name would overwrite each other."""
    counts = Counter(scene_name(s) for s in sources)
    clashes = sorted(name for name, n in counts.items() if n > 1)
    if clashes:
        examples = [s for s in sources if scene_name(s) in clashes][:4]
        raise InputError(
            f"Several inputs share the name {', '.join(clashes)} ({', '.join(examples)}), and "
            "outputs are named after their input. Rename them, or run them into separate "
            "output folders."
        )


def run_batch(
    sources: Sequence[str],
    run_one: RunOne,
    output: str | Path,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BatchSummary:
    """`run_one(source)` for each source not already done; then the index and the summary.

    `run_one` returns the scene's result dict (with `outputs` and, for tiled runs, `tiles`).
    """
    check_unique_names(sources)
    output = Path(output)
    started = time.perf_counter()
    summary = BatchSummary(scenes=len(sources))
    for done, source in enumerate(sources):
        if progress:
            progress("scenes", done, len(sources))
        name = scene_name(source)
        report = OutputSet(output, name, overwrite=overwrite).path("report")
        if report.exists() and not overwrite:
            summary.already_done.append(source)
            continue
        try:
            result = run_one(source)
        except TerraMaskError as exc:
            summary.failed.append({"scene": source, "reason": str(exc)})
            continue
        summary.processed.append(source)
        tiles = result.get("tiles") or {}
        summary.tiles += int(tiles.get("total", 0))
        summary.tiles_skipped += int(tiles.get("skipped_no_data", 0))
    if progress:
        progress("scenes", len(sources), len(sources))
    done_names = [scene_name(s) for s in sources if s not in {f["scene"] for f in summary.failed}]
    index = write_index(output, done_names)
    summary.index = None if index is None else str(index)
    summary.seconds = time.perf_counter() - started
    summary.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = output / SUMMARY_NAME
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(summary.to_dict(), indent=2))
    summary.summary = str(path)
    return summary


def write_index(output: Path, names: Sequence[str]) -> Path | None:
    """All scenes' polygons in one GeoPackage with a `scene` field, scene by scene (appended).

    Scenes keep their own CRS in their own files; the index is written in the CRS of the
    first scene, and a scene in another CRS is reprojected into it.
    """
    from terramask.scene.vectors import to_pyproj

    index = output / INDEX_NAME
    parts = [(n, output / f"{n}.gpkg") for n in names if (output / f"{n}.gpkg").exists()]
    if not parts:
        return None
    with atomic_output(index, overwrite=True) as tmp:
        target_crs = None
        written = False
        for name, gpkg in parts:
            meta, _, geometry, values = pyogrio.raw.read(gpkg)
            if len(geometry) == 0:
                continue
            crs = meta["crs"]
            if target_crs is None:
                target_crs = crs
            elif crs and target_crs and not to_pyproj(crs).equals(to_pyproj(target_crs)):
                geometry = _reproject_wkb(geometry, crs, target_crs)
            fields = [*meta["fields"], "scene"]
            data = [*values, np.array([name] * len(geometry), dtype=object)]
            pyogrio.raw.write(
                tmp, geometry, data, fields, crs=target_crs, driver="GPKG", layer="objects",
                geometry_type="MultiPolygon", promote_to_multi=True, append=written,
            )  # fmt: skip
            written = True
        if not written:
            pyogrio.raw.write(
                tmp, np.array([], dtype=object), [np.array([], dtype=object)], ["scene"],
                crs=target_crs, driver="GPKG", layer="objects", geometry_type="MultiPolygon",
            )  # fmt: skip
    return index


def _reproject_wkb(geometry: np.ndarray, source: str, target: str) -> np.ndarray:
    import shapely
    from pyproj import Transformer

    transformer = Transformer.from_crs(source, target, always_xy=True)
    shapes = shapely.from_wkb(geometry)
    moved = shapely.transform(shapes, lambda xy: np.column_stack(transformer.transform(*xy.T)))
    return shapely.to_wkb(moved)
