"""The scenes a server may show: those it was started with, and any under its root folder.

A scene is named by an id: its path relative to `--root` (`fields/2024/a.tif`) when it lies
there, else its file name without suffix (made unique with `-2`, `-3`, …). A client may ask
for any raster or STAC item under the root by its relative path; the path is resolved (`..`
and symlinks followed) and refused unless it ends inside the root, and so is a STAC item's
local asset. URLs are served only when the server was started with them: a client cannot make
the server fetch an address of its choosing.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from terramask.errors import InputError
from terramask.options import RasterOptions
from terramask.server.problems import Problem, for_api
from terramask.stamps import file_stamp

#: Raster files a root folder is searched for (STAC item JSON is recognised by its content).
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".ntf")
#: At most this many files are listed from a root (clients may still open others by path).
MAX_LISTED = 2000
#: STAC files larger than this are not inspected while listing.
MAX_STAC_BYTES = 1_000_000
#: Display variants (bands and stretch asked for by tile requests) kept per scene.
DISPLAY_VARIANTS = 8


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://", "ftp://", "s3://", "gs://", "az://",
                                      "/vsi"))  # fmt: skip


@dataclass(eq=False)
class ServedScene:
    """One scene: where it comes from, how it is shown, and the opened reader (shared by
    every request, one at a time: `lock`)."""

    id: str
    source: str
    raster: RasterOptions
    lock: threading.RLock = field(default_factory=threading.RLock)
    _scene: Any = None
    _warnings: list[str] = field(default_factory=list)
    _displays: OrderedDict = field(default_factory=OrderedDict)

    @property
    def name(self) -> str:
        from terramask.scene import scene_name

        return scene_name(self.source)

    def scene(self) -> Any:
        """The opened `Scene` (its stretch computed once); InputError if it cannot be read."""
        with self.lock:
            if self._scene is None:
                from terramask.scene import open_scene

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self._scene = open_scene(self.source, self.raster)
                self._warnings = [str(w.message) for w in caught]
            return self._scene

    def fingerprint(self) -> str:
        """What changes when the file does: its real path, size and modification time."""
        if is_url(self.source):
            return self.source
        if not os.path.exists(self.source):
            return self.source
        return file_stamp(self.source, label=os.path.realpath(self.source))

    def display(self, bands: tuple[int, ...] | None, stretch: Any) -> tuple[tuple[int, ...], Any]:
        """The bands (as R, G, B) and `Stretch` a tile is drawn with: the scene's own, or
        those asked for (computed once per choice, as the scene computes its own)."""
        scene = self.scene()
        wanted = RasterOptions(bands=bands, stretch=stretch if stretch is not None else "auto")
        if bands is None and stretch is None:
            return tuple(scene.bands), scene.stretch
        key = (wanted.bands, wanted.stretch)
        with self.lock:
            if key in self._displays:
                self._displays.move_to_end(key)
                return self._displays[key]
        from terramask.scene import open_scene

        options = RasterOptions(
            bands=wanted.bands or self.raster.bands,
            stretch=wanted.stretch if stretch is not None else self.raster.stretch,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_scene(self.source, options) as other:
                found = (tuple(other.bands), other.stretch)
        with self.lock:
            self._displays[key] = found
            while len(self._displays) > DISPLAY_VARIANTS:
                self._displays.popitem(last=False)
        return found

    def info(self) -> dict[str, Any]:
        """What the page needs to show the scene: size, CRS, bounds, tiles, how it is drawn."""
        scene = self.scene()
        info: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "width": scene.width,
            "height": scene.height,
            "count": scene.count,
            "dtype": scene.dtype,
            "bands": list(scene.bands),
            "stretch": scene.stretch.description or "none",
            "crs": scene.crs.to_string() if scene.crs else None,
            "georeferenced": scene.georeferenced,
            "bounds": list(scene.bounds) if scene.georeferenced else None,
            "bounds_wgs84": None,
            "tiles": None,
            "warnings": list(self._warnings),
        }
        if scene.georeferenced:
            from rasterio.warp import transform_bounds

            info["bounds_wgs84"] = list(
                transform_bounds(scene.crs, "EPSG:4326", *scene.bounds, densify_pts=21)
            )
            from terramask.server.tiles import zoom_range

            minzoom, maxzoom = zoom_range(self)
            info["tiles"] = {
                "url": f"/scenes/{quote_id(self.id)}/tiles/{{z}}/{{x}}/{{y}}.png",
                "minzoom": minzoom,
                "maxzoom": maxzoom,
                "tile_size": 256,
            }
        return info

    def summary(self) -> dict[str, Any]:
        """The scene in a listing (without opening it)."""
        return {"id": self.id, "name": self.name, "links": [
            {"rel": "self", "href": f"/scenes/{quote_id(self.id)}"}]}  # fmt: skip


def quote_id(scene_id: str) -> str:
    """A scene id as it goes into a URL path (each segment escaped, slashes kept)."""
    from urllib.parse import quote

    return "/".join(quote(part, safe="") for part in scene_id.split("/"))


class SceneRegistry:
    """The scenes given at start, plus any under `root`, by id; every lookup checks that a
    path stays inside the root."""

    def __init__(
        self,
        scenes: Iterable[str] = (),
        root: str | os.PathLike | None = None,
        raster: RasterOptions = RasterOptions(),
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.raster = RasterOptions(bands=raster.bands, stretch=raster.stretch)
        self._lock = threading.Lock()
        self._given: dict[str, ServedScene] = {}
        self._opened: dict[str, ServedScene] = {}
        from terramask.scene import expand_inputs, scene_name
        from terramask.scene.inputs import check_source

        for spec in scenes:
            for source in expand_inputs(spec, asset=raster.asset):
                check_source(source)  # a missing file is refused at start, not on first use
                under = self._relative(source)
                scene_id = under if under is not None else self._unique(scene_name(source))
                self._given[scene_id] = ServedScene(scene_id, source, self.raster)

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._given:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def _relative(self, source: str) -> str | None:
        """`source`'s path relative to the root, when it is a local file inside it."""
        if self.root is None or is_url(source):
            return None
        real = Path(source).resolve()
        return real.relative_to(self.root).as_posix() if real.is_relative_to(self.root) else None

    # ------------------------------------------------------------------ lookups

    def get(self, scene_id: str) -> ServedScene:
        """The scene of an id: a given one, or a raster or STAC item under the root."""
        if scene_id in self._given:
            return self._given[scene_id]
        with self._lock:
            if scene_id in self._opened:
                return self._opened[scene_id]
        path = self._inside_root(scene_id)
        source = self._source_of(path, scene_id)
        served = ServedScene(scene_id, source, self.raster)
        with self._lock:
            return self._opened.setdefault(scene_id, served)

    def file_under_root(self, relative: str) -> Path:
        """A file under the root by its relative path (a `run` line's ground truth)."""
        return self._inside_root(relative, what="file")

    def _inside_root(self, scene_id: str, what: str = "scene") -> Path:
        unknown = Problem(
            404,
            f"No scene {scene_id!r} is served here. `GET /scenes` lists the scenes; others "
            "under the server's root folder are opened by their path relative to it."
            if what == "scene" else f"There is no file {scene_id!r} under the server's root "
            "folder.",
            "not-found",
        )  # fmt: skip
        if self.root is None:
            raise unknown
        if not scene_id or "\x00" in scene_id or "\\" in scene_id:
            raise unknown
        candidate = (self.root / scene_id.lstrip("/")).resolve()
        if scene_id.startswith("/") or not candidate.is_relative_to(self.root):
            raise Problem(
                403,
                f"{scene_id!r} lies outside the server's root folder; only scenes inside it "
                "(after following `..` and symbolic links) can be opened.",
                "outside-root",
            )
        if not candidate.is_file():
            raise unknown
        return candidate

    def _source_of(self, path: Path, scene_id: str) -> str:
        """What GDAL opens for a file under the root: the file, or a STAC item's asset."""
        if path.suffix.lower() != ".json":
            return str(path)
        from terramask.scene import expand_inputs

        try:
            sources = expand_inputs(str(path), asset=self.raster.asset)
        except InputError as exc:
            raise Problem(422, for_api(str(exc)), "input", error=type(exc).__name__) from None
        if len(sources) != 1:
            raise Problem(
                422,
                f"{scene_id!r} holds {len(sources)} scenes (a STAC item collection); start "
                "the server with it to serve each of them, or open a single item.",
            )
        source = sources[0]
        if not is_url(source):
            real = Path(source).resolve()
            if not real.is_relative_to(self.root):  # type: ignore[arg-type]
                raise Problem(
                    403,
                    f"The STAC item {scene_id!r} points to a file outside the server's root "
                    "folder, which cannot be opened.",
                    "outside-root",
                )
        return source

    def listing(self) -> list[ServedScene]:
        """The given scenes, then rasters and STAC items under the root (at most MAX_LISTED)."""
        found = list(self._given.values())
        if self.root is None:
            return found
        seen = {s.id for s in found}
        count = 0
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if count >= MAX_LISTED:
                    return found
                path = Path(folder) / name
                if name.startswith(".") or not _is_scene_file(path):
                    continue
                if not path.resolve().is_relative_to(self.root):
                    continue  # a symlink out of the root
                scene_id = path.relative_to(self.root).as_posix()
                if scene_id not in seen:
                    found.append(ServedScene(scene_id, str(path), self.raster))
                    seen.add(scene_id)
                    count += 1
        return found


def _is_scene_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return not path.name.lower().endswith((".aux.xml", ".ovr"))
    if suffix != ".json":
        return False
    try:
        if path.stat().st_size > MAX_STAC_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == "Feature" and "stac_version" in data
