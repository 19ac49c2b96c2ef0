"""The one grid type of the project: odc-geo's ``GeoBox`` (CRS, affine transform, shape).

Every raster footprint (scene, chip, tile, aux window) is a ``GeoBox``. This module holds
the few constructors the pipeline needs on top of odc-geo, so that no caller computes
bounds, zones or transforms by hand.

Projected grids follow USGS's UTM convention for Landsat: each zone's *northern* CRS
(EPSG:326zz) in both hemispheres, with negative northings south of the equator. Scenes,
chips and map tiles then share one CRS per zone, and a chip or tile never needs a warp
between a zone's north and south forms.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox

#: Equal-area CRS used for every area in the project (WGS 84 / NSIDC EASE-Grid 2.0 Global).
EQUAL_AREA_CRS = CRS("EPSG:6933")

#: ForestNet chips: 332 x 332 pixels at 15 m, the event at the centre of pixel (166, 166).
CHIP_SIZE = 332
CHIP_RESOLUTION = 15.0


def utm_crs(lon: float) -> CRS:
    """The UTM CRS of the zone holding longitude ``lon``, in USGS's northern form (326zz)."""
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude {lon} is outside -180..180")
    # Not odc-geo's CRS.utm: it puts a longitude on a zone edge (96.0) in the western zone,
    # while the map lattice (zone_of_lon) puts it in the eastern one; both must agree.
    return zone_crs(int(zone_of_lon(np.array([lon]))[0]))


def zone_crs(zone: int) -> CRS:
    """The CRS of UTM zone ``zone`` in USGS's northern form (EPSG:326zz)."""
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone {zone} is outside 1..60")
    return CRS(f"EPSG:{32600 + zone}")


def zone_of_lon(lon: np.ndarray) -> np.ndarray:
    """UTM zone number of each longitude (the 6 degree band holding it), vectorised."""
    return np.clip(np.floor((np.asarray(lon, np.float64) + 180.0) / 6.0).astype(np.int64) + 1,
                   1, 60)


def centred_geobox(
    lon: float,
    lat: float,
    size: int = CHIP_SIZE,
    resolution: float = CHIP_RESOLUTION,
    crs: CRS | str | int | None = None,
    on_lattice: bool = False,
) -> GeoBox:
    """A ``size`` x ``size`` grid whose pixel (size // 2, size // 2) is centred on (lon, lat).

    The grid is in the point's own UTM zone (:func:`utm_crs`) unless ``crs`` is given, so
    chips across Indonesia's zones 46-54 each carry their own zone's CRS. ``on_lattice``
    moves it (by less than half a pixel) onto the zone's lattice of ``resolution`` pixels
    from (0, 0), the map tiles' lattice: a chip and a map tile then share their pixels, so
    an event's chip and its map input hold the same composite pixels and loss mask.
    """
    target = CRS(crs) if crs is not None else utm_crs(lon)
    x, y = _project_point(lon, lat, target)
    half = size // 2 + 0.5
    left, top = x - half * resolution, y + half * resolution
    if on_lattice:
        left, top = round(left / resolution) * resolution, round(top / resolution) * resolution
    affine = Affine(resolution, 0.0, left, 0.0, -resolution, top)
    return GeoBox((size, size), affine, target)


def pixel_centre_axes(geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """The x of each column's and the y of each row's pixel centres of a north-up grid."""
    a = geobox.affine
    h, w = geobox.shape.yx
    return a.c + a.a * (np.arange(w) + 0.5), a.f + a.e * (np.arange(h) + 0.5)


def pixel_centres(geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """2-D arrays of the x and y coordinates of every pixel centre of a north-up grid."""
    return np.meshgrid(*pixel_centre_axes(geobox))


def pixel_spans(geoms: np.ndarray, transform: Affine, shape: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First and last row, first and last column of the pixels each geometry's bounding
    box falls in on a north-up grid of ``transform`` and ``(height, width)``, clipped to
    the grid: where a batch of polygons is burnt, without a Python loop over them."""
    height, width = shape
    west, south, east, north = shapely.bounds(geoms).T
    a = transform
    rows = (np.floor((north - a.f) / a.e), np.floor((south - a.f) / a.e))
    cols = (np.floor((west - a.c) / a.a), np.floor((east - a.c) / a.a))
    first_row, last_row = (np.clip(r, 0, height - 1).astype(np.int64) for r in rows)
    first_col, last_col = (np.clip(c, 0, width - 1).astype(np.int64) for c in cols)
    return first_row, last_row, first_col, last_col


def grid_key(box: GeoBox) -> tuple[tuple[int, int], Affine, int | CRS | None]:
    """A cheap hashable stand-in for ``box``: (shape, affine, EPSG code or CRS).

    Hashing a GeoBox hashes its CRS's WKT (~15 us), as much as a small window's warp;
    caches on grids key on this instead.
    """
    crs = box.crs
    return tuple(box.shape), box.affine, (crs.epsg or crs) if crs is not None else None


def pixel_area_m2(geobox: GeoBox) -> float:
    """Nominal area of one pixel of a projected grid, in square metres."""
    if geobox.crs is None or geobox.crs.geographic:
        raise ValueError("pixel_area_m2 needs a projected grid; use EQUAL_AREA_CRS for areas")
    return abs(geobox.affine.a * geobox.affine.e - geobox.affine.b * geobox.affine.d)


def _project_point(lon: float, lat: float, crs: CRS) -> tuple[float, float]:
    from odc.geo.geom import point

    projected = point(lon, lat, "EPSG:4326").to_crs(crs)
    x, y = projected.coords[0]
    return float(x), float(y)
