"""Tests for the grid constructors: UTM zones (USGS's 326zz), centred chip grids, areas."""

from __future__ import annotations

import pytest
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Geod, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

from pipeline.core.grid import (
    CHIP_RESOLUTION,
    CHIP_SIZE,
    centred_geobox,
    grid_key,
    pixel_area_m2,
    utm_crs,
    zone_crs,
)

GEOD = Geod(ellps="WGS84")

#: Points across Indonesia, west to east, both hemispheres, with the WGS 84 / UTM codes of
#: their zones as PROJ names them by hemisphere (327zz south of the equator).
INDONESIA_POINTS = [
    ("Aceh", 95.3, 5.5, 32646),
    ("Sumatera Barat", 100.4, -0.9, 32747),
    ("Riau", 101.4, 0.5, 32647),
    ("Jawa Barat", 107.6, -6.9, 32748),
    ("Kalimantan Tengah", 113.5, -1.9, 32749),
    ("Kalimantan Utara", 116.9, 3.0, 32650),
    ("Sulawesi Tengah", 121.0, -1.4, 32751),
    ("Sulawesi Utara", 124.8, 1.4, 32651),
    ("Maluku", 128.2, -3.7, 32752),
    ("Papua Barat", 134.1, -0.9, 32753),
    ("Papua", 140.7, -2.5, 32754),
]


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


@pytest.mark.parametrize(("place", "lon", "lat", "epsg"), INDONESIA_POINTS)
def test_utm_crs_is_the_zones_northern_form_as_usgs_delivers_landsat(
    place: str, lon: float, lat: float, epsg: int
) -> None:
    # PROJ lists the UTM CRSs whose area of use holds the point; ours is that zone's
    # northern form, with negative northings south of the equator.
    infos = query_utm_crs_info(datum_name="WGS 84",
                               area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    assert str(epsg) in {info.code for info in infos}, place
    assert utm_crs(lon).epsg == 32600 + epsg % 100, place
    y = Transformer.from_crs(4326, utm_crs(lon).epsg, always_xy=True).transform(lon, lat)[1]
    assert (y < 0) == (lat < 0), place


def test_utm_crs_zone_edges() -> None:
    assert utm_crs(-180.0).epsg == 32601
    assert utm_crs(180.0).epsg == 32660  # the antimeridian belongs to zone 60, not 61
    assert utm_crs(96.0).epsg == 32647  # 96E starts zone 47, as on the map lattice
    assert utm_crs(95.999).epsg == 32646
    with pytest.raises(ValueError, match="outside"):
        utm_crs(181.0)
    with pytest.raises(ValueError, match="outside"):
        zone_crs(61)


def test_grid_key_stands_for_the_grid() -> None:
    box = centred_geobox(113.5, -1.9)
    assert grid_key(box) == ((332, 332), box.affine, 32649)
    assert grid_key(box) == grid_key(centred_geobox(113.5, -1.9))
    assert grid_key(box) != grid_key(centred_geobox(113.5, -1.8))


@pytest.mark.parametrize(("place", "lon", "lat", "epsg"), INDONESIA_POINTS)
def test_centred_geobox_is_a_forestnet_chip(place: str, lon: float, lat: float, epsg: int) -> None:
    box = centred_geobox(lon, lat)
    epsg = 32600 + epsg % 100  # the zone's northern form, as the scenes are
    assert isinstance(box, GeoBox)
    assert box.shape == (332, 332) == (CHIP_SIZE, CHIP_SIZE)
    assert box.crs == CRS(f"EPSG:{epsg}")
    assert box.affine.a == pytest.approx(15.0) and box.affine.e == pytest.approx(-15.0)
    assert box.affine.b == 0.0 and box.affine.d == 0.0
    assert CHIP_RESOLUTION == 15.0

    # The centre of pixel (row 166, col 166) projects back onto the input point.
    x, y = box.affine @ (166 + 0.5, 166 + 0.5)
    to_lonlat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    back_lon, back_lat = to_lonlat.transform(x, y)
    assert _distance_m(lon, lat, back_lon, back_lat) < 0.01, place


def test_centred_geobox_centre_splits_the_chip() -> None:
    box = centred_geobox(113.5, -1.9)
    # 166 pixels west/north of the centre pixel, 165 east/south: pixel 166 is the centre one.
    x, y = box.affine @ (166.5, 166.5)
    left, bottom, right, top = box.boundingbox
    assert x - left == pytest.approx(166.5 * 15.0)
    assert right - x == pytest.approx(165.5 * 15.0)
    assert top - y == pytest.approx(166.5 * 15.0)
    assert y - bottom == pytest.approx(165.5 * 15.0)


@pytest.mark.parametrize("crs", [32750, "EPSG:32750", CRS("EPSG:32750")])
def test_centred_geobox_honours_explicit_crs(crs: object) -> None:
    # Kalimantan Tengah is in zone 49; the caller asks for zone 50's southern form.
    lon, lat = 113.5, -1.9
    box = centred_geobox(lon, lat, crs=crs)
    assert box.crs == CRS("EPSG:32750")
    x, y = box.affine @ (166.5, 166.5)
    back = Transformer.from_crs("EPSG:32750", "EPSG:4326", always_xy=True).transform(x, y)
    assert _distance_m(lon, lat, *back) < 0.01


def test_centred_geobox_size_and_resolution_arguments() -> None:
    lon, lat = 101.4, 0.5
    box = centred_geobox(lon, lat, size=64, resolution=30.0)
    assert box.shape == (64, 64)
    assert box.affine.a == 30.0 and box.affine.e == -30.0
    x, y = box.affine @ (32.5, 32.5)
    back = Transformer.from_crs("EPSG:32647", "EPSG:4326", always_xy=True).transform(x, y)
    assert _distance_m(lon, lat, *back) < 0.01


def test_pixel_area_m2() -> None:
    assert pixel_area_m2(centred_geobox(113.5, -1.9)) == pytest.approx(225.0)
    non_square = GeoBox((10, 10), Affine(10.0, 0.0, 500000.0, 0.0, -20.0, 0.0), "EPSG:32749")
    assert pixel_area_m2(non_square) == pytest.approx(200.0)


def test_pixel_area_m2_refuses_geographic_grid() -> None:
    geographic = GeoBox((10, 10), Affine(0.00025, 0.0, 113.0, 0.0, -0.00025, -1.0), "EPSG:4326")
    with pytest.raises(ValueError, match="projected"):
        pixel_area_m2(geographic)
