"""Write features as a GeoPackage in the scene CRS and GeoJSON in EPSG:4326, batch by batch."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import shapely
from pyogrio.errors import DataSourceError
from shapely.geometry.base import BaseGeometry

from terramask.atomic import atomic_output, exists_error
from terramask.errors import OutputError
from terramask.scene.polygons import Feature, to_pyproj
from terramask.scene.raster import GeoreferenceWarning

BASE_FIELDS = ("label", "score", "area_m2")


def _field_names(features: Sequence[Feature]) -> list[str]:
    """label, score, area_m2 and then every extra property, in order of first appearance."""
    names = list(BASE_FIELDS)
    for f in features:
        names.extend(k for k in f.properties if k not in names)
    return names


def _columns(features: Sequence[Feature], names: Sequence[str]) -> list[np.ndarray]:
    """One array per field, typed from the values."""
    columns = [
        np.array([f.label for f in features], dtype=object),
        np.array([f.score for f in features], dtype=np.float64),
        np.array([math.nan if f.area_m2 is None else f.area_m2 for f in features], dtype=float),
    ]
    for key in names[len(BASE_FIELDS) :]:
        values = [f.properties.get(key) for f in features]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool | np.bool_) for v in present) and None not in values:
            column = np.array(values, dtype=bool)
        elif present and all(isinstance(v, int | np.integer) for v in present) and (
            None not in values
        ):
            column = np.array(values, dtype=np.int64)
        elif present and all(isinstance(v, int | float | np.number) for v in present):
            column = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        else:
            column = np.array([None if v is None else str(v) for v in values], dtype=object)
        columns.append(column)
    return columns


def _geometry_type(geometries: Sequence[BaseGeometry]) -> tuple[str, bool]:
    kinds = {g.geom_type for g in geometries}
    if not kinds or kinds == {"Polygon"}:
        return "Polygon", False
    if kinds <= {"Polygon", "MultiPolygon"}:
        return "MultiPolygon", True
    return (kinds.pop(), False) if len(kinds) == 1 else ("Unknown", False)


def to_wgs84(geometries: Sequence[BaseGeometry], crs: Any) -> np.ndarray:
    """Reproject geometries to EPSG:4326 with longitude first."""
    transformer = pyproj.Transformer.from_crs(to_pyproj(crs), "EPSG:4326", always_xy=True)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(np.asarray(geometries, dtype=object), project)


#: GeoPackages record when they were written (gpkg_contents.last_change); a fixed value
#: keeps a re-run's output byte-identical to the first.
FIXED_GPKG_DATE = "2000-01-01T00:00:00.000Z"


class VectorWriter:
    """Write features batch by batch: a GeoPackage in the scene CRS and GeoJSON in EPSG:4326.

    Features are buffered and appended `batch` at a time, so memory holds one batch whatever
    the number of objects (each append to GeoJSON rescans the file, hence large batches).
    Files appear under their final names only when the block exits cleanly. Without a CRS
    the GeoPackage has none and the GeoJSON (which must be WGS 84) is skipped with a warning.
    """

    def __init__(
        self,
        *,
        crs: Any,
        gpkg_path: Path,
        geojson_path: Path | None,
        overwrite: bool = False,
        layer: str = "objects",
        fields: Sequence[str] = BASE_FIELDS,
        geometry_type: str = "Polygon",
        batch: int = 20000,
    ) -> None:
        self.crs = to_pyproj(crs)
        if self.crs is None and geojson_path is not None:
            warnings.warn(
                f"No GeoJSON written to {geojson_path}: the scene has no CRS, and GeoJSON "
                "coordinates must be longitude/latitude. The GeoPackage holds the polygons in "
                "pixel coordinates.",
                GeoreferenceWarning,
                stacklevel=2,
            )
            geojson_path = None
        self.paths = [Path(p) for p in (gpkg_path, geojson_path) if p is not None]
        if not overwrite:
            for target in self.paths:
                if target.exists():
                    raise exists_error(target)
        self.overwrite = overwrite
        self.layer = layer
        self.fields = list(fields)
        self.geometry_type = geometry_type
        self.batch = batch
        self.count = 0
        self._buffer: list[Feature] = []
        self._stack = ExitStack()
        self._temps: list[Path] = []

    def __enter__(self) -> VectorWriter:
        with ExitStack() as stack:
            self._temps = [
                stack.enter_context(atomic_output(p, overwrite=self.overwrite))
                for p in self.paths
            ]
            self._stack = stack.pop_all()
        return self

    def add(self, features: Sequence[Feature]) -> None:
        self._buffer.extend(features)
        if len(self._buffer) >= self.batch:
            self._flush()

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None:
                self._flush(final=True)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.__exit__(*exc_info)

    def _flush(self, *, final: bool = False) -> None:
        if not self._buffer and not (final and self.count == 0):
            return
        features, self._buffer = self._buffer, []
        columns = _columns(features, self.fields)
        geometries = [f.geometry for f in features]
        gpkg_crs = self.crs.to_wkt() if self.crs else None
        targets = [(self._temps[0], geometries, "GPKG", gpkg_crs, None)]
        if len(self._temps) > 1:
            wgs84 = list(_rfc7946(to_wgs84(geometries, self.crs))) if geometries else []
            targets.append(
                (self._temps[1], wgs84, "GeoJSON", _WGS84_WKT, {"RFC7946": "YES"})
            )
        for temp, shapes, driver, crs_wkt, options in targets:
            _append_layer(
                temp, shapes, self.fields, columns, crs_wkt=crs_wkt, driver=driver,
                layer=self.layer, geometry_type=self.geometry_type, append=self.count > 0,
                layer_options=options,
            )  # fmt: skip
        self.count += len(features)


_WGS84_WKT = pyproj.CRS("EPSG:4326").to_wkt()


def _rfc7946(geometries: np.ndarray) -> np.ndarray:
    """What GDAL's RFC7946 option does to a new layer, done here so that appended batches
    (which GDAL writes without it) get it too: exteriors counter-clockwise, 7 decimals."""
    oriented = shapely.orient_polygons(geometries, exterior_cw=False)
    return shapely.transform(oriented, lambda xy: np.round(xy, 7))


def _append_layer(
    path: Path,
    geometries: Sequence[BaseGeometry],
    fields: list[str],
    columns: list[np.ndarray],
    *,
    crs_wkt: str | None,
    driver: str,
    layer: str,
    geometry_type: str,
    append: bool,
    layer_options: dict[str, str] | None = None,
) -> None:
    wkb = np.array(
        [shapely.to_wkb(g) for g in geometries] if len(geometries) else [], dtype=object
    )
    try:
        with fixed_gpkg_date(), warnings.catch_warnings():
            # A missing CRS is deliberate here (pixel-space scenes); the caller already warned.
            warnings.filterwarnings(
                "ignore", message="'crs' was not provided", category=UserWarning
            )
            pyogrio.raw.write(
                str(path), wkb, columns, fields, layer=layer, driver=driver,
                geometry_type=geometry_type, promote_to_multi=geometry_type.startswith("Multi"),
                crs=crs_wkt, layer_options=None if append else layer_options, append=append,
            )  # fmt: skip
    except (DataSourceError, OSError, RuntimeError) as exc:
        raise OutputError(
            f"Writing {path} failed ({exc}). Check free disk space and permissions in that "
            "folder."
        ) from exc


@contextmanager
def fixed_gpkg_date() -> Iterator[None]:
    """GeoPackages written inside carry FIXED_GPKG_DATE instead of the time of writing."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_GPKG_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def write_vectors(
    features: Sequence[Feature],
    *,
    crs: Any,
    gpkg_path: Path,
    geojson_path: Path | None,
    overwrite: bool = False,
    layer: str = "objects",
) -> list[Path]:
    """Write features as a GeoPackage in the scene CRS and GeoJSON in EPSG:4326.

    Without a CRS the GeoPackage has none and the GeoJSON (which must be WGS 84) is skipped
    with a warning. Returns the paths written.
    """
    writer = VectorWriter(
        crs=crs,
        gpkg_path=gpkg_path,
        geojson_path=geojson_path,
        overwrite=overwrite,
        layer=layer,
        fields=_field_names(features),
        geometry_type=_geometry_type([f.geometry for f in features])[0],
        batch=max(1, len(features)),
    )
    with writer:
        writer.add(features)
    return writer.paths
