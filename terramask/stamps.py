"""Stamps of files: what changes when a file does (its size and modification time), so that
caches and resumable runs never serve a result made from an older version of a file."""

from __future__ import annotations

import os
from pathlib import Path


def file_stamp(source: str | os.PathLike, *, label: str | None = None) -> str:
    """`label:size:mtime_ns` of a local file (`label`: the path as given); a URL, a GDAL path
    or a file that cannot be read: just its label."""
    label = os.fspath(source) if label is None else label
    try:
        stat = os.stat(source)
    except (OSError, ValueError):
        return label
    return f"{label}:{stat.st_size}:{stat.st_mtime_ns}"


def folder_stamps(folder: str | os.PathLike) -> list[str]:
    """`name:size:mtime_ns` of each file directly in `folder`, by name (a model folder's
    weights replaced in place change its stamps)."""
    return [file_stamp(path, label=path.name)
            for path in sorted(Path(folder).iterdir()) if path.is_file()]  # fmt: skip


__all__ = ["file_stamp", "folder_stamps"]
