"""One run's set of output files: named after the scene, checked before any heavy work, written
whole into a staging folder and swapped into place together, or not at all.

A set is all or nothing. Files are written under `OUT/.terramask-staging/<stem>/`; only when
every one is complete are they moved beside the old ones (the report last, since it marks a
finished set). A failure or Ctrl-C removes the staging folder and leaves the old set as it
was. The moves are recorded in a journal first, so a process killed during them has its
swap finished by the next run that touches the set (`recover`), never left half old, half new.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from terramask.atomic import sweep_temps, write_atomic
from terramask.errors import OutputError, OutputExistsError, TerraMaskError

SUFFIXES = {
    "mask": "_mask.tif",
    "score": "_score.tif",
    "labels": "_labels.tif",
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "preview": "_preview.png",
    # travel with the layers above: GDAL's PAM sidecars (category names, attribute table)
    # and QGIS default styles (`<basename>.qml`; the polygons' serves the GeoJSON as well)
    "mask_aux": "_mask.tif.aux.xml",
    "labels_aux": "_labels.tif.aux.xml",
    "mask_style": "_mask.qml",
    "labels_style": "_labels.qml",
    "vector_style": ".qml",
    "report": ".json",
}
#: Where sets are written before they are swapped into place.
STAGING_FOLDER = ".terramask-staging"
#: Where a tiled run keeps its finished tiles until its set is written (`pipeline.tile_store`).
WORK_FOLDER = ".terramask-work"
_JOURNAL = "commit.json"


class OutputSet:
    """The files one run writes into `directory`, all named after `stem`."""

    def __init__(self, directory: str | os.PathLike, stem: str, *, overwrite: bool = False):
        self.directory = Path(directory)
        self.stem = stem
        self.overwrite = overwrite
        self.staging = self.directory / STAGING_FOLDER / stem

    def path(self, kind: str) -> Path:
        """Where an output of this kind ends up (kinds: mask, score, labels, gpkg, …)."""
        try:
            return self.directory / f"{self.stem}{SUFFIXES[kind]}"
        except KeyError:
            known = ", ".join(SUFFIXES)
            raise ValueError(f"unknown output kind {kind!r}; known: {known}") from None

    def target(self, kind: str) -> Path:
        """Where a run writes an output of this kind: its place in the staging folder."""
        return self.staging / self.path(kind).name

    def check(self, kinds: Iterable[str]) -> None:
        """Fail early if the directory is unusable or outputs exist without `overwrite`.

        Finishes a swap a killed run left half done and clears what an interrupted run
        staged, so that nothing left behind blocks or leaks into this run.

        Raises:
            OutputError: The folder cannot be created or written.
            OutputExistsError: Outputs exist and `overwrite` is false.
        """
        paths = [self.path(kind) for kind in kinds]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"The output folder {self.directory} cannot be created ({exc.strerror or exc}). "
                "Choose another folder with `output`, or fix its permissions."
            ) from exc
        if not self.directory.is_dir():
            raise OutputError(
                f"The output path {self.directory} exists but is not a folder. Choose a folder "
                "with `output`."
            )
        self.recover()
        existing = [p for p in paths if p.exists()]
        if existing and not self.overwrite:
            names = ", ".join(p.name for p in existing)
            raise OutputExistsError(
                f"These outputs already exist in {self.directory}: {names}. Nothing was "
                "changed; pass `overwrite` to replace them, or choose another output folder."
            )
        try:
            fd, probe = tempfile.mkstemp(prefix=".terramask-probe-", dir=self.directory)
            os.close(fd)
            os.remove(probe)
        except OSError as exc:
            raise OutputError(
                f"The output folder {self.directory} is not writable ({exc.strerror or exc}). "
                "Choose another folder with `output`, or fix its permissions."
            ) from exc

    def recover(self) -> None:
        """Finish a swap a killed run had started (its journal lists the moves), and remove
        whatever an interrupted run had staged but not swapped, or had left under temporary
        names beside the outputs, or had kept as finished tiles of a set that is complete."""
        sweep_temps(self.directory, self.stem)
        journal = self.staging / _JOURNAL
        if journal.is_file():
            try:
                names = json.loads(journal.read_text())
            except ValueError:
                names = []  # written atomically: unreadable means not ours; staged files stay
            for name in names:
                staged = self.staging / name
                if staged.exists():
                    os.replace(staged, self.directory / name)
        self._clear_staging()
        if self.path("report").exists():  # a finished set: its tiles are no longer needed
            shutil.rmtree(self.directory / WORK_FOLDER / self.stem, ignore_errors=True)
            with suppress(OSError):
                (self.directory / WORK_FOLDER).rmdir()

    @contextmanager
    def writing(self) -> Iterator[OutputSet]:
        """Stage the set's files; on any failure remove them, leave the old set untouched and
        turn a disk or permission failure into one OutputError naming the folder."""
        self._clear_staging()
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            yield self
        except BaseException as exc:
            if (self.staging / _JOURNAL).is_file():
                # stopped during the swap (Ctrl-C between two renames): finish it, so the
                # folder holds the whole new set, never part of it
                self.recover()
                raise
            self._clear_staging()
            if isinstance(exc, TerraMaskError) and not isinstance(exc, OutputError):
                raise
            if isinstance(exc, Exception) and _is_write_failure(exc):
                raise OutputError(
                    f"Writing the outputs of {self.stem} to {self.directory} failed "
                    f"({_reason(exc)}). Nothing was replaced: "
                    + _advice(exc)
                ) from exc
            raise

    def commit(self) -> dict[str, Path]:
        """Swap every staged file into place, the report last; returns them by kind.

        With `overwrite`, outputs of this stem that the new set does not hold (a GeoJSON of
        an earlier georeferenced run, say) are removed, so the folder holds one set.
        """
        staged = {
            kind: self.target(kind) for kind in SUFFIXES if self.target(kind).exists()
        }
        order = [k for k in staged if k != "report"] + (["report"] if "report" in staged else [])
        write_atomic(self.staging / _JOURNAL, json.dumps([staged[k].name for k in order]))
        for kind in order:
            os.replace(staged[kind], self.path(kind))
        if self.overwrite:
            for kind in SUFFIXES:
                if kind not in staged:
                    self.path(kind).unlink(missing_ok=True)
        self._clear_staging()
        return {kind: self.path(kind) for kind in order}

    def _clear_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        with suppress(OSError):  # only when empty: other scenes may be staging beside
            self.staging.parent.rmdir()


def _is_write_failure(exc: Exception) -> bool:
    """Failures of the disk or folder, whichever library met them (OSError, GDAL, OGR)."""
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("rasterio", "pyogrio", "fiona")) or "No space left" in str(exc)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _advice(exc: Exception) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text or "disk full" in text.lower():
        return "the disk is full. Free space there, or choose another folder with `output`."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "ermission" in text:
        return "the folder is not writable. Fix its permissions, or choose another `output`."
    return "check free disk space and permissions there, or choose another `output`."
