"""Run one verb over many scenes: per-scene results, a merged index, resumable, failures isolated.

Serves `segment`, `prompt` and `ask` alike: the verb is a `run_one(source)` that writes one
scene's outputs and returns its result dict. A scene counts as done when its JSON report
exists: reports are written last and atomically, so re-running the same command after a crash
or Ctrl-C skips finished scenes and redoes only the one that was interrupted. One scene's
failure is recorded with its reason and the batch goes on. A scene with nothing to work on
(`NothingToDo`, e.g. no prompt inside it) is skipped: its report records why, so a re-run
skips it too, and it is not a failure.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio.raw

from terramask.atomic import atomic_output
from terramask.errors import InputError, NothingToDo, TerraMaskError
from terramask.protocols import Progress
from terramask.scene import OutputSet, scene_name

RunOne = Callable[[str], dict]
Prepare = Callable[[list[str]], None]

INDEX_NAME = "index.gpkg"
SUMMARY_NAME = "summary.json"
INDEX_BATCH = 50_000


@dataclass
class BatchSummary:
    """What a batch did: counts, failures with reasons, time, peak memory, the index.

    `skipped` scenes had nothing to work on (with the reason); `nothing_found` are processed
    scenes whose result says it found nothing (`found: false`), e.g. an `ask` refusal.
    """

    scenes: int
    processed: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    nothing_found: list[str] = field(default_factory=list)
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
            "skipped": self.skipped,
            "nothing_found": self.nothing_found,
            "tiles": self.tiles,
            "tiles_skipped_no_data": self.tiles_skipped,
            "seconds": round(self.seconds, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "index": self.index,
            "summary": self.summary,
        }


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


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
    prepare: Prepare | None = None,
) -> BatchSummary:
    """`run_one(source)` for each source not already done; then the index and the summary.

    `run_one` returns the scene's result dict (with `outputs`; for tiled runs `tiles`; for
    object runs `found`). `prepare(pending)`, when given, sees the sources about to run before
    the first one does (e.g. to fetch MLLM replies for all of them concurrently); it must not
    raise for one scene's sake, since that scene's own run records its failure.
    """
    check_unique_names(sources)
    output = Path(output)
    started = time.perf_counter()
    summary = BatchSummary(scenes=len(sources))
    pending = []
    for source in sources:
        report = OutputSet(output, scene_name(source), overwrite=overwrite).path("report")
        if report.exists() and not overwrite:
            summary.already_done.append(source)
        else:
            pending.append(source)
    if prepare and pending:
        prepare(list(pending))
    done = len(summary.already_done)
    for source in pending:
        if progress:
            progress("scenes", done, len(sources))
        done += 1
        try:
            result = run_one(source)
        except NothingToDo as exc:
            _write_skip_report(output, source, str(exc))
            summary.skipped.append({"scene": source, "reason": str(exc)})
            continue
        except TerraMaskError as exc:
            summary.failed.append({"scene": source, "reason": str(exc)})
            continue
        summary.processed.append(source)
        if result.get("found") is False:
            summary.nothing_found.append(source)
        tiles = result.get("tiles") or {}
        summary.tiles += int(tiles.get("total", 0))
        summary.tiles_skipped += int(tiles.get("skipped_no_data", 0))
    if progress:
        progress("scenes", len(sources), len(sources))
    left_out = {f["scene"] for f in summary.failed + summary.skipped}
    index = write_index(output, [scene_name(s) for s in sources if s not in left_out])
    summary.index = None if index is None else str(index)
    summary.seconds = time.perf_counter() - started
    summary.peak_rss_mib = peak_rss_mib()
    path = output / SUMMARY_NAME
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(summary.to_dict(), indent=2))
    summary.summary = str(path)
    return summary


def _write_skip_report(output: Path, source: str, reason: str) -> None:
    """The report of a scene with nothing to work on: why, so that a re-run skips it too."""
    report = OutputSet(output, scene_name(source), overwrite=True).path("report")
    output.mkdir(parents=True, exist_ok=True)
    with atomic_output(report, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps({"scene": source, "skipped": reason}, indent=2))


def write_index(output: Path, names: Sequence[str]) -> Path | None:
    """All scenes' polygons in one GeoPackage with a `scene` field, scene by scene (appended).

    Scenes keep their own CRS in their own files; the index is written in the CRS of the
    first scene, and a scene in another CRS is reprojected into it.
    """
    from terramask.scene.vectors import fixed_gpkg_date, to_pyproj

    index = output / INDEX_NAME
    parts = [(n, output / f"{n}.gpkg") for n in names if (output / f"{n}.gpkg").exists()]
    if not parts:
        return None
    with atomic_output(index, overwrite=True) as tmp, fixed_gpkg_date():
        target_crs = None
        written = False
        for name, gpkg in parts:
            for meta, geometry, values in _read_batches(gpkg):
                crs = meta["crs"]
                if target_crs is None:
                    target_crs = crs
                elif crs and target_crs and not to_pyproj(crs).equals(to_pyproj(target_crs)):
                    geometry = _reproject_wkb(geometry, crs, target_crs)
                fields = [*meta["fields"], "scene"]
                data = [*values, np.array([name] * len(geometry), dtype=object)]
                pyogrio.raw.write(
                    tmp, geometry, data, fields, crs=target_crs, driver="GPKG",
                    layer="objects", geometry_type="MultiPolygon", promote_to_multi=True,
                    append=written,
                )  # fmt: skip
                written = True
        if not written:
            pyogrio.raw.write(
                tmp, np.array([], dtype=object), [np.array([], dtype=object)], ["scene"],
                crs=target_crs, driver="GPKG", layer="objects", geometry_type="MultiPolygon",
            )  # fmt: skip
    return index


def _read_batches(gpkg: Path, size: int = INDEX_BATCH) -> Iterator[tuple]:
    """A scene's polygons `size` at a time, so the index never holds a whole scene's."""
    skip = 0
    while True:
        meta, _, geometry, values = pyogrio.raw.read(gpkg, skip_features=skip, max_features=size)
        if len(geometry) == 0:
            return
        yield meta, geometry, values
        skip += len(geometry)


def _reproject_wkb(geometry: np.ndarray, source: str, target: str) -> np.ndarray:
    import shapely
    from pyproj import Transformer

    transformer = Transformer.from_crs(source, target, always_xy=True)
    shapes = shapely.from_wkb(geometry)
    moved = shapely.transform(shapes, lambda xy: np.column_stack(transformer.transform(*xy.T)))
    return shapely.to_wkb(moved)
