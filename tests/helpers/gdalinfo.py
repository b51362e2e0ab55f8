"""`gdalinfo -json` without GDAL's Python bindings or command-line tools: the GDAL library
rasterio bundles (or links), called through ctypes. What GDAL itself reads of a raster and its
sidecars (category names and attribute tables from a `.aux.xml`, which rasterio's API does
not expose), so tests check what QGIS and `gdalinfo` will show."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import os
from functools import lru_cache

import rasterio


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    here = os.path.dirname(rasterio.__file__)
    bundled = sorted(glob.glob(os.path.join(here, os.pardir, "rasterio.libs", "libgdal*")))
    name = bundled[0] if bundled else ctypes.util.find_library("gdal")
    if name is None:
        raise OSError("no GDAL library found beside rasterio or on the system")
    lib = ctypes.CDLL(name)
    lib.GDALAllRegister.restype = None
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALInfoOptionsNew.restype = ctypes.c_void_p
    lib.GDALInfoOptionsNew.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]
    lib.GDALInfoOptionsFree.argtypes = [ctypes.c_void_p]
    lib.GDALInfo.restype = ctypes.c_void_p
    lib.GDALInfo.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.VSIFree.argtypes = [ctypes.c_void_p]
    lib.GDALAllRegister()
    return lib


def gdalinfo(path: str | os.PathLike, *args: str) -> dict:
    """What `gdalinfo -json ARGS PATH` prints, parsed."""
    lib = _library()
    dataset = lib.GDALOpen(os.fsencode(path), 0)  # GA_ReadOnly
    if not dataset:
        raise OSError(f"GDAL cannot open {path}")
    argv = (ctypes.c_char_p * (len(args) + 2))(b"-json", *(a.encode() for a in args), None)
    options = lib.GDALInfoOptionsNew(argv, None)
    try:
        text = lib.GDALInfo(dataset, options)
        try:
            return json.loads(ctypes.string_at(text).decode("utf-8"))
        finally:
            lib.VSIFree(text)
    finally:
        lib.GDALInfoOptionsFree(options)
        lib.GDALClose(dataset)
