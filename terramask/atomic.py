"""Write files atomically: to a hidden temporary name beside the target, renamed when complete.

The one way TerraMask writes a file, so that a crash, Ctrl-C or a full disk never leaves half
a file under the final name, and concurrent writers of one file never see each other's.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from terramask.errors import OutputExistsError


def exists_error(path: Path) -> OutputExistsError:
    """The error for an output that is there already and may not be replaced."""
    return OutputExistsError(
        f"The output {path} already exists and was left untouched. Pass `overwrite` to replace "
        "it, or choose another output folder."
    )


def remove_with_sidecars(path: Path) -> None:
    """Remove a file and whatever GDAL/SQLite put beside it (.aux.xml, -journal, .ovr …)."""
    for name in glob.glob(glob.escape(str(path)) + "*"):
        with suppress(OSError):
            os.remove(name)


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden name beside `path` that keeps its suffix (GDAL/OGR pick drivers by it);
    the same folder makes the final rename atomic."""
    return path.parent / f".{path.stem}.{tag}-{secrets.token_hex(4)}{path.suffix}"


@contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    On an exception the temporary file (and any sidecar) is removed and `path` is untouched.

    Raises:
        OutputExistsError: `path` exists and `overwrite` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise exists_error(path)
    temp = temp_sibling(path)
    try:
        yield temp
        if not temp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file {temp}")
        if path.exists() and not overwrite:
            raise exists_error(path)
        os.replace(temp, path)
    finally:
        remove_with_sidecars(temp)


def sweep_temps(folder: str | os.PathLike, stem: str) -> None:
    """Remove what a killed writer left of `stem`'s files in `folder`: the hidden temporary
    names `temp_sibling` gives (`.{stem}….tmp-…`, `.{stem}….work-…`) and their sidecars."""
    folder = Path(folder)
    for tag in ("tmp", "work"):
        for path in folder.glob(f".{glob.escape(stem)}*.{tag}-*"):
            with suppress(OSError):
                path.unlink()


def write_atomic(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = True) -> Path:
    """Write `data` (text as UTF-8) to `path` through `atomic_output`."""
    with atomic_output(path, overwrite=overwrite) as temp:
        temp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
