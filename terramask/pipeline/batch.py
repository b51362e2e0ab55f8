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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from terramask.atomic import sweep_temps, write_atomic
from terramask.errors import InputError, NothingToDo, TerraMaskError
from terramask.options import INDEX_CRS
from terramask.protocols import Progress
from terramask.scene import OutputSet, scene_name
from terramask.scene.index import INDEX_NAME, write_index

RunOne = Callable[[str], dict]
Prepare = Callable[[list[str]], None]

SUMMARY_NAME = "summary.json"


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
    index_crs: str | None = None
    index_left_out: list[dict] = field(default_factory=list)
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
            "index_crs": self.index_crs,
            "index_left_out": self.index_left_out,
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
    settings: dict,
    overwrite: bool = False,
    progress: Progress | None = None,
    prepare: Prepare | None = None,
    index_crs: str = INDEX_CRS,
) -> BatchSummary:
    """`run_one(source)` for each source not already done; then the index and the summary.

    `run_one` returns the scene's result dict (with `outputs`; for tiled runs `tiles`; for
    object runs `found`) and writes `settings` into the scene's report. A scene whose report
    exists is done, and skipped, only when the report's settings are these; a scene done
    with other settings is refused, before any scene runs, unless `overwrite`. The index
    holds every scene's polygons in `index_crs`. `prepare(pending)`, when given, sees the
    sources about to run before the first one does (e.g. to fetch MLLM replies for all of
    them concurrently); it must not raise for one scene's sake, since that scene's own run
    records its failure. Any failure of one scene is recorded with its reason and the batch
    goes on; the summary is written whatever happened.

    Raises:
        InputError: Two sources share a name, or scenes in `output` were made with other
            settings (without `overwrite`).
    """
    check_unique_names(sources)
    output = Path(output)
    started = time.perf_counter()
    summary = BatchSummary(scenes=len(sources))
    settings = _normalised(settings)
    pending, stale = [], []
    for source in sources:
        outputs = OutputSet(output, scene_name(source), overwrite=overwrite)
        outputs.recover()  # a swap a killed run left half done is finished first
        report = outputs.path("report")
        if not report.exists() or overwrite:
            pending.append(source)
        elif _recorded_settings(report) == settings:
            summary.already_done.append(source)
        else:
            stale.append((source, _recorded_settings(report)))
    if stale:
        raise InputError(_stale_message(output, stale, settings))
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
            _write_skip_report(output, source, str(exc), settings)
            summary.skipped.append({"scene": source, "reason": str(exc)})
            continue
        except TerraMaskError as exc:
            summary.failed.append({"scene": source, "reason": str(exc)})
            continue
        except Exception as exc:  # a bug met on one scene: recorded, the others go on
            summary.failed.append({"scene": source, "reason": _unexpected(exc)})
            continue
        summary.processed.append(source)
        if result.get("found") is False:
            summary.nothing_found.append(source)
        tiles = result.get("tiles") or {}
        summary.tiles += int(tiles.get("total", 0))
        summary.tiles_skipped += int(tiles.get("skipped_no_data", 0))
    if progress:
        progress("scenes", len(sources), len(sources))
    output.mkdir(parents=True, exist_ok=True)
    sweep_temps(output, Path(INDEX_NAME).stem)
    sweep_temps(output, Path(SUMMARY_NAME).stem)
    left_out = {f["scene"] for f in summary.failed + summary.skipped}
    index = write_index(output, [scene_name(s) for s in sources if s not in left_out], index_crs)
    summary.index = None if index.path is None else str(index.path)
    summary.index_crs = index.crs
    summary.index_left_out = index.left_out
    summary.seconds = time.perf_counter() - started
    summary.peak_rss_mib = peak_rss_mib()
    path = write_atomic(output / SUMMARY_NAME, json.dumps(summary.to_dict(), indent=2))
    summary.summary = str(path)
    return summary


def _normalised(settings: dict) -> dict:
    """Settings as they read back from a report (JSON types only)."""
    return json.loads(json.dumps(settings, default=str))


def _recorded_settings(report: Path) -> dict | None:
    try:
        return json.loads(report.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None


def _stale_message(output: Path, stale: list[tuple[str, dict | None]], settings: dict) -> str:
    names = ", ".join(scene_name(s) for s, _ in stale[:5]) + (" …" if len(stale) > 5 else "")
    recorded = stale[0][1]
    if recorded is None:
        differs = "their reports record no settings (an earlier version made them)"
    else:
        keys = sorted(k for k in settings.keys() | recorded.keys()
                      if settings.get(k) != recorded.get(k))  # fmt: skip
        differs = f"these settings differ: {', '.join(keys)}"
    return (
        f"{len(stale)} scene{'s' if len(stale) > 1 else ''} in {output} ({names}) "
        f"{'were' if len(stale) > 1 else 'was'} made with other settings ({differs}). Nothing "
        "was run; pass `overwrite` to replace them, or choose another output folder."
    )


def _unexpected(exc: Exception) -> str:
    return (
        f"unexpected error ({type(exc).__name__}: {str(exc)[:300]}). This is a bug in "
        "TerraMask, not in your input; run this scene alone with --debug for the traceback "
        "and report it."
    )


def _write_skip_report(output: Path, source: str, reason: str, settings: dict) -> None:
    """The report of a scene with nothing to work on: why, so that a re-run with the same
    settings skips it too. It replaces any earlier outputs of the scene as one set."""
    outputs = OutputSet(output, scene_name(source), overwrite=True)
    output.mkdir(parents=True, exist_ok=True)
    with outputs.writing():
        payload = {"scene": source, "skipped": reason, "settings": settings}
        write_atomic(outputs.target("report"), json.dumps(payload, indent=2))
        outputs.commit()
