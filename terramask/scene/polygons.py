"""Raster regions to polygon features: polygonize, ground areas, seams, clean-up.

Features are made in scene pixel coordinates or directly in the scene CRS; pieces cut by tile
seams are merged while still in pixel coordinates (where shared edges coincide exactly) and
mapped to the CRS once, with their ground areas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyproj
import rasterio.features
import shapely
import shapely.affinity
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from terramask.options import PolygonOptions
from terramask.protocols import SceneReader


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
    polygons: PolygonOptions = PolygonOptions(),
) -> list[Feature]:
    """Polygons of the connected regions of each named label value (4-connected).

    0 and values missing from `names` are background; invalid pixels never become objects.
    A feature's score is `scores[value]` when given, else the mean of `score_map` over its
    pixels, else NaN. Regions smaller than `polygons.min_area` pixels are dropped and
    outlines are simplified by `polygons.simplify` (CRS units). Each region is polygonized
    on its own (connected components first), which is what makes the per-region score exact.
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
    if polygons.min_area > 0:
        small = sizes < polygons.min_area
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
        geometry = simplified(shapely.make_valid(geometry), polygons.simplify)
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


def simplified(geometry: BaseGeometry, tolerance: float | None) -> BaseGeometry | None:
    """`geometry` simplified by `tolerance` (Douglas-Peucker, topology kept), valid and
    polygonal; None when nothing polygonal is left."""
    if tolerance:
        geometry = geometry.simplify(tolerance, preserve_topology=True)
    return _polygonal(shapely.make_valid(geometry))


def to_scene_crs(features: Sequence[Feature], scene: SceneReader) -> list[Feature]:
    """Pixel-coordinate features on the scene's grid, with their ground areas."""
    t = scene.transform
    crs = to_pyproj(scene.crs) if scene.georeferenced else None
    moved = []
    for f in features:
        geometry = shapely.affinity.affine_transform(f.geometry, [t.a, t.b, t.d, t.e, t.c, t.f])
        area = area_m2(geometry, crs) if crs is not None else None
        moved.append(Feature(geometry, f.label, f.score, area, f.properties))
    return moved


def seam_lines(core: Window, width: int, height: int) -> BaseGeometry | None:
    """The edges of a tile's core that border another core (not the scene's own edge), as
    lines in scene pixel coordinates; None for a tile that is the whole scene."""
    c0, r0 = core.col_off, core.row_off
    c1, r1 = c0 + core.width, r0 + core.height
    lines = []
    if c0 > 0:
        lines.append(((c0, r0), (c0, r1)))
    if r0 > 0:
        lines.append(((c0, r0), (c1, r0)))
    if c1 < width:
        lines.append(((c1, r0), (c1, r1)))
    if r1 < height:
        lines.append(((c0, r1), (c1, r1)))
    return shapely.MultiLineString(lines) if lines else None


def merge_across_seams(pieces: Sequence[Feature]) -> list[Feature]:
    """Join pieces (all touching a seam) of one class that share an edge across a seam.

    Pieces are in pixel coordinates, where shared edges coincide exactly; ground areas are
    computed once features are mapped to the CRS. The merged feature's score is the
    area-weighted mean of its pieces' scores.
    """
    features: list[Feature] = []
    by_class: dict[str, list[Feature]] = {}
    for piece in pieces:
        by_class.setdefault(piece.label, []).append(piece)
    for label, group in by_class.items():
        geometries = [f.geometry for f in group]
        merged = shapely.union_all(geometries)
        parts = list(getattr(merged, "geoms", [merged]))
        tree = shapely.STRtree(geometries)
        for part in parts:
            inside = tree.query(part, predicate="contains")
            if len(inside) == 0:  # rounding at the seam: fall back to overlap
                inside = tree.query(part, predicate="intersects")
            members = [group[i] for i in inside]
            weights = np.array([m.geometry.area for m in members])
            scores = np.array([m.score for m in members])
            score = float(np.average(scores, weights=weights)) if weights.sum() else float("nan")
            features.append(Feature(part, label, score, None))
    return features


def finish_polygons(
    features: Sequence[Feature], scene: SceneReader, options: PolygonOptions
) -> list[Feature]:
    """Drop objects under `options.min_area` pixels and simplify, once objects are whole."""
    pixel = abs(scene.transform.determinant)
    crs_proj = to_pyproj(scene.crs)
    finished = []
    for f in features:
        if options.min_area and f.geometry.area < options.min_area * pixel:
            continue
        if options.simplify:
            geometry = simplified(f.geometry, options.simplify)
            if geometry is None:
                continue
            area = area_m2(geometry, crs_proj) if crs_proj else None
            f = Feature(geometry, f.label, f.score, area, f.properties)
        finished.append(f)
    return finished


def pixel_area_m2(scene: SceneReader) -> float | None:
    """Ground area of one pixel in m² (None without georeferencing or a length unit)."""
    if not scene.georeferenced or scene.crs is None:
        return None
    t = scene.transform
    square = shapely.Polygon([t @ (0, 0), t @ (1, 0), t @ (1, 1), t @ (0, 1)])
    return area_m2(square, to_pyproj(scene.crs))
