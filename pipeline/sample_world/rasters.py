"""Small raster helpers: deterministic GeoTIFF writing and polygon rasterisation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio import features
from shapely.geometry.base import BaseGeometry


def write_tif(
    path: Path,
    bands: np.ndarray,
    grid: GeoBox,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> None:
    """Write a (band, y, x) or (y, x) array as a DEFLATE GeoTIFF on ``grid``.

    Tiled 256 x 256 like Landsat's COGs where the raster is big enough; GDAL adds no
    timestamp, so the bytes depend on the data only.
    """
    data = bands[None] if bands.ndim == 2 else bands
    count, h, w = data.shape
    if (h, w) != tuple(grid.shape.yx):
        raise ValueError(f"array shape {(h, w)} does not match grid shape {tuple(grid.shape.yx)}")
    profile = {
        "driver": "GTiff",
        "dtype": data.dtype.name,
        "count": count,
        "height": h,
        "width": w,
        "crs": grid.crs.to_wkt() if grid.crs.epsg is None else f"EPSG:{grid.crs.epsg}",
        "transform": grid.affine,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if data.dtype.kind == "f" else 2,
    }
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)


def rasterise(geoms: Sequence[BaseGeometry], grid: GeoBox, supersample: int = 1) -> np.ndarray:
    """Fraction of each pixel of ``grid`` covered by ``geoms`` (pixel-centre rule per subpixel).

    ``supersample`` > 1 rasterises on a finer grid and averages, giving soft, area-true
    edges for features thinner than a pixel (roads, house roofs).
    """
    h, w = grid.shape.yx
    geoms = [g for g in geoms if not g.is_empty]
    if not geoms:
        return np.zeros((h, w), np.float32)
    s = supersample
    transform = grid.affine @ Affine.scale(1.0 / s)
    mask = features.rasterize(
        geoms, out_shape=(h * s, w * s), transform=transform, fill=0, default_value=1, dtype="uint8"
    )
    if s == 1:
        return mask.astype(np.float32)
    return mask.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)


def lattice_window(geom: BaseGeometry, per_degree: int, pad: int = 1) -> GeoBox:
    """The smallest grid of ``1/per_degree`` degree pixels (edges on the lattice) around geom."""
    west, south, east, north = geom.bounds
    i0 = math.floor(west * per_degree) - pad
    i1 = math.ceil(east * per_degree) + pad
    j0 = math.floor(south * per_degree) - pad
    j1 = math.ceil(north * per_degree) + pad
    res = 1.0 / per_degree
    return GeoBox(
        (j1 - j0, i1 - i0), Affine(res, 0, i0 / per_degree, 0, -res, j1 / per_degree), "EPSG:4326"
    )


def paste_offset(window: GeoBox, full: GeoBox) -> tuple[int, int]:
    """(row, col) of ``window``'s first pixel inside ``full`` (both on the same lattice)."""
    col = round((window.affine.c - full.affine.c) / full.affine.a)
    row = round((window.affine.f - full.affine.f) / full.affine.e)
    return row, col


def window_of(
    grid: GeoBox, bounds: tuple[float, float, float, float], pad: int = 0
) -> tuple[tuple[slice, slice], GeoBox] | None:
    """The part of north-up ``grid`` covering ``bounds`` (+ ``pad`` pixels), clipped to it.

    Returns ((row slice, col slice), sub-grid), or None when the bounds miss the grid.
    """
    a = grid.affine
    h, w = grid.shape.yx
    left, bottom, right, top = bounds
    c0 = max(math.floor((left - a.c) / a.a) - pad, 0)
    c1 = min(math.ceil((right - a.c) / a.a) + pad, w)
    r0 = max(math.floor((top - a.f) / a.e) - pad, 0)
    r1 = min(math.ceil((bottom - a.f) / a.e) + pad, h)
    if c0 >= c1 or r0 >= r1:
        return None
    sub = GeoBox((r1 - r0, c1 - c0), a @ Affine.translation(c0, r0), grid.crs)
    return (slice(r0, r1), slice(c0, c1)), sub


def rasterise_windowed(
    geoms: Sequence[BaseGeometry], grid: GeoBox, supersample: int = 1, pad: int = 1
) -> np.ndarray:
    """Like :func:`rasterise` over the whole grid, but only rasterising the geoms' bounds."""
    out = np.zeros(tuple(grid.shape.yx), np.float32)
    geoms = [g for g in geoms if not g.is_empty]
    if not geoms:
        return out
    bounds = np.asarray([g.bounds for g in geoms])
    hit = window_of(
        grid, (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max()), pad
    )
    if hit is not None:
        (rows, cols), sub = hit
        out[rows, cols] = rasterise(geoms, sub, supersample)
    return out
