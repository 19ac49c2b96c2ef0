"""The world's footprint: the UTM scene grids, lon/lat grids for GFC/aux rasters, transforms."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
import shapely
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from pipeline.core.grid import utm_crs
from pipeline.core.provinces import BOUNDARIES

from .spec import WorldSpec

#: Reflective (multispectral) and panchromatic Landsat pixel sizes in metres.
MS_RES = 30.0
PAN_RES = 15.0
#: Margin that every auxiliary raster adds around the region (brief: at least 3 km).
AUX_MARGIN_M = 3300.0
#: Features (rivers, roads) are laid out a little beyond the aux margin so they cross it.
FEATURE_MARGIN_M = 4500.0

Coord = float | np.ndarray
G = TypeVar("G", bound=BaseGeometry)

@dataclass(frozen=True)
class Region:
    """Grids and extents of one world; every module takes this instead of loose numbers."""

    epsg: int
    grid30: GeoBox  # reflective bands and QA_PIXEL
    grid15: GeoBox  # panchromatic band; the land surface is rendered on this grid
    bbox_lonlat: tuple[float, float, float, float]  # scene footprint (west, south, east, north)
    aux_bbox_lonlat: tuple[float, float, float, float]  # region plus AUX_MARGIN_M
    feature_bounds: tuple[float, float, float, float]  # UTM extent of rivers/roads layout
    province: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """UTM bounds (left, bottom, right, top) of the scene grids."""
        b = self.grid30.boundingbox
        return (b.left, b.bottom, b.right, b.top)


def make_region(spec: WorldSpec) -> Region:
    """Snap a ``size_km`` square around the spec's centre to the 30 m UTM lattice.

    The grids use USGS's CRS for the zone (EPSG:326zz, negative northings in the south),
    as real Landsat products do.
    """
    epsg = utm_crs(spec.center_lon).epsg
    cx, cy = to_utm(epsg, spec.center_lon, spec.center_lat)
    n = int(round(spec.size_km * 1000.0 / MS_RES))
    # Landsat grids sit on whole multiples of the pixel size; keep that (and the pan grid's
    # origin identical) so chips and pan-sharpening line up exactly.
    left = math.floor((cx - n * MS_RES / 2) / MS_RES) * MS_RES
    top = math.ceil((cy + n * MS_RES / 2) / MS_RES) * MS_RES
    crs = CRS(f"EPSG:{epsg}")
    grid30 = GeoBox((n, n), Affine(MS_RES, 0, left, 0, -MS_RES, top), crs)
    grid15 = GeoBox((2 * n, 2 * n), Affine(PAN_RES, 0, left, 0, -PAN_RES, top), crs)
    right, bottom = left + n * MS_RES, top - n * MS_RES
    west, south, east, north = _lonlat_bounds(epsg, (left, bottom, right, top))
    mid = math.radians((south + north) / 2)
    dlat = AUX_MARGIN_M / 111_320.0
    dlon = AUX_MARGIN_M / (111_320.0 * math.cos(mid))
    m = FEATURE_MARGIN_M
    return Region(
        epsg=epsg,
        grid30=grid30,
        grid15=grid15,
        bbox_lonlat=(west, south, east, north),
        aux_bbox_lonlat=(west - dlon, south - dlat, east + dlon, north + dlat),
        feature_bounds=(left - m, bottom - m, right + m, top + m),
        province=province_of(spec.center_lon, spec.center_lat),
    )


def lonlat_grid(
    bbox: tuple[float, float, float, float], per_degree: int, centre_on_lattice: bool = False
) -> GeoBox:
    """An EPSG:4326 grid of ``1/per_degree`` degree pixels covering ``bbox``.

    Pixel edges sit on multiples of the pixel size (GFC, WorldClim), or pixel centres do when
    ``centre_on_lattice`` (SRTM tiles have centres on whole arc-seconds).
    """
    off = 0.5 if centre_on_lattice else 0.0
    west, south, east, north = bbox
    i0 = math.floor(west * per_degree - off)
    i1 = math.ceil(east * per_degree - off)
    j0 = math.floor(south * per_degree - off)
    j1 = math.ceil(north * per_degree - off)
    res = 1.0 / per_degree
    affine = Affine(res, 0, (i0 + off) / per_degree, 0, -res, (j1 + off) / per_degree)
    return GeoBox((j1 - j0, i1 - i0), affine, CRS("EPSG:4326"))


@lru_cache(maxsize=8)
def _transformer(src: int, dst: int) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def to_lonlat(epsg: int, x: Coord, y: Coord) -> tuple[Coord, Coord]:
    """UTM (x, y) -> (lon, lat); scalars or arrays, like pyproj."""
    return _transformer(epsg, 4326).transform(x, y)


def to_utm(epsg: int, lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
    """(lon, lat) -> UTM (x, y); scalars or arrays, like pyproj."""
    return _transformer(4326, epsg).transform(lon, lat)


def geom_to_lonlat(geom: G, epsg: int, decimals: int = 7) -> G:
    """Project a UTM geometry to lon/lat, rounding to ``decimals`` (1e-7 deg ~ 1 cm).

    Rounding makes the stored polygon exactly reproducible, and it is this rounded
    polygon that gets rasterised and written, so all outputs agree bit for bit.
    """

    def fn(xy: np.ndarray) -> np.ndarray:
        lon, lat = to_lonlat(epsg, xy[:, 0], xy[:, 1])
        return np.round(np.column_stack([lon, lat]), decimals)

    return shapely.transform(geom, fn)


def geom_to_utm(geom: G, epsg: int) -> G:
    """Project a lon/lat geometry to the world's UTM zone."""

    def fn(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(to_utm(epsg, xy[:, 0], xy[:, 1]))

    return shapely.transform(geom, fn)


def _lonlat_bounds(epsg: int, bounds: tuple[float, float, float, float]) -> tuple[float, ...]:
    left, bottom, right, top = bounds
    t = np.linspace(0.0, 1.0, 21)
    xs = np.concatenate(
        [
            left + (right - left) * t,
            np.full(21, right),
            right - (right - left) * t,
            np.full(21, left),
        ]
    )
    ys = np.concatenate(
        [
            np.full(21, top),
            top - (top - bottom) * t,
            np.full(21, bottom),
            bottom + (top - bottom) * t,
        ]
    )
    lon, lat = to_lonlat(epsg, xs, ys)
    return (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))


@lru_cache(maxsize=4)
def province_of(lon: float, lat: float) -> str:
    """Name of the Indonesian province holding the point (from the bundled boundaries)."""
    data = json.loads(BOUNDARIES.read_text())
    pt = Point(lon, lat)
    for feature in data["features"]:
        if shape(feature["geometry"]).contains(pt):
            return str(feature["properties"]["PROVINSI"])
    raise ValueError(f"({lon}, {lat}) is in no Indonesian province; choose a centre on land")
