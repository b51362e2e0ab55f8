"""Label rasters to class ids: class specs, name merging, and any label encoding.

A class is given as `NAME` (its value is its position among the classes given, from 0),
`VALUE=NAME` (an integer label value), `#RRGGBB=NAME` or `R,G,B=NAME` (a colour of an RGB or
paletted label). Values and colours are not mixed in one run. Label values and colours that
no class names are never instances; they are counted as "unlisted" in the run's statistics.

Names are merged in two ways: keys that carry one name are one class (`-c 1=tree -c 2=tree`),
and a mapping file (`{"low vegetation": "vegetation", "clutter": null}`, JSON) renames
classes, so that several source names become one category; a name mapped to null (or "")
is dropped. Names listed in `DataRecipe.ignore` (background, no-data ...) are read but never
become instances. Names are compared without case.

Encodings (`DataRecipe.encoding`): "indexed" reads band 1's values; "palette" reads band 1's
indices through the file's colour table to colours; "rgb" reads bands 1-3 as colours; "auto"
picks colours (palette for a one-band file with a colour table, rgb for three bands) when
the classes are colours, values otherwise. A three-band label read by value must hold the
same value in all three bands (grey saved as RGB); a colour image read by value is refused.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terramask.errors import InputError

#: Class id of pixels whose class is read but never an instance (`DataRecipe.ignore`, or a
#: name the mapping drops).
IGNORED = -1
#: Class id of pixels whose value or colour no class names.
UNLISTED = -2

_VALUE = re.compile(r"^\s*(\d+)\s*=\s*(.*)$")
_HEX = re.compile(r"^\s*#([0-9a-fA-F]{6})\s*=\s*(.*)$")
_RGB = re.compile(r"^\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*=\s*(.*)$")

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """The categories instances are made of, and which label value or colour is which.

    `names[k]` is category k (after merging; ignored names left out). `values` maps label
    values, `colours` maps (r, g, b) colours, to a category id or `IGNORED`. `sources` lists
    each class as given with the category it became (None: ignored), for reports.
    """

    names: tuple[str, ...]
    values: Mapping[int, int] = field(default_factory=dict)
    colours: Mapping[Colour, int] = field(default_factory=dict)
    sources: tuple[dict[str, Any], ...] = ()

    @property
    def by_colour(self) -> bool:
        """Whether the classes were given as colours."""
        return bool(self.colours)

    @classmethod
    def parse(
        cls,
        specs: Sequence[str],
        *,
        class_map: str | os.PathLike | Mapping[str, str | None] | None = None,
        ignore: Sequence[str] = (),
    ) -> ClassTable:
        """The table `specs` (see the module notes) describe, merged by `class_map`.

        Raises:
            InputError: No class, a spec that does not parse, values mixed with colours, a
                key given twice, an unreadable mapping, or no class left to make instances of.
        """
        specs = [str(s) for s in specs]
        if not specs:
            raise InputError(
                "No class was given: name the label's classes, e.g. `classes` "
                "['2=building', '3=road'] (values) or ['#3C1098=building'] (colours)."
            )
        mapping = _read_class_map(class_map)
        ignored = {n.strip().lower() for n in ignore}
        keys: list[tuple[str, int | Colour, str]] = []  # (kind, key, name)
        for position, spec in enumerate(specs):
            keys.append(_parse_spec(spec, position))
        kinds = {kind for kind, _, _ in keys}
        if kinds == {"value", "colour"}:
            raise InputError(
                "The classes mix label values (e.g. 2=building) and colours (e.g. "
                "#3C1098=building): a label is read one way, so give all classes one way."
            )
        seen: dict[int | Colour, str] = {}
        for _, key, name in keys:
            if key in seen:
                raise InputError(
                    f"The label {'value' if isinstance(key, int) else 'colour'} "
                    f"{_key_text(key)} is given twice ({seen[key]!r} and {name!r}): each "
                    "value or colour is one class."
                )
            seen[key] = name
        names: list[str] = []
        index: dict[str, int] = {}
        values: dict[int, int] = {}
        colours: dict[Colour, int] = {}
        sources = []
        for _, key, name in keys:
            merged = mapping.get(name.lower(), name) if mapping else name
            category = None if merged is None or not str(merged).strip() else str(merged).strip()
            if category is not None and category.lower() in ignored:
                category = None
            if category is None:
                class_id = IGNORED
            else:
                folded = category.lower()
                if folded not in index:
                    index[folded] = len(names)
                    names.append(category)
                class_id = index[folded]
            if isinstance(key, int):
                values[key] = class_id
            else:
                colours[key] = class_id
            sources.append({"key": _key_text(key), "name": name, "category": category})
        given = {name.lower() for _, _, name in keys}
        unused = [k for k in mapping or {} if k not in given]
        if unused:
            warnings.warn(
                f"The class mapping names {', '.join(repr(k) for k in sorted(unused))}, which no "
                "class given is called, so nothing was merged under "
                f"{'that name' if len(unused) == 1 else 'those names'} (a misspelling?).",
                stacklevel=3,
            )
        if not names:
            raise InputError(
                f"Every class given ({', '.join(repr(n) for _, _, n in keys)}) is ignored "
                "(`DataRecipe.ignore`) or dropped by the class mapping: no class is left to make "
                "instances of."
            )
        return cls(tuple(names), values, colours, tuple(sources))

    def describe(self) -> dict[str, Any]:
        """The categories and how each class given became one, for reports and settings."""
        return {"categories": list(self.names), "classes": [dict(s) for s in self.sources]}


def _parse_spec(spec: str, position: int) -> tuple[str, int | Colour, str]:
    match = _HEX.match(spec)
    if match:
        hex_ = match.group(1)
        colour = (int(hex_[0:2], 16), int(hex_[2:4], 16), int(hex_[4:6], 16))
        return "colour", colour, _name(match.group(2), spec)
    match = _RGB.match(spec)
    if match:
        colour = tuple(int(match.group(i)) for i in (1, 2, 3))
        if max(colour) > 255:
            raise InputError(f"The colour in the class {spec!r} has a part above 255.")
        return "colour", colour, _name(match.group(4), spec)  # type: ignore[return-value]
    match = _VALUE.match(spec)
    if match:
        return "value", int(match.group(1)), _name(match.group(2), spec)
    if "=" in spec:
        raise InputError(
            f"The class {spec!r} is not understood. Give NAME (its value is its position), "
            "VALUE=NAME (e.g. 2=building), #RRGGBB=NAME or R,G,B=NAME (a label colour)."
        )
    return "value", position, _name(spec, spec)


def _name(text: str, spec: str) -> str:
    name = text.strip()
    if not name:
        raise InputError(f"The class {spec!r} has no name: write it as VALUE=NAME or NAME.")
    return name


def _key_text(key: int | Colour) -> str:
    if isinstance(key, int):
        return str(key)
    return "#{:02X}{:02X}{:02X}".format(*key)


def _read_class_map(
    class_map: str | os.PathLike | Mapping[str, str | None] | None,
) -> dict[str, str | None]:
    """The mapping, keys folded to lower case; a file is JSON: {"source name": "category"}."""
    if class_map is None:
        return {}
    if isinstance(class_map, Mapping):
        raw: Any = dict(class_map)
        where = "The class mapping"
    else:
        path = Path(class_map)
        where = f"The class mapping {path}"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{where} does not exist (`class_map`).") from None
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{where} cannot be read as JSON ({exc}). It holds one object: "
                '{"source name": "category", "name to drop": null}.'
            ) from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in raw.items()
    ):
        raise InputError(
            f"{where} must be one JSON object of names: "
            '{"source name": "category", "name to drop": null}.'
        )
    return {k.strip().lower(): v for k, v in raw.items()}


# ------------------------------------------------------------------------------- reading


class LabelRaster:
    """One label raster, read window by window into category ids (`IGNORED`, `UNLISTED`).

    `encoding` is the one applied (never "auto" once opened). Counts of pixels read per
    category id accumulate in `pixels` (for the run's statistics).
    """

    def __init__(self, path: str | os.PathLike, table: ClassTable, encoding: str = "auto"):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.path = os.fspath(path)
        self.table = table
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise InputError(f"The label raster {self.path} cannot be opened ({exc}).") from None
        ds = self._dataset
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        try:
            colormap = ds.colormap(1)
        except ValueError:
            colormap = None
        self.encoding = _choose_encoding(encoding, table, self.count, colormap, self.path)
        self._lut = self._lookup(colormap)
        self.pixels: dict[int, int] = {}

    def _lookup(self, colormap: Mapping[int, Sequence[int]] | None) -> np.ndarray | None:
        """A value -> id table for 8/16-bit values (indexed, palette); None otherwise."""
        dtype = np.dtype(self._dataset.dtypes[0])
        if self.encoding == "palette":
            lut = np.full(256 if dtype.itemsize == 1 else 65536, UNLISTED, dtype=np.int32)
            for index, rgba in (colormap or {}).items():
                if 0 <= index < len(lut):
                    lut[index] = self.table.colours.get(tuple(int(c) for c in rgba[:3]), UNLISTED)
            return lut
        if self.encoding == "indexed" and dtype.kind == "u" and dtype.itemsize <= 2:
            lut = np.full(256 if dtype.itemsize == 1 else 65536, UNLISTED, dtype=np.int32)
            for value, class_id in self.table.values.items():
                if 0 <= value < len(lut):
                    lut[value] = class_id
            return lut
        return None

    def read(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        """(height, width) int32 category ids of a window inside the raster.

        Raises:
            InputError: The file cannot be read there (truncated or corrupt), or holds
                colours where values were given.
        """
        from rasterio.errors import RasterioError

        try:
            return self._read(col, row, width, height)
        except RasterioError as exc:
            raise InputError(
                f"The label raster {self.path} cannot be read ({exc}); it may be truncated or "
                "corrupt."
            ) from None

    def _read(self, col: int, row: int, width: int, height: int) -> np.ndarray:
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        if self.encoding == "rgb":
            bands = self._dataset.read([1, 2, 3], window=window)
            packed = (
                (bands[0].astype(np.int64) << 16) | (bands[1].astype(np.int64) << 8) | bands[2]
            )
            table = {(r << 16) | (g << 8) | b: i for (r, g, b), i in self.table.colours.items()}
            ids = _map_unique(packed, table)
        else:
            band = self._dataset.read(1, window=window)
            if self.encoding == "indexed" and self.count >= 3:
                others = self._dataset.read([2, 3], window=window)
                if not (np.array_equal(others[0], band) and np.array_equal(others[1], band)):
                    raise InputError(
                        f"The label {self.path} is a colour image, but the classes were given "
                        "as values. Give them as colours (#RRGGBB=NAME or R,G,B=NAME), or "
                        "convert the label to one band of class values."
                    )
            if self._lut is not None and band.dtype.kind == "u":
                ids = self._lut[band]
            else:
                ids = _map_unique(band.astype(np.int64), dict(self.table.values))
        values, counts = np.unique(ids, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.pixels[value] = self.pixels.get(value, 0) + count
        return ids

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> LabelRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map_unique(values: np.ndarray, table: Mapping[int, int]) -> np.ndarray:
    """Each value's id in `table` (`UNLISTED` when absent), through the distinct values."""
    unique, inverse = np.unique(values, return_inverse=True)
    ids = np.array([table.get(int(v), UNLISTED) for v in unique], dtype=np.int32)
    return ids[inverse].reshape(values.shape)


def _choose_encoding(
    encoding: str, table: ClassTable, count: int, colormap: Any, path: str
) -> str:
    """The encoding to read `path` with, checked against the classes and the file."""
    if encoding == "auto":
        if not table.by_colour:
            encoding = "indexed"
        elif count >= 3:
            encoding = "rgb"
        elif colormap:
            encoding = "palette"
        else:
            raise InputError(
                f"The classes are colours, but the label {path} has {count} band(s) and no "
                "colour table: give the classes as values (VALUE=NAME), or `DataRecipe.encoding`."
            )
    if encoding in ("palette", "rgb") and not table.by_colour:
        raise InputError(
            f"`DataRecipe.encoding` {encoding!r} reads colours, but the classes were given as "
            "values: give them as #RRGGBB=NAME or R,G,B=NAME."
        )
    if encoding == "indexed" and table.by_colour:
        raise InputError(
            "`DataRecipe.encoding` 'indexed' reads values, but the classes were given as "
            "colours: give them as VALUE=NAME (or NAME)."
        )
    if encoding == "rgb" and count < 3:
        raise InputError(
            f"`DataRecipe.encoding` 'rgb' needs three bands, and the label {path} has {count}."
        )
    if encoding == "palette" and not colormap:
        raise InputError(
            f"`DataRecipe.encoding` 'palette' needs a colour table, and the label {path} has "
            "none: give the classes as values (VALUE=NAME) to read its indices."
        )
    return encoding


# ------------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class Pair:
    """An image and its label raster, by the name they share."""

    name: str
    image: str
    label: str


def find_pairs(images: str | os.PathLike, labels: str | os.PathLike, suffix: str = "") -> tuple[
    list[Pair], list[str], list[str]
]:
    """(pairs, images without a label, labels without an image), matched by file stem.

    `images` and `labels` are each a folder, a glob pattern, a .txt list or one file (as
    for `segment`); `suffix` is removed from a label's stem before matching.

    Raises:
        InputError: Nothing found, no pair at all, or two images of one name.
    """
    from terramask.scene import scene_name

    image_list = _expand(images, "images")
    label_list = _expand(labels, "labels")
    by_name: dict[str, str] = {}
    for path in image_list:
        name = scene_name(path)
        if name in by_name:
            raise InputError(
                f"Two images share the name {name!r} ({by_name[name]}, {path}); samples are "
                "named after their image. Rename one, or build them into separate folders."
            )
        by_name[name] = path
    label_by_name: dict[str, str] = {}
    for path in label_list:
        name = scene_name(path)
        if suffix and name.endswith(suffix):
            name = name[: -len(suffix)]
        label_by_name.setdefault(name, path)
    if len(image_list) == 1 and len(label_list) == 1:  # one file each: a pair by choice
        only = next(iter(by_name))
        label_by_name = {only: label_list[0]}
    pairs = [Pair(n, by_name[n], label_by_name[n]) for n in sorted(by_name) if n in label_by_name]
    if not pairs:
        raise InputError(
            f"No image in {os.fspath(images)} has a label of the same name in "
            f"{os.fspath(labels)} (matched by file name without its suffix"
            + (f", labels without {suffix!r}" if suffix else "")
            + "). Check both point at the same tiles, or set `DataRecipe.label_suffix`."
        )
    lonely_images = sorted(n for n in by_name if n not in label_by_name)
    lonely_labels = sorted(n for n in label_by_name if n not in by_name)
    return pairs, lonely_images, lonely_labels


def _expand(spec: str | os.PathLike, what: str) -> list[str]:
    """`expand_inputs(spec)`, refusing a local path that does not exist (IMAGES or LABELS
    given wrong), which would otherwise be one pair that fails and an empty data set."""
    from terramask.scene import expand_inputs

    found = expand_inputs(spec)
    text = os.fspath(spec)
    remote = "://" in text or text.lower().startswith("/vsi")
    if found == [text] and not remote and not Path(text).expanduser().exists():
        raise InputError(
            f"The {what} path {text} does not exist: give a folder, a glob, a .txt list or a "
            f"raster file (relative paths are read from {Path.cwd()})."
        )
    return found
