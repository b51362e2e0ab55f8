"""Turn user prompts (points, boxes, vector files) given in map or pixel coordinates into pixels."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pyproj
import shapely
from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError
from rasterio.windows import Window

from terramask.errors import InputError
from terramask.options import Outside
from terramask.scene.raster import GeoreferenceWarning, Scene, SceneWarning
from terramask.scene.vectors import to_pyproj

Coordinates = tuple[float, float]


@dataclass(frozen=True, eq=False)
class ObjectPrompt:
    """The prompts for one object, in continuous pixel coordinates of the scene.

    (0, 0) is the top-left corner of the top-left pixel, so pixel (col, row) covers
    [col, col + 1) × [row, row + 1). `labels` are 1 for positive points, 0 for negative ones;
    `box` is x1, y1, x2, y2 or None.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    box: np.ndarray | None = None
    name: str = "object"

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} labels")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        if self.box is not None:
            object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float64).reshape(4))

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) pixel envelope of the points and the box together."""
        xs = list(self.points[:, 0])
        ys = list(self.points[:, 1])
        if self.box is not None:
            xs += [self.box[0], self.box[2]]
            ys += [self.box[1], self.box[3]]
        if not xs:
            raise ValueError("an empty prompt has no bounds")
        return min(xs), min(ys), max(xs), max(ys)


def _fmt(value: float) -> str:
    """Up to 6 decimals; huge or tiny magnitudes in exponent form (never 300 digits)."""
    if not math.isfinite(value):
        return str(value)
    if value != 0 and not 1e-6 <= abs(value) < 1e15:
        return f"{value:.6g}"
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _pair(values: Iterable[float]) -> str:
    return ", ".join(_fmt(float(v)) for v in values)


class _Frame:
    """Converts coordinates in the user's frame (pixels, or a map CRS) to scene pixels.

    Longitudes wrap: x, x - 360 and x + 360 are the same place, and each point is placed at
    the one nearest the scene's centre. So -179.9999 and 180.0001 both land in a scene that
    crosses the antimeridian, whichever way its grid numbers it. The turn is taken in the
    scene's CRS when that is geographic (its grid may run past ±180, where PROJ's output does
    not), otherwise on the coordinates given when they are geographic (lon, lat).
    """

    def __init__(self, scene: Scene, crs: Any, *, pixels: bool) -> None:
        self.scene = scene
        self.pixels = pixels
        self.crs = to_pyproj(crs) if crs is not None else None
        self.transformer = None
        scene_crs = to_pyproj(scene.crs) if scene.crs is not None else None
        if self.crs is not None and scene_crs is not None and not self.crs.equals(scene_crs):
            self.transformer = pyproj.Transformer.from_crs(self.crs, scene_crs, always_xy=True)
        #: where longitudes are turned by 360°: "scene" (after any transform), "given", None
        self.wrap: str | None = None
        if not pixels and scene_crs is not None and scene_crs.is_geographic:
            self.wrap = "scene"
        elif not pixels and self.crs is not None and self.crs.is_geographic:
            self.wrap = "given"

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        if self.pixels:
            return xs, ys
        if self.wrap is None:
            return self._to_pixels(xs, ys)
        centre = (self.scene.width / 2, self.scene.height / 2)
        best_cols, best_rows = self._to_pixels(xs, ys)
        best = _distance(best_cols, best_rows, centre)
        for turn in (-360.0, 360.0):
            cols, rows = self._to_pixels(xs, ys, turn)
            distance = _distance(cols, rows, centre)
            nearer = distance < best
            best_cols = np.where(nearer, cols, best_cols)
            best_rows = np.where(nearer, rows, best_rows)
            best = np.where(nearer, distance, best)
        return best_cols, best_rows

    def _to_pixels(
        self, xs: np.ndarray, ys: np.ndarray, turn: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scene pixels of map coordinates, longitudes turned by `turn` degrees (see wrap)."""
        if self.wrap == "given":
            xs = xs + turn
        if self.transformer is not None:
            xs, ys = self.transformer.transform(xs, ys, errcheck=False)
            xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        if self.wrap == "scene":
            xs = xs + turn
        a, b, c, d, e, f = (~self.scene.transform)[:6]
        return a * xs + b * ys + c, d * xs + e * ys + f

    def extent(self) -> str:
        """The scene's extent in words, in pixels and, where known, in map coordinates."""
        s = self.scene
        text = f"the scene {s.source} is {s.width} × {s.height} pixels "
        text += f"(x 0–{s.width}, y 0–{s.height})"
        if s.crs is None:
            return text + " and has no CRS"
        xmin, ymin, xmax, ymax = s.bounds
        text += (
            f" and covers x {_fmt(xmin)}–{_fmt(xmax)}, y {_fmt(ymin)}–{_fmt(ymax)} in "
            f"{_crs_name(to_pyproj(s.crs))}"
        )
        if self.transformer is not None:
            back = pyproj.Transformer.from_crs(to_pyproj(s.crs), self.crs, always_xy=True)
            bx0, by0, bx1, by1 = back.transform_bounds(xmin, ymin, xmax, ymax)
            text += f" (x {_fmt(bx0)}–{_fmt(bx1)}, y {_fmt(by0)}–{_fmt(by1)} in "
            text += f"{_crs_name(self.crs)})"
        return text

    def unit(self) -> str:
        if self.pixels:
            return "pixel coordinates"
        return f"{_crs_name(self.crs)}" if self.crs is not None else "the scene CRS"


