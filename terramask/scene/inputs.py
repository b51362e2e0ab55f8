"""Expand what a user points at into scene sources: a file, URL, folder, glob, list or STAC JSON."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from terramask.errors import InputError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg")
#: STAC asset keys tried, in order, when no `RasterOptions.asset` is given.
DEFAULT_ASSETS = ("visual", "image", "data", "analytic")
_URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "az://", "/vsi")


def check_source(source: str | os.PathLike) -> None:
    """An InputError for a local raster path that does not exist or is a folder; URLs and
    GDAL virtual paths are left to GDAL."""
    text = os.fspath(source)
    if text.lower().startswith(_URL_PREFIXES):
        return
    local = Path(text)
    if not local.exists():
        raise InputError(
            f"The raster {text} does not exist. Check the path (relative paths are read "
            f"from {Path.cwd()}), or pass a URL such as https://… or s3://bucket/key."
        )
    if local.is_dir():
        raise InputError(
            f"{text} is a folder, not a raster file. Pass one GeoTIFF (or other GDAL "
            "raster) file."
        )


def names_many(spec: str | os.PathLike) -> bool:
    """Whether `spec` names a set of scenes (a folder, a glob, a .txt list or a STAC JSON)
    rather than one raster, however many scenes the set turns out to hold."""
    text = os.fspath(spec)
    if text.lower().startswith(_URL_PREFIXES):
        return False
    path = Path(text).expanduser()
    return (
        path.is_dir()
        or any(c in text for c in "*?[")
        or (path.suffix.lower() in (".txt", ".json") and path.is_file())
    )


def expand_inputs(spec: str | os.PathLike, *, asset: str | None = None) -> list[str]:
    """Every scene `spec` names, in a stable order.

    Args:
        spec: A folder (its rasters, sorted by name, not recursive), a pattern with * ? or [
            (its matches), a .txt file (one path or URL per line, # comments), a STAC item,
            item collection or feature collection .json, or anything else: one scene.
        asset: The STAC asset to use (else the first of DEFAULT_ASSETS, else the first
            GeoTIFF asset).

    Returns:
        The scenes' paths or URLs.

    Raises:
        InputError: Nothing found, an unreadable list or STAC file, or a missing asset.
    """
    text = os.fspath(spec)
    if text.lower().startswith(_URL_PREFIXES):
        return [text]
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        return _non_empty([str(p) for p in found], f"the folder {path} holds no raster files")
    if any(c in text for c in "*?["):
        found = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        return _non_empty(found, f"the pattern {text!r} matches no file")
    if path.suffix.lower() == ".txt" and path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        return _non_empty(entries, f"the list {path} names no scene")
    if path.suffix.lower() == ".json" and path.is_file():
        return _stac_assets(path, asset)
    return [text]


def _non_empty(found: list[str], why: str) -> list[str]:
    if not found:
        raise InputError(f"No scene to process: {why}. Check the path or pattern.")
    return found


def _stac_assets(path: Path, asset: str | None) -> list[str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}).") from exc
    if not isinstance(document, dict):
        raise InputError(f"{path} is not a STAC item or item collection.")
    items = document.get("features") if "features" in document else [document]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InputError(f"{path} is not a STAC item or item collection (no features list).")
    sources = []
    for item in items:
        assets = item.get("assets") or {}
        key = asset or _default_asset(assets)
        if key not in assets or not isinstance(assets[key], dict) or "href" not in assets[key]:
            names = ", ".join(sorted(assets)) or "none"
            raise InputError(
                f"The STAC item {item.get('id', '?')} in {path} has no asset {key!r} with an "
                f"href (its assets: {names}). Choose one with `RasterOptions.asset`."
            )
        href = assets[key]["href"]
        if not href.lower().startswith(_URL_PREFIXES) and not os.path.isabs(href):
            href = str((path.parent / href).resolve())
        sources.append(href)
    return _non_empty(sources, f"{path} holds no STAC item")


def _default_asset(assets: dict) -> str | None:
    for key in DEFAULT_ASSETS:
        if key in assets:
            return key
    for key, value in assets.items():
        if isinstance(value, dict) and "tiff" in str(value.get("type", "")).lower():
            return key
    return None
