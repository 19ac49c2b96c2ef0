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
from odc.geo import CRS, XY, geom
from odc.geo.geobox import GeoBox
from odc.geo.gridspec import GridSpec
from pyproj import Transformer

from pipeline.core.grid import CHIP_RESOLUTION, CHIP_SIZE, zone_crs, zone_of_lon

TILE_PIXELS = CHIP_SIZE
TILE_RESOLUTION = CHIP_RESOLUTION
TILE_METRES = TILE_PIXELS * TILE_RESOLUTION
#: Context around the tile core; 332 + 2 * 10 = 352 = 11 * 32.
HALO_PIXELS = 10


@lru_cache(maxsize=64)
def zone_gridspec(zone: int) -> GridSpec:
    """The tile lattice of one UTM zone: 332 x 332 px tiles at 15 m, origin at (0, 0)."""
    return GridSpec(zone_crs(zone), (TILE_PIXELS, TILE_PIXELS), TILE_RESOLUTION,
                    origin=XY(0.0, 0.0))


@dataclass(frozen=True, order=True)
class MapTile:
    """One tile of a zone's lattice: the zone and the GridSpec's tile index."""

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
        box = self.geobox(halo=0).boundingbox
        return box.left, box.bottom, box.right, box.top

    def geobox(self, halo: int = HALO_PIXELS) -> GeoBox:
        """The 15 m grid of the core plus ``halo`` pixels on each side."""
        core = zone_gridspec(self.zone).tile_geobox((self.col, self.row))
        return core.pad(halo) if halo else core

    def lonlat_bounds(self, margin_m: float = 0.0) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the core grown by ``margin_m``, densified edges."""
        left, bottom, right, top = self.bounds()
        m = margin_m
        extent = geom.box(left - m, bottom - m, right + m, top + m, self.crs)
        return tuple(extent.to_crs("EPSG:4326", resolution=TILE_METRES / 16).boundingbox)


def tile_indices(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zone, row, col) of the tile owning each point, vectorised (one transform per zone).

    The same binning as the zone's ``GridSpec.pt2idx``, over arrays of points.
    """
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    zones = zone_of_lon(lon)
    rows = np.empty(lon.shape, np.int64)
    cols = np.empty(lon.shape, np.int64)
    for zone in np.unique(zones):
        sel = zones == zone
        spec = zone_gridspec(int(zone))
        x, y = _to_utm(int(zone)).transform(lon[sel], lat[sel])
        (x0, y0), (w, h) = spec.origin.xy, spec.tile_size.xy
        cols[sel] = np.floor((np.asarray(x) - x0) / w).astype(np.int64)
        rows[sel] = np.floor((np.asarray(y) - y0) / h).astype(np.int64)
    return zones, rows, cols


@lru_cache(maxsize=64)
def _to_utm(zone: int) -> Transformer:
    return Transformer.from_crs("EPSG:4326", zone_crs(zone).to_wkt(), always_xy=True)
