"""The one grid type of the project: odc-geo's ``GeoBox`` (CRS, affine transform, shape).

Every raster footprint (scene, chip, tile, aux window) is a ``GeoBox``. This module holds
the few constructors the pipeline needs on top of odc-geo, so that no caller computes
bounds, zones or transforms by hand.
"""

from __future__ import annotations

import math

from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox

#: Equal-area CRS used for every area in the project (WGS 84 / NSIDC EASE-Grid 2.0 Global).
EQUAL_AREA_CRS = CRS("EPSG:6933")

#: ForestNet chips: 332 x 332 pixels at 15 m, the event at the centre of pixel (166, 166).
CHIP_SIZE = 332
CHIP_RESOLUTION = 15.0


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone holding a point (326xx north, 327xx south)."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise ValueError(f"point ({lon}, {lat}) is outside the UTM domain")
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def centred_geobox(
    lon: float,
    lat: float,
    size: int = CHIP_SIZE,
    resolution: float = CHIP_RESOLUTION,
    crs: CRS | str | int | None = None,
) -> GeoBox:
    """A ``size`` x ``size`` grid whose pixel (size // 2, size // 2) is centred on (lon, lat).

    The grid is in the point's own UTM zone unless ``crs`` is given, so chips across
    Indonesia's zones 46-54 (both hemispheres) each carry their own CRS.
    """
    target = CRS(crs) if crs is not None else CRS(f"EPSG:{utm_epsg(lon, lat)}")
    x, y = _project_point(lon, lat, target)
    half = size // 2 + 0.5
    affine = Affine(resolution, 0.0, x - half * resolution, 0.0, -resolution, y + half * resolution)
    return GeoBox((size, size), affine, target)


def geobox_from_rio(crs: object, transform: Affine, shape: tuple[int, int]) -> GeoBox:
    """Build a ``GeoBox`` from rasterio's (crs, transform, (height, width))."""
    if crs is None:
        raise ValueError("raster has no CRS; georeference it before building a grid")
    return GeoBox(shape, transform, CRS(crs))


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
