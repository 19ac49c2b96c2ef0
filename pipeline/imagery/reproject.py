"""Bring rasters onto a target grid (a chip or tile ``GeoBox``), reading only what is needed."""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject

from pipeline.core.errors import ForestNetError
from pipeline.core.grid import grid_key
from pipeline.imagery.fast_warp import fast_warp, output_array


class RasterInputError(ForestNetError, ValueError):
    """A raster that cannot be used; the message names the file and the reason."""


def read_file_to_grid(
    path: Path,
    geobox: GeoBox,
    resampling: Resampling = Resampling.bilinear,
    bands: int | list[int] = 1,
) -> np.ndarray:
    """Read band(s) of a raster file warped onto ``geobox``, as float32 with NaN for nodata.

    A ``WarpedVRT`` reads only the source blocks under the target grid, so a
    country-wide raster is never loaded whole.
    """
    path = Path(path)
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterInputError(f"{path}: cannot open raster ({exc})") from exc
    with src:
        if src.crs is None:
            raise RasterInputError(f"{path}: raster has no CRS; cannot place it on a grid")
        nodata = src.nodata
        # Continuous values are resampled in float32: an int16 DEM resampled in its own
        # type rounds to whole metres, which turns slopes on a 15 m grid into terraces.
        # Outside the source (or on its nodata) they come out NaN, never a silent zero.
        continuous = resampling != Resampling.nearest
        with WarpedVRT(
            src,
            crs=geobox.crs.to_wkt(),
            transform=geobox.affine,
            width=geobox.shape[1],
            height=geobox.shape[0],
            resampling=resampling,
            src_nodata=nodata,
            nodata=np.nan if continuous else nodata,
            dtype="float32" if continuous else None,
        ) as vrt:
            data = vrt.read(bands, masked=not continuous and nodata is not None)
    if np.ma.isMaskedArray(data):
        data = data.astype(np.float32).filled(np.nan)
    out = np.asarray(data, dtype=np.float32)
    if not np.isfinite(out[~np.isnan(out)]).all():
        raise RasterInputError(f"{path}: contains infinite values")
    return out


def scene_window_to_grid(
    da: xr.DataArray,
    source_box: GeoBox,
    target: GeoBox,
    resampling: Resampling,
    margin: int = 4,
) -> np.ndarray:
    """Reproject the part of a (lazy) scene array under ``target`` onto ``target``.

    ``da`` is ``(..., y, x)`` on ``source_box``. Only the window covering the target
    (plus a few pixels for the resampling kernel) is loaded. Pixels outside the scene or
    NaN in the source come out NaN.
    """
    roi = source_roi(source_box, target, margin)
    lead = da.shape[:-2]
    if roi is None:
        return np.full((*lead, *target.shape), np.nan, dtype=np.float32)
    window = da.isel(y=roi[0], x=roi[1]) if da.dims[-1] == "x" else da[..., roi[0], roi[1]]
    return array_to_grid(np.asarray(window.values, dtype=np.float32), source_box[roi], target,
                         resampling)


def array_to_grid(
    src: np.ndarray, src_box: GeoBox, target: GeoBox, resampling: Resampling,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Reproject ``src (..., y, x)`` on ``src_box`` onto ``target``: float32, NaN outside;
    written into ``out`` (C-ordered float32 of the result's shape) when given.

    NaN in the source is nodata. Same-CRS, north-up grids go through ``fast_warp``
    (a numba kernel, GDAL's numbers); anything else through GDAL.
    """
    src = np.asarray(src, dtype=np.float32)
    fast = fast_warp(src, src_box, target, resampling, out)
    if fast is not None:
        return fast
    dst = output_array(out, (*src.shape[:-2], *target.shape))
    dst.fill(np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reproject(
            source=src, destination=dst,
            src_transform=src_box.affine, src_crs=src_box.crs.to_wkt(), src_nodata=np.nan,
            dst_transform=target.affine, dst_crs=target.crs.to_wkt(), dst_nodata=np.nan,
            resampling=resampling,
        )
    return dst


def source_roi(source: GeoBox, target: GeoBox, margin: int = 4) -> tuple[slice, slice] | None:
    """Rows and columns of ``source`` under ``target`` (any CRS), plus ``margin`` source
    pixels for the resampling kernel; None when the two do not overlap."""
    return _source_roi(*grid_key(source), *grid_key(target), margin)


def _axis_aligned_roi(src_shape: tuple, src_affine: Affine, dst_shape: tuple,
                      dst_affine: Affine, margin: int) -> tuple[slice, slice] | None:
    """The source window under a north-up target in the same CRS, grown by ``margin``."""
    inverse = ~src_affine
    height, width = dst_shape
    (x0, y0), (x1, y1) = inverse @ (dst_affine.c, dst_affine.f), inverse @ (
        dst_affine.c + dst_affine.a * width, dst_affine.f + dst_affine.e * height)
    rows = (max(0, math.floor(min(y0, y1)) - margin),
            min(src_shape[0], math.ceil(max(y0, y1)) + margin))
    cols = (max(0, math.floor(min(x0, x1)) - margin),
            min(src_shape[1], math.ceil(max(x0, x1)) + margin))
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        return None
    return slice(*rows), slice(*cols)


@lru_cache(maxsize=1024)
def _source_roi(src_shape: tuple, src_affine: Affine, src_crs: int | CRS, dst_shape: tuple,
                dst_affine: Affine, dst_crs: int | CRS, margin: int) -> tuple[slice, slice] | None:
    # Cached on plain values: a chip reads QA, bands and pan of each scene over one grid,
    # and odc-geo's search costs ten times the warp of a small window. Scenes and chips of
    # one zone share its CRS: then the rows and columns are plain affine arithmetic.
    if src_crs == dst_crs and src_affine.is_rectilinear and dst_affine.is_rectilinear:
        return _axis_aligned_roi(src_shape, src_affine, dst_shape, dst_affine, margin)
    roi = compute_reproject_roi(GeoBox(src_shape, src_affine, CRS(src_crs)),
                                GeoBox(dst_shape, dst_affine, CRS(dst_crs)),
                                padding=margin).roi_src
    rows, cols = roi
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return None
    return rows, cols
