"""One GeoPackage of every scene's polygons, in one CRS, with a `scene` field.

Scenes keep their own CRS in their own files; the index reprojects all of them into one CRS
(EPSG:4326 unless another is asked for), so a batch mixing UTM zones, or any other CRSs,
lands in the right places. Scenes without georeferencing have polygons in pixel coordinates,
which no CRS can place: they are left out of the index and reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from pyproj import Transformer

from terramask.atomic import atomic_output
from terramask.errors import InputError
from terramask.options import INDEX_CRS
from terramask.scene.polygons import to_pyproj
from terramask.scene.vectors import fixed_gpkg_date

INDEX_NAME = "index.gpkg"
INDEX_BATCH = 50_000


@dataclass
class WrittenIndex:
    """The index file (None when no scene had polygons) and the scenes left out of it."""

    path: Path | None
    crs: str
    left_out: list[dict] = field(default_factory=list)


def check_index_crs(crs: str) -> str:
    """The CRS as given, or an InputError naming the `index_crs` option."""
    try:
        to_pyproj(crs)
    except Exception as exc:  # pyproj's CRSError, or a TypeError for odd inputs
        raise InputError(
            f"`index_crs` {crs!r} is not a CRS pyproj knows ({exc}). Use e.g. EPSG:4326 or "
            "EPSG:3857."
        ) from None
    return crs


def write_index(output: Path, names: Sequence[str], crs: str = INDEX_CRS) -> WrittenIndex:
    """All named scenes' polygons (`output/<name>.gpkg`) in `output/index.gpkg`, in `crs`.

    Written scene by scene, a batch at a time, so memory holds one batch whatever the batch
    size. A scene whose GeoPackage has no CRS is left out and listed with the reason.
    """
    index = output / INDEX_NAME
    target = to_pyproj(crs)
    parts = [(n, output / f"{n}.gpkg") for n in names if (output / f"{n}.gpkg").exists()]
    result = WrittenIndex(None, crs)
    if not parts:
        index.unlink(missing_ok=True)  # an index of other scenes would mislead
        return result
    with atomic_output(index, overwrite=True) as tmp, fixed_gpkg_date():
        written = False
        for name, gpkg in parts:
            if pyogrio.read_info(gpkg)["crs"] is None:
                result.left_out.append(
                    {
                        "scene": name,
                        "reason": "no georeferencing: its polygons are in pixel coordinates, "
                        f"which cannot be placed in {crs}",
                    }
                )
                continue
            for meta, geometry, values in _read_batches(gpkg):
                source = to_pyproj(meta["crs"])
                if not source.equals(target):
                    geometry = _reproject_wkb(geometry, source, target)
                fields = [*meta["fields"], "scene"]
                data = [*values, np.array([name] * len(geometry), dtype=object)]
                pyogrio.raw.write(
                    tmp, geometry, data, fields, crs=target.to_wkt(), driver="GPKG",
                    layer="objects", geometry_type="MultiPolygon", promote_to_multi=True,
                    append=written,
                )  # fmt: skip
                written = True
        if not written:
            pyogrio.raw.write(
                tmp, np.array([], dtype=object), [np.array([], dtype=object)], ["scene"],
                crs=target.to_wkt(), driver="GPKG", layer="objects",
                geometry_type="MultiPolygon",
            )  # fmt: skip
    result.path = index
    return result


def _read_batches(gpkg: Path, size: int = INDEX_BATCH) -> Iterator[tuple]:
    """A scene's polygons `size` at a time, so the index never holds a whole scene's."""
    skip = 0
    while True:
        meta, _, geometry, values = pyogrio.raw.read(gpkg, skip_features=skip, max_features=size)
        if len(geometry) == 0:
            return
        yield meta, geometry, values
        skip += len(geometry)


def _reproject_wkb(geometry: np.ndarray, source, target) -> np.ndarray:
    transformer = Transformer.from_crs(source, target, always_xy=True)
    shapes = shapely.from_wkb(geometry)
    moved = shapely.transform(shapes, lambda xy: np.column_stack(transformer.transform(*xy.T)))
    return shapely.to_wkb(moved)