def _distance(cols: np.ndarray, rows: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Pixel distance to `centre`; infinite where a coordinate could not be placed."""
    distance = np.hypot(cols - centre[0], rows - centre[1])
    return np.where(np.isfinite(distance), distance, np.inf)


def _crs_name(crs: pyproj.CRS | None) -> str:
    if crs is None:
        return "no CRS"
    authority = crs.to_authority()
    return ":".join(authority) if authority else crs.name


def _inside(scene: Scene, xs: np.ndarray, ys: np.ndarray) -> bool:
    return bool(
        np.all(np.isfinite(xs))
        and np.all(np.isfinite(ys))
        and np.all((xs >= 0) & (xs <= scene.width) & (ys >= 0) & (ys <= scene.height))
    )


def _outside_error(what: str, frame: _Frame) -> InputError:
    return InputError(
        f"The prompt {what} lies outside the scene: {frame.extent()}. Check the coordinates "
        "and their CRS (`crs`), and that x comes before y."
    )


def _point(
    scene: Scene, frame: _Frame, xy: Sequence[float], what: str, drop: bool = False
) -> np.ndarray | None:
    """The point in scene pixels; outside the scene an error, or None when `drop`."""
    xs, ys = frame(np.array([xy[0]]), np.array([xy[1]]))
    if not _inside(scene, xs, ys):
        if drop:
            return None
        raise _outside_error(what, frame)
    return np.array([xs[0], ys[0]])


def _box_from_vertices(
    scene: Scene, frame: _Frame, xs: np.ndarray, ys: np.ndarray, what: str, drop: bool = False
) -> np.ndarray | None:
    """Pixel bbox of transformed vertices, clipped to the scene; when nothing is inside, an
    error, or None when `drop`."""
    cols, rows = frame(xs, ys)
    if np.all(np.isfinite(cols)) and np.all(np.isfinite(rows)):
        x1, x2 = max(cols.min(), 0.0), min(cols.max(), float(scene.width))
        y1, y2 = max(rows.min(), 0.0), min(rows.max(), float(scene.height))
        if x2 > x1 and y2 > y1:
            return np.array([x1, y1, x2, y2])
    if drop:
        return None
    raise _outside_error(what, frame)


def _check_crs(scene: Scene, crs: Any, origin: str) -> None:
    if crs is not None and scene.crs is None:
        raise InputError(
            f"{origin} is in a map CRS ({crs}), but the scene {scene.source} has no "
            "georeferencing, so map coordinates cannot be placed on it. Give the prompts in "
            "pixel coordinates instead (x to the right, y down, from the top-left corner)."
        )


#: What to do with a prompt outside the scene: refuse the run, or leave it out for this scene
#: (many scenes share one set of prompts, and each holds only some of them).
OUTSIDE = ("error", "drop")


def _pixel(scene: Scene, xy: np.ndarray) -> tuple[int, int]:
    """(column, row) of the pixel under a point; a point on the far edge is in the last one."""
    col = min(max(math.floor(xy[0]), 0), scene.width - 1)
    row = min(max(math.floor(xy[1]), 0), scene.height - 1)
    return col, row


def _on_data(scene: Scene, xy: np.ndarray, what: str, drop: bool) -> bool:
    """Whether a positive click may be used: yes when its pixel holds data (not nodata, not
    transparent, not masked, not NaN); otherwise an InputError, or (when `drop`) no, with a
    SceneWarning saying it was left out."""
    col, row = _pixel(scene, xy)
    if scene.read_valid(Window(col, row, 1, 1))[0, 0]:
        return True
    where = (
        f"the {what} falls on a pixel of the scene {scene.source} that holds no data "
        f"(column {col}, row {row}: nodata, transparent or masked), and no object can lie there"
    )
    if drop:
        warnings.warn(f"Left out: {where}.", SceneWarning, stacklevel=4)
        return False
    raise InputError(
        f"The prompt cannot be used: {where}. Click on a pixel that holds imagery (a negative "
        "point, `negatives`, may lie anywhere)."
    )


def _dropping(outside: str) -> bool:
    if outside not in OUTSIDE:
        raise ValueError(f"outside must be one of {OUTSIDE}, not {outside!r}")
    return outside == "drop"


def describe_extent(scene: Scene, crs: Any = None) -> str:
    """The scene's extent in words: pixels, its CRS and, when `crs` differs, that CRS too."""
    return _Frame(scene, crs, pixels=crs is None).extent()


def check_prompt_options(
    *,
    points: Sequence[Coordinates] = (),
    negatives: Sequence[Coordinates] = (),
    boxes: Sequence[tuple[float, float, float, float]] = (),
    crs: str | None = None,
) -> None:
    """The checks of points, negatives and boxes that need no scene: CRS, box shapes, negatives."""
    if crs is not None:
        try:
            pyproj.CRS.from_user_input(crs)
        except pyproj.exceptions.CRSError as exc:
            raise InputError(
                f"The CRS {crs!r} given for the prompts is not understood ({exc}). Use a code "
                "such as EPSG:4326 or EPSG:32633."
            ) from exc
    unit = "pixel coordinates" if crs is None else _crs_name(to_pyproj(crs))
    geographic = crs is not None and to_pyproj(crs).is_geographic
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (x2 > x1 and y2 > y1):
            across = (
                " A box across the antimeridian keeps x2 > x1 by going past 180 (e.g. 179.5 "
                "to 180.5): longitudes are the same place 360° apart."
                if geographic and x2 <= x1
                else ""
            )
            raise InputError(
                f"The box ({_pair(box)}) in {unit} is empty: a box is x1, y1, x2, y2 with "
                "x2 > x1 and y2 > y1 (left, top, right, bottom in pixels; min x, min y, max x, "
                "max y on a map)." + across
            )
    if negatives and not points and len(boxes) != 1:
        raise InputError(
            "Only negative points were given. Negative points say where the object is *not*; "
            "add at least one positive point (`points`) or a single box (`boxes`) for them to "
            "refine."
        )


def prompts_from_options(
    scene: Scene,
    *,
    points: Iterable[Coordinates] = (),
    negatives: Iterable[Coordinates] = (),
    boxes: Iterable[tuple[float, float, float, float]] = (),
    crs: str | None = None,
    outside: Outside = "error",
) -> list[ObjectPrompt]:
    """Turn point, negative and box options into object prompts in scene pixels.

    All points make one object; each box is an object, and with exactly one box the points
    join it. An empty input gives an empty list.

    Args:
        scene: The scene the prompts are placed on.
        points, negatives: Positive and negative clicks, (x, y) each.
        boxes: (x1, y1, x2, y2) each.
        crs: The CRS of the coordinates; None means scene pixels.
        outside: "error" refuses a prompt outside the scene; "drop" leaves it out (points
            outside are dropped, boxes clipped to the scene or dropped, and an object left
            without a positive point or a box is dropped).

    A positive click on a pixel without data (the nodata value, alpha 0, outside the
    raster's mask, NaN) is refused with "error" and left out with a `SceneWarning` with
    "drop": it cannot select an object, since such pixels are never part of one, and SAM
    would answer it with whatever data lies nearby. Negative clicks may lie anywhere.
    Longitudes in a geographic `crs` wrap (see `_Frame`): a click at 180.0001 or -179.9999
    lands in a scene that crosses the antimeridian.

    Returns:
        One `ObjectPrompt` per object, in continuous scene pixel coordinates.

    Raises:
        InputError: A bad CRS or box, only negative points, or (with "error") a prompt
            outside the scene (the message gives the scene's extent) or a positive click on
            a pixel without data.
    """
    points, negatives, boxes = list(points), list(negatives), list(boxes)
    drop = _dropping(outside)
    check_prompt_options(points=points, negatives=negatives, boxes=boxes, crs=crs)
    _check_crs(scene, crs, "The `points`/`boxes` prompt")
    frame = _Frame(scene, crs, pixels=crs is None)
    unit = frame.unit()

    def placed(xys: list[Coordinates], kind: str, positive: bool) -> list[np.ndarray]:
        found = []
        for p in xys:
            what = f"{kind} ({_pair(p)}) in {unit}"
            xy = _point(scene, frame, p, what, drop)
            if xy is not None and (not positive or _on_data(scene, xy, what, drop)):
                found.append(xy)
        return found

    pos = placed(points, "point", positive=True)
    neg = placed(negatives, "negative point", positive=False)
    box_list = []
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        xs, ys = np.array([x1, x2, x2, x1]), np.array([y1, y1, y2, y2])
        what = f"box ({_pair(box)}) in {unit}"
        box_list.append(_box_from_vertices(scene, frame, xs, ys, what, drop))
    point_xy = np.array(pos + neg).reshape(-1, 2)
    point_labels = np.array([1] * len(pos) + [0] * len(neg))
    if len(boxes) == 1 and (points or negatives):
        if box_list[0] is None and not pos:
            return []
        return [ObjectPrompt(point_xy, point_labels, box_list[0])]
    objects = [ObjectPrompt(point_xy, point_labels)] if pos else []
    objects += [ObjectPrompt(box=b) for b in box_list if b is not None]
    return objects


def _truthy(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True  # a missing value means the default: positive
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "1", "true", "yes", "y", "t", "positive", "pos", "+"):
            return True
        if text in ("0", "false", "no", "n", "f", "negative", "neg", "-"):
            return False
        raise ValueError(value)
    return bool(value)


def _group_key(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class _PromptGroup:
    """One object of a prompt file: its points (coordinates, positive, label), its polygon."""

    name: str | None = None
    points: list[tuple[np.ndarray, bool, str]] = field(default_factory=list)
    polygon: tuple[np.ndarray, str, str] | None = None  # coordinates, envelope text, label


@dataclass(frozen=True, eq=False)
class PromptFile:
    """A vector file of prompts, read and checked once, to be placed on any number of scenes."""

    source: str
    crs: Any
    groups: dict[Any, _PromptGroup]


#: The fields of a prompt file TerraMask reads, and what each holds.
PROMPT_FIELDS = {
    "group": "a number or text shared by the points (and at most one polygon) of one object",
    "positive": "1 for a positive click, 0 for a negative one",
    "name": "the object's name in the outputs",
}


def _refuse_lists(columns: dict[str, np.ndarray], source: str, layer: str | None) -> None:
    """An InputError for a prompt field that holds a list, naming the field and the feature.

    A GeoJSON array makes OGR read every value of that field as a list (a plain 3 becomes
    [3]), so the feature named is the first whose list does not hold exactly one value, else
    the first whose value is written as an array in the file (read again with GeoJSON's
    ARRAY_AS_STRING), else the first one.
    """
    for name, meaning in PROMPT_FIELDS.items():
        values = columns.get(name)
        if values is None or values.dtype != object:
            continue
        lists = [i for i, v in enumerate(values) if isinstance(v, (list, tuple, np.ndarray))]
        if not lists:
            continue
        longer = [i for i in lists if len(values[i]) != 1]
        index = longer[0] if longer else _written_as_array(source, layer, name, lists[0])
        value = values[index]
        shown = value.tolist() if isinstance(value, np.ndarray) else list(value)
        raise InputError(
            f"The field '{name}' of feature {index + 1} of {Path(source).name} holds a list "
            f"({shown!r}); a prompt field holds one value per feature ('{name}': {meaning}). "
            f"Give feature {index + 1} a single value; for a point in two objects, repeat the "
            "point once per object."
        )


def _written_as_array(source: str, layer: str | None, name: str, default: int) -> int:
    """The first feature whose `name` is written as a JSON array (GeoJSON), else `default`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, _, (raw,) = pyogrio.raw.read(
                source, layer=layer, columns=[name], read_geometry=False, ARRAY_AS_STRING="YES"
            )
    except Exception:  # any driver that cannot: the first list will do
        return default
    arrays = [i for i, v in enumerate(raw) if isinstance(v, str) and v.lstrip().startswith("[")]
    return arrays[0] if arrays else default


def read_prompt_file(path: str | os.PathLike, *, layer: str | None = None) -> PromptFile:
    """Read and check a vector file of prompts (see `prompts_from_vector`); no scene needed."""
    source = os.fspath(path)
    if "://" not in source and not source.startswith("/vsi") and not Path(source).exists():
        raise InputError(f"The prompt file {source} does not exist. Check the path.")
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(source, layer=layer, force_2d=True)
    except (DataSourceError, DataLayerError, FieldError, GeometryError, OSError) as exc:
        raise InputError(
            f"The prompt file {source} cannot be read as a vector layer ({exc}). Use a "
            "GeoPackage, GeoJSON, Shapefile or another format OGR reads"
            + (f", and check that it has a layer named {layer!r}." if layer else ".")
        ) from exc
    if wkb is None or len(wkb) == 0:
        raise InputError(
            f"The prompt file {source} has no features. Add points (objects to find) or "
            "polygons (boxes around them)."
        )
    columns = {str(n).lower(): data for n, data in zip(meta["fields"], field_data, strict=True)}
    _refuse_lists(columns, source, layer)
    geometries = shapely.from_wkb(wkb)

    groups: dict[Any, _PromptGroup] = {}
    for i, geometry in enumerate(geometries):
        label = f"feature {i + 1} of {Path(source).name}"
        if geometry is None or geometry.is_empty:
            raise InputError(f"The {label} has no geometry; give every prompt a point or polygon.")
        key = _group_key(columns["group"][i]) if "group" in columns else None
        if key is None:
            key = ("feature", i)
        group = groups.setdefault(key, _PromptGroup())
        if "name" in columns and group.name is None:
            name = _group_key(columns["name"][i])
            group.name = str(name) if name is not None else None
        kind = geometry.geom_type
        if kind in ("Point", "MultiPoint"):
            try:
                positive = _truthy(columns["positive"][i]) if "positive" in columns else True
            except ValueError:
                raise InputError(
                    f"The 'positive' value {columns['positive'][i]!r} of {label} is not "
                    "understood; use 1 (positive) or 0 (negative)."
                ) from None
            group.points += [(xy, positive, label) for xy in shapely.get_coordinates(geometry)]
        elif kind in ("Polygon", "MultiPolygon"):
            if group.polygon is not None:
                raise InputError(
                    f"The group {key!r} in {source} holds more than one polygon; a group is one "
                    "object with at most one box. Give the polygons different group values."
                )
            group.polygon = (shapely.get_coordinates(geometry), _pair(geometry.bounds), label)
        else:
            raise InputError(
                f"The {label} is a {kind}; prompt files may hold points (objects to find, or "
                "with positive=0 places to avoid) and polygons (boxes around objects) only."
            )
    for key, group in groups.items():
        if group.polygon is None and group.points and not any(p for _, p, _ in group.points):
            where = f"group {key!r}" if not isinstance(key, tuple) else f"feature {key[1] + 1}"
            raise InputError(
                f"In {source}, {where} has only negative points (positive=0). Negative points "
                "refine an object; give them a 'group' value shared with a positive point or a "
                "polygon of the same object."
            )
    return PromptFile(source, meta.get("crs"), groups)


def prompts_from_vector(
    scene: Scene,
    path: str | os.PathLike | PromptFile,
    *,
    layer: str | None = None,
    outside: Outside = "error",
) -> list[ObjectPrompt]:
    """Read object prompts from any OGR vector file (GeoPackage, GeoJSON, Shapefile, …).

    Points are one object each unless a `group` field joins several (with at most one polygon);
    a `positive` field (0/1, true/false) marks negative points; a MultiPoint is one object; a
    polygon becomes a box prompt from its pixel bounding box; a `name` field names the object.
    A file without CRS is taken to be in the scene CRS (with a warning). Positive points on
    pixels without data are refused or left out as in `prompts_from_options`; a field that
    holds a list (a GeoJSON `"group": [1, 2]`) is refused, naming the field and the feature.

    Args:
        scene: The scene the prompts are placed on (reprojected into its CRS).
        path: The vector file, or a `PromptFile` already read.
        layer: The layer to read (default: the first).
        outside: As for `prompts_from_options`.

    Returns:
        One `ObjectPrompt` per object, in scene pixel coordinates.

    Raises:
        InputError: An unreadable file, unusable geometries or fields, or (with "error") a
            prompt outside the scene.
    """
    drop = _dropping(outside)
    prompts = path if isinstance(path, PromptFile) else read_prompt_file(path, layer=layer)
    source = prompts.source
    _check_crs(scene, prompts.crs, f"The prompt file {source}")
    if prompts.crs is None and scene.crs is not None:
        warnings.warn(
            f"The prompt file {source} has no CRS; its coordinates are taken to be in the scene "
            f"CRS ({_crs_name(to_pyproj(scene.crs))}).",
            GeoreferenceWarning,
            stacklevel=2,
        )
    frame = _Frame(scene, prompts.crs, pixels=False)
    unit = frame.unit() if prompts.crs is not None else "the file's coordinates"

    objects = []
    for group in prompts.groups.values():
        points, labels = [], []
        for xy, positive, label in group.points:
            what = f"point ({_pair(xy)}) in {unit} ({label})"
            placed = _point(scene, frame, xy, what, drop)
            if placed is not None and (not positive or _on_data(scene, placed, what, drop)):
                points.append(placed)
                labels.append(int(positive))
        box = None
        if group.polygon is not None:
            coords, envelope, label = group.polygon
            what = f"polygon with bounds ({envelope}) in {unit} ({label})"
            box = _box_from_vertices(scene, frame, coords[:, 0], coords[:, 1], what, drop)
        if box is None and not any(labels):
            continue  # only when dropping: nothing of this object lies in the scene
        objects.append(
            ObjectPrompt(
                np.array(points).reshape(-1, 2),
                np.array(labels, dtype=np.int64),
                box,
                group.name or "object",
            )
        )
    return objects
