"""Turn label rasters into polygon features with areas, and write them as GeoPackage/GeoJSON."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pyproj
import rasterio.features
import shapely
from affine import Affine
from pyogrio.errors import DataSourceError
from scipy import ndimage
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from terramask.errors import OutputError
from terramask.scene.raster import GeoreferenceWarning
from terramask.scene.writers import _exists_error, atomic_output


@dataclass(frozen=True)
class Feature:
    """One output object: its polygon (in the scene CRS), class label, score and ground area."""

    geometry: BaseGeometry
    label: str
    score: float
    area_m2: float | None
    properties: dict[str, Any] = field(default_factory=dict)


def to_pyproj(crs: Any) -> pyproj.CRS | None:
    """Any CRS-like value (rasterio CRS, pyproj CRS, "EPSG:…", WKT) as a pyproj CRS, or None."""
    if crs is None:
        return None
    if isinstance(crs, pyproj.CRS):
        return crs
    return pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def area_m2(geometry: BaseGeometry, crs: Any) -> float | None:
    """Ground area in square metres: planar in projected CRSs, geodesic in geographic ones.

    None when the CRS is missing or its unit is not a length (nothing sensible to report).
    """
    crs = to_pyproj(crs)
    if crs is None:
        return None
    if crs.is_geographic:
        geod = crs.get_geod()
        if geod is None:
            return None
        area, _ = geod.geometry_area_perimeter(geometry)
        return abs(area)
    axis = crs.axis_info[0] if crs.axis_info else None
    if axis is None or not axis.unit_conversion_factor or axis.unit_name in ("degree", "radian"):
        return None
    return geometry.area * axis.unit_conversion_factor**2


def _polygonal(geometry: BaseGeometry) -> BaseGeometry | None:
    """Keep only the polygon parts (make_valid can add lines or points along pinches)."""
    if geometry.is_empty:
        return None
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    polygonal = ("Polygon", "MultiPolygon")
    parts = [g for g in getattr(geometry, "geoms", []) if g.geom_type in polygonal]
    if not parts:
        return None
    return shapely.union_all(parts)


def polygonize(
    labels: np.ndarray,
    transform: Affine,
    *,
    names: Mapping[int, str],
    crs: Any = None,
    scores: Mapping[int, float] | None = None,
    score_map: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    simplify: float | None = None,
    min_area_px: int = 0,
) -> list[Feature]:
    """Polygons of the connected regions of each named label value (4-connected).

    0 and values missing from `names` are background; invalid pixels never become objects.
    A feature's score is `scores[value]` when given, else the mean of `score_map` over its
    pixels, else NaN. Regions smaller than `min_area_px` pixels are dropped. `simplify` is a
    tolerance in CRS units. Each region is polygonized on its own (connected components
    first), which is what makes the per-region score exact.
    """
    labels = np.asarray(labels)
    keep = labels != 0
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    components = np.zeros(labels.shape, dtype=np.int32)
    classes = [0]  # class value of each component id
    for value in sorted(v for v in names if v != 0):
        regions, n = ndimage.label(keep & (labels == value))
        if n:
            inside = regions > 0
            components[inside] = regions[inside] + (len(classes) - 1)
            classes.extend([value] * n)
    sizes = np.bincount(components.ravel(), minlength=len(classes))
    if min_area_px > 0:
        small = sizes < min_area_px
        small[0] = False
        components[small[components]] = 0
    region_scores = None
    if scores is None and score_map is not None:
        weights = np.nan_to_num(np.asarray(score_map, dtype=np.float64))
        sums = np.bincount(components.ravel(), weights=weights.ravel(), minlength=len(classes))
        with np.errstate(invalid="ignore", divide="ignore"):
            region_scores = sums / sizes
    crs_proj = to_pyproj(crs)
    parts: dict[int, list[BaseGeometry]] = {}
    for geojson, value in rasterio.features.shapes(
        components, mask=components > 0, connectivity=4, transform=transform
    ):
        parts.setdefault(int(value), []).append(shape(geojson))
    features = []
    for region in sorted(parts):
        geoms = parts[region]
        geometry = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
        geometry = shapely.make_valid(geometry)
        if simplify:
            geometry = shapely.make_valid(geometry.simplify(simplify, preserve_topology=True))
        geometry = _polygonal(geometry)
        if geometry is None:
            continue
        value = classes[region]
        if scores is not None:
            score = float(scores.get(value, math.nan))
        elif region_scores is not None:
            score = float(region_scores[region])
        else:
            score = math.nan
        area = area_m2(geometry, crs_proj) if crs_proj else None
        features.append(Feature(geometry, names[value], score, area))
    return features


def _field_arrays(features: Sequence[Feature]) -> tuple[list[str], list[np.ndarray]]:
    """Columns label, score, area_m2 and then every extra property, typed from their values."""
    names = ["label", "score", "area_m2"]
    columns = [
        np.array([f.label for f in features], dtype=object),
        np.array([f.score for f in features], dtype=np.float64),
        np.array([math.nan if f.area_m2 is None else f.area_m2 for f in features], dtype=float),
    ]
    extra: list[str] = []
    for f in features:
        extra.extend(k for k in f.properties if k not in extra and k not in names)
    for key in extra:
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
        names.append(key)
        columns.append(column)
    return names, columns


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


def _write_layer(
    path: Path,
    geometries: Sequence[BaseGeometry],
    fields: list[str],
    columns: list[np.ndarray],
    *,
    crs_wkt: str | None,
    driver: str,
    layer: str,
    overwrite: bool,
    layer_options: dict[str, str] | None = None,
) -> None:
    geometry_type, promote = _geometry_type(geometries)
    wkb = np.array(
        [shapely.to_wkb(g) for g in geometries] if len(geometries) else [], dtype=object
    )
    with atomic_output(path, overwrite=overwrite) as temp, warnings.catch_warnings():
        # A missing CRS is deliberate here (pixel-space scenes); the caller already warned.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        try:
            pyogrio.raw.write(
                str(temp),
                wkb,
                columns,
                fields,
                layer=layer,
                driver=driver,
                geometry_type=geometry_type,
                promote_to_multi=promote,
                crs=crs_wkt,
                layer_options=layer_options,
            )
        except (DataSourceError, OSError, RuntimeError) as exc:
            raise OutputError(
                f"Writing {path} failed ({exc}). Check free disk space and permissions in that "
                "folder."
            ) from exc


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
    gpkg_path = Path(gpkg_path)
    geojson_path = Path(geojson_path) if geojson_path is not None else None
    crs_proj = to_pyproj(crs)
    if crs_proj is None and geojson_path is not None:
        warnings.warn(
            f"No GeoJSON written to {geojson_path}: the scene has no CRS, and GeoJSON "
            "coordinates must be longitude/latitude. The GeoPackage holds the polygons in "
            "pixel coordinates.",
            GeoreferenceWarning,
            stacklevel=2,
        )
        geojson_path = None
    targets = [p for p in (gpkg_path, geojson_path) if p is not None]
    if not overwrite:
        for target in targets:
            if target.exists():
                raise _exists_error(target)
    fields, columns = _field_arrays(features)
    geometries = [f.geometry for f in features]
    _write_layer(
        gpkg_path, geometries, fields, columns,
        crs_wkt=crs_proj.to_wkt() if crs_proj else None,
        driver="GPKG", layer=layer, overwrite=overwrite,
    )
    if geojson_path is not None:
        _write_layer(
            geojson_path, list(to_wgs84(geometries, crs_proj)) if geometries else [],
            fields, columns,
            crs_wkt=pyproj.CRS("EPSG:4326").to_wkt(), driver="GeoJSON", layer=layer,
            overwrite=overwrite, layer_options={"RFC7946": "YES"},
        )
    return targets
