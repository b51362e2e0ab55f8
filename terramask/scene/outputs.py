"""Name a run's output files and check, before any heavy work, that they can be written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from terramask.errors import OutputError, OutputExistsError

SUFFIXES = {
    "mask": "_mask.tif",
    "score": "_score.tif",
    "labels": "_labels.tif",
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "preview": "_preview.png",
    "report": ".json",
}


class OutputSet:
    """The files one run writes into `directory`, all named after `stem`."""

    def __init__(self, directory: str | os.PathLike, stem: str, *, overwrite: bool = False):
        self.directory = Path(directory)
        self.stem = stem
        self.overwrite = overwrite

    def path(self, kind: str) -> Path:
        """Where an output of this kind goes (kinds: mask, score, labels, gpkg, geojson, …)."""
        try:
            return self.directory / f"{self.stem}{SUFFIXES[kind]}"
        except KeyError:
            known = ", ".join(SUFFIXES)
            raise ValueError(f"unknown output kind {kind!r}; known: {known}") from None

    def check(self, kinds: Iterable[str]) -> None:
        """Fail early if the directory is unusable or outputs exist without `overwrite`."""
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
