"""Auxiliary predictors on a chip grid: terrain, tree cover, NDVI, peat, distances, climate.

Each source is optional; a missing source gives NaN channels/features, never a silent zero.
Rasters in any CRS are warped to the chip grid (bilinear for continuous values, nearest
for categories); vectors are read once per process and queried by bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.reproject import RasterInputError, read_file_to_grid

AUX_BANDS: tuple[str, ...] = ("elevation", "slope", "aspect", "treecover2000", "ndvi", "peat")
_REGION_STATS = ("mean", "std", "min", "max")
_REGION_BANDS = ("elevation", "slope", "treecover2000", "ndvi")
AUX_SCALARS: tuple[str, ...] = (
    *(f"{b}_{s}" for b in _REGION_BANDS for s in _REGION_STATS),
    "street_dist_km", "city_dist_km", "peat_fraction", "precipitation_mm", "temperature_c",
)
#: Distances beyond this are reported as this (km): no road/settlement nearby.
MAX_DISTANCE_KM = 50.0


@dataclass(frozen=True)
class AuxSources:
    """Paths of the auxiliary sources; any may be None."""

    dem: Path | None = None
    treecover: Path | None = None
    roads: Path | None = None
    settlements: Path | None = None
    peat: Path | None = None
    climate: Path | None = None


def aux_for_chip(
    geobox: GeoBox,
    region: BaseGeometry,
    loss_mask: np.ndarray,
    composite: np.ndarray,
    sources: AuxSources,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``aux (AUX_BANDS, y, x)`` and ``aux_scalar (AUX_SCALARS,)`` for one chip.

    ``region`` is the loss region in the chip's CRS; ``composite`` is ``(band, y, x)`` in
    chip band order (red, green, blue, nir, ...), used for NDVI.
    """
    shape = tuple(geobox.shape)
    nan = np.full(shape, np.nan, dtype=np.float32)
    elevation = _raster(sources.dem, geobox, Resampling.bilinear)
    slope, aspect = slope_aspect(elevation, abs(geobox.affine.a))
    treecover = _raster(sources.treecover, geobox, Resampling.bilinear)
    red, nir = composite[0], composite[3]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where((nir + red) > 0, (nir - red) / (nir + red), np.nan).astype(np.float32)
    peat = _rasterize(sources.peat, geobox) if sources.peat else nan
    aux = np.stack([elevation, slope, aspect, treecover, ndvi, peat]).astype(np.float32)

    inside = loss_mask.astype(bool)
    stats = []
    for band in _REGION_BANDS:
        stats.extend(region_stats(aux[AUX_BANDS.index(band)], inside))
    climate = _climate(sources.climate, geobox, inside)
    scalars = [
        *stats,
        _distance_km(sources.roads, region, geobox),
        _distance_km(sources.settlements, region, geobox),
        float(np.nanmean(peat[inside])) if inside.any() and sources.peat else np.nan,
        *climate,
    ]
    return aux, np.asarray(scalars, dtype=np.float32)


def region_stats(values: np.ndarray, inside: np.ndarray) -> list[float]:
    """mean, std, min, max of finite values inside the region (NaN when none)."""
    sel = values[inside]
    sel = sel[np.isfinite(sel)]
    if sel.size == 0:
        return [np.nan] * 4
    return [float(sel.mean()), float(sel.std()), float(sel.min()), float(sel.max())]


def slope_aspect(elevation: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees) and aspect (degrees clockwise from north) of a north-up DEM."""
    dz_dy, dz_dx = np.gradient(elevation.astype(np.float64), cell)
    # Rows increase southwards, so the northward gradient is -dz_dy.
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = (np.degrees(np.arctan2(-dz_dx, dz_dy)) + 360.0) % 360.0
    return slope.astype(np.float32), aspect.astype(np.float32)


def _raster(path: Path | None, geobox: GeoBox, resampling: Resampling) -> np.ndarray:
    if path is None:
        return np.full(tuple(geobox.shape), np.nan, dtype=np.float32)
    data = read_file_to_grid(path, geobox, resampling)
    if data.ndim == 3:
        data = data[0]
    return data


def _climate(path: Path | None, geobox: GeoBox, inside: np.ndarray) -> list[float]:
    if path is None:
        return [np.nan, np.nan]
    data = read_file_to_grid(path, geobox, Resampling.bilinear, bands=[1, 2])
    where = inside if inside.any() else np.ones(inside.shape, dtype=bool)
    return [float(np.nanmean(band[where])) if np.isfinite(band[where]).any() else np.nan
            for band in data]


@lru_cache(maxsize=16)
def _vector(path: Path) -> gpd.GeoDataFrame:
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several error types for unreadable files
        raise RasterInputError(f"{path}: cannot read vector layer ({exc})") from exc
    if frame.crs is None:
        raise RasterInputError(f"{path}: vector layer has no CRS")
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    return frame


def _nearby(path: Path, geobox: GeoBox, reach_m: float) -> gpd.GeoSeries:
    frame = _vector(Path(path))
    search = geobox.extent.buffer(reach_m).to_crs(frame.crs).boundingbox
    hits = frame.sindex.query(box(*search), predicate="intersects")
    return frame.geometry.iloc[hits].to_crs(geobox.crs.to_wkt())


def _distance_km(path: Path | None, region: BaseGeometry, geobox: GeoBox) -> float:
    if path is None:
        return np.nan
    near = _nearby(path, geobox, MAX_DISTANCE_KM * 1000.0)
    if near.empty:
        return MAX_DISTANCE_KM
    return float(min(near.distance(region).min() / 1000.0, MAX_DISTANCE_KM))


def _rasterize(path: Path, geobox: GeoBox) -> np.ndarray:
    shapes = _nearby(path, geobox, 0.0)
    if shapes.empty:
        return np.zeros(tuple(geobox.shape), dtype=np.float32)
    burned = rasterio.features.rasterize(
        ((g, 1) for g in shapes), out_shape=tuple(geobox.shape), transform=geobox.affine,
        fill=0, dtype="uint8",
    )
    return burned.astype(np.float32)
