"""Finished tiles of one run on disk, one file each: what makes an interrupted run resumable.

A tile file is written to a temporary name and renamed, so a tile is either wholly there or
absent, whatever moment the run was stopped at. The folder carries the run's fingerprint
(scene, classes, engine, models, tiling); a folder left by a run with other settings is
cleared rather than mixed in. Outputs are always assembled from these files, whether the run
was interrupted or not, which is why a resumed run's outputs are byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import numpy as np
import shapely
from rasterio.windows import Window

from terramask.atomic import atomic_output, write_atomic
from terramask.errors import OutputError
from terramask.pipeline.segment_tiles import TileResult
from terramask.scene import Feature
from terramask.scene.outputs import WORK_FOLDER

_FINGERPRINT = "run.json"


class TileStore:
    """The tile files of one scene's run in `folder`, for the run described by `fingerprint`."""

    @classmethod
    def for_scene(cls, output: str | os.PathLike, scene: str, fingerprint: dict) -> TileStore:
        """The store of the scene named `scene` whose outputs go to the folder `output`."""
        return cls(_folder(output, scene), fingerprint)

    def __init__(self, folder: str | os.PathLike, fingerprint: dict) -> None:
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        marker = self.folder / _FINGERPRINT
        try:
            if self.folder.exists() and (
                not marker.exists() or json.loads(marker.read_text()) != self.fingerprint
            ):
                shutil.rmtree(self.folder)  # another run's tiles, or unknown ones: never mix
            self.folder.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                write_atomic(marker, json.dumps(self.fingerprint, indent=2))
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"The work folder {self.folder} (where finished tiles are kept so a run can "
                f"resume) cannot be used ({exc}). Check permissions and free space there, or "
                "delete it."
            ) from exc

    def done(self) -> set[int]:
        """Indexes of the tiles already finished; a damaged tile file is dropped, not trusted.

        (Tile files are renamed into place whole, so damage means something outside the run
        touched them; checking the zip directory is cheap and catches truncation.)
        """
        done = set()
        for path in self.folder.glob("*.npz"):
            if not path.stem.isdigit():
                continue
            if zipfile.is_zipfile(path):
                done.add(int(path.stem))
            else:
                path.unlink(missing_ok=True)
        return done

    def save(self, result: TileResult) -> None:
        arrays = _to_arrays(result)
        try:
            with atomic_output(self.folder / f"{result.index}.npz", overwrite=True) as temp:
                np.savez_compressed(temp, **arrays)
        except OSError as exc:
            raise OutputError(
                f"Keeping finished tile {result.index} in {self.folder} failed ({exc}). Check "
                "free disk space there; re-running the same command resumes."
            ) from exc

    def load(self, index: int) -> TileResult:
        with np.load(self.folder / f"{index}.npz") as data:
            return _from_arrays(index, data)

    def results(self, indexes: Iterable[int]) -> Iterable[TileResult]:
        """Tile results in the order given, one at a time."""
        for index in indexes:
            yield self.load(index)

    def remove(self) -> None:
        """Drop the folder once outputs are written (and the work folder when it is empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with suppress(OSError):
            self.folder.parent.rmdir()


def _folder(output: str | os.PathLike, scene: str) -> Path:
    return Path(output) / WORK_FOLDER / scene


def _to_arrays(result: TileResult) -> dict[str, np.ndarray]:
    c = result.core
    arrays = {
        "core": np.array([c.col_off, c.row_off, c.width, c.height], dtype=np.int64),
        "pixels": result.pixels,
    }
    if result.values is None:
        return arrays
    wkb = [shapely.to_wkb(f.geometry) for f in result.features]
    areas = [np.nan if f.area_m2 is None else f.area_m2 for f in result.features]
    return {
        **arrays,
        "values": result.values,
        "score": result.score,
        "wkb": np.frombuffer(b"".join(wkb), dtype=np.uint8),
        "wkb_ends": np.cumsum([len(b) for b in wkb], dtype=np.int64),
        "labels": np.array([f.label for f in result.features], dtype=str),
        "scores": np.array([f.score for f in result.features], dtype=np.float64),
        "areas": np.array(areas, dtype=np.float64),
        "on_seam": np.array(result.on_seam, dtype=bool),
    }


def _from_arrays(index: int, data) -> TileResult:
    core = Window(*(int(v) for v in data["core"]))
    pixels = data["pixels"]
    if "values" not in data:
        return TileResult(index, core, None, None, pixels)
    blob = data["wkb"].tobytes()
    ends = data["wkb_ends"].tolist()
    starts = [0, *ends[:-1]] if ends else []
    features = [
        Feature(
            shapely.from_wkb(blob[s:e]),
            str(label),
            float(score),
            None if np.isnan(area) else float(area),
        )
        for s, e, label, score, area in zip(
            starts, ends, data["labels"], data["scores"], data["areas"], strict=True
        )
    ]
    return TileResult(
        index, core, data["values"], data["score"], pixels, features, data["on_seam"].tolist()
    )
