"""The mapping tile grid: 332 x 332 px at 15 m (4.98 km) tiles in each UTM zone.

Rules (they make every loss pixel belong to exactly one tile, so nothing is mapped twice):

- **Zone.** A GFC pixel belongs to the UTM zone of its centre's longitude (6 degree bands).
  Each zone has one tile lattice in its *northern* CRS (EPSG:326zz) for both hemispheres,
  so the lattice runs unbroken across the equator (southern northings are simply negative).
- **Tile.** Tile (col, row) of a zone covers x in [col, col + 1) * 4980 m and y in
  [row, row + 1) * 4980 m; a pixel belongs to the tile holding its centre's projected point.
- **Province.** Each loss pixel is assigned to the province holding its centre. A tile on a
  province border is computed once and serves both provinces; an event crossing the border
  becomes one polygon per province.

Tiles are read with a halo (:data:`HALO_PIXELS`) so that the model sees context past the
tile edge, and the input edge (352 px) divides by 32 as the encoders need.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from pipeline.core.grid import CHIP_RESOLUTION, CHIP_SIZE

TILE_PIXELS = CHIP_SIZE
TILE_RESOLUTION = CHIP_RESOLUTION
TILE_METRES = TILE_PIXELS * TILE_RESOLUTION
#: Context around the tile core; 332 + 2 * 10 = 352 = 11 * 32.
HALO_PIXELS = 10


@dataclass(frozen=True, order=True)
class MapTile:
    """One tile of a zone's lattice."""

    zone: int
    row: int
    col: int

    @property
    def tile_id(self) -> str:
        return f"z{self.zone:02d}_x{self.col:+05d}_y{self.row:+05d}"

    @classmethod
    def from_id(cls, tile_id: str) -> MapTile:
        zone, col, row = tile_id.split("_")
        return cls(zone=int(zone[1:]), row=int(row[1:]), col=int(col[1:]))

    @property
    def crs(self) -> CRS:
        return zone_crs(self.zone)

    def bounds(self) -> tuple[float, float, float, float]:
        """Core bounds (left, bottom, right, top) in the zone CRS."""
        left, bottom = self.col * TILE_METRES, self.row * TILE_METRES
        return left, bottom, left + TILE_METRES, bottom + TILE_METRES

    def geobox(self, halo: int = HALO_PIXELS) -> GeoBox:
        """The 15 m grid of the core plus ``halo`` pixels on each side."""
        left, _, _, top = self.bounds()
        size = TILE_PIXELS + 2 * halo
        origin_x, origin_y = left - halo * TILE_RESOLUTION, top + halo * TILE_RESOLUTION
        affine = Affine(TILE_RESOLUTION, 0.0, origin_x, 0.0, -TILE_RESOLUTION, origin_y)
        return GeoBox((size, size), affine, self.crs)

    def lonlat_bounds(self, margin_m: float = 0.0) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the core grown by ``margin_m``, densified edges."""
        left, bottom, right, top = self.bounds()
        left, bottom, right, top = left - margin_m, bottom - margin_m, right + margin_m, \
            top + margin_m
        t = np.linspace(0.0, 1.0, 17)
        xs = np.r_[left + (right - left) * t, np.full(17, right), right - (right - left) * t,
                   np.full(17, left)]
        ys = np.r_[np.full(17, bottom), bottom + (top - bottom) * t, np.full(17, top),
                   top - (top - bottom) * t]
        lon, lat = _to_lonlat(self.zone).transform(xs, ys)
        return float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))


def zone_crs(zone: int) -> CRS:
    """The tile lattice CRS of a zone: WGS 84 / UTM zone N (EPSG:326zz), both hemispheres."""
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone {zone} is outside 1..60")
    return CRS(f"EPSG:{32600 + zone}")


def zone_of_lon(lon: np.ndarray) -> np.ndarray:
    """UTM zone number of each longitude (the 6 degree band holding it)."""
    return np.clip(np.floor((np.asarray(lon, np.float64) + 180.0) / 6.0).astype(np.int64) + 1,
                   1, 60)


def tile_indices(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zone, row, col) of the tile owning each point, vectorised (one transform per zone)."""
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    zones = zone_of_lon(lon)
    rows = np.empty(lon.shape, np.int64)
    cols = np.empty(lon.shape, np.int64)
    for zone in np.unique(zones):
        sel = zones == zone
        x, y = _to_utm(int(zone)).transform(lon[sel], lat[sel])
        cols[sel] = np.floor(np.asarray(x) / TILE_METRES).astype(np.int64)
        rows[sel] = np.floor(np.asarray(y) / TILE_METRES).astype(np.int64)
    return zones, rows, cols


@lru_cache(maxsize=64)
def _to_utm(zone: int) -> Transformer:
    return Transformer.from_crs("EPSG:4326", f"EPSG:{32600 + zone}", always_xy=True)


@lru_cache(maxsize=64)
def _to_lonlat(zone: int) -> Transformer:
    return Transformer.from_crs(f"EPSG:{32600 + zone}", "EPSG:4326", always_xy=True)
