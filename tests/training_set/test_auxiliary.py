"""Auxiliary predictors of a chip: terrain, NDVI, distances, and missing sources."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import LineString, Point, box
from shapely.ops import transform as shapely_transform

from pipeline.core.grid import centred_geobox
from pipeline.imagery.views import (
    CHIP_BANDS,
)
from pipeline.training_set.auxiliary import (
    AUX_BANDS,
    AUX_SCALARS,
    MAX_DISTANCE_KM,
    AuxSources,
    aux_for_chip,
    slope_aspect,
)
from tests.training_set.tiny_world_grid import AUX_LAT, AUX_LON, TO_UTM, world_aux_sources

# --- predictors on small synthetic grids ----------------------------------------------------


AUX_SIZE = 40


@pytest.fixture(scope="module")
def aux_geobox():
    return centred_geobox(AUX_LON, AUX_LAT, size=AUX_SIZE, resolution=15.0)


def _write_plane(path: Path, geobox, gx: float, gy: float) -> Path:
    """A 30 m DEM in the chip's CRS: z = 100 + gx * (x - x0) + gy * (y - y0) (metres)."""
    x0, y0 = geobox.affine.c - 600.0, geobox.affine.f + 600.0
    n = 60  # 1.8 km: the 0.6 km chip plus 0.6 km on every side
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    x, y = x0 + 30.0 * cols, y0 - 30.0 * rows
    z = (100.0 + gx * (x - x0) + gy * (y - y0)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                       crs=geobox.crs.to_wkt(), transform=Affine(30.0, 0, x0, 0, -30.0, y0)) as dst:
        dst.write(z, 1)
    return path


@pytest.mark.parametrize(
    ("gx", "gy", "facing"),
    # Aspect is the compass direction the slope faces (downhill), as in gdaldem and ArcGIS.
    [(-0.2, 0.0, 90.0), (0.2, 0.0, 270.0), (0.0, 0.2, 180.0), (0.0, -0.2, 0.0),
     (0.1, 0.1, 225.0)],
)
def test_slope_and_aspect_of_a_tilted_plane(gx, gy, facing):
    cell = 15.0
    rows, cols = np.mgrid[0:12, 0:12]
    x, y = cols * cell, -rows * cell  # rows run southwards
    slope, aspect = slope_aspect(100.0 + gx * x + gy * y, cell)
    np.testing.assert_allclose(slope, math.degrees(math.atan(math.hypot(gx, gy))), atol=1e-4)
    delta = (aspect - facing + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(delta, 0.0, atol=1e-3)


def test_aux_terrain_from_a_dem_file(tmp_path, aux_geobox):
    dem = _write_plane(tmp_path / "dem.tif", aux_geobox, gx=-0.2, gy=0.0)  # faces east
    region = aux_geobox.extent.geom.centroid.buffer(60.0)
    mask = np.zeros(tuple(aux_geobox.shape), np.uint8)
    mask[15:25, 15:25] = 1
    comp = np.full((6, AUX_SIZE, AUX_SIZE), 0.1, np.float32)
    aux, scalars = aux_for_chip(aux_geobox, region, mask, comp, AuxSources(dem=dem))
    inner = (slice(2, -2), slice(2, -2))
    slope = aux[AUX_BANDS.index("slope")][inner]
    aspect = aux[AUX_BANDS.index("aspect")][inner]
    np.testing.assert_allclose(slope, math.degrees(math.atan(0.2)), atol=0.01)
    np.testing.assert_allclose(aspect, 90.0, atol=0.01)
    # Elevation at each pixel centre follows the plane.
    xs = aux_geobox.affine.c + 15.0 * (np.arange(AUX_SIZE) + 0.5)
    expected = 100.0 - 0.2 * (xs - (aux_geobox.affine.c - 600.0))
    elevation = aux[AUX_BANDS.index("elevation")]
    np.testing.assert_allclose(elevation[5:-5, 5:-5], np.broadcast_to(expected, elevation.shape)
                               [5:-5, 5:-5], atol=0.01)
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    assert stats["elevation_mean"] == pytest.approx(float(expected[15:25].mean()), abs=0.01)
    assert stats["slope_std"] == pytest.approx(0.0, abs=0.01)


def test_ndvi_formula(aux_geobox):
    rng = np.random.default_rng(0)
    comp = rng.uniform(0.01, 0.5, size=(6, AUX_SIZE, AUX_SIZE)).astype(np.float32)
    comp[0, 0, 0] = comp[3, 0, 0] = 0.0  # no signal: NDVI undefined
    mask = np.zeros(tuple(aux_geobox.shape), np.uint8)
    mask[10:20, 10:30] = 1
    aux, scalars = aux_for_chip(aux_geobox, aux_geobox.extent.geom, mask, comp, AuxSources())
    red, nir = comp[CHIP_BANDS.index("red")], comp[CHIP_BANDS.index("nir")]
    with np.errstate(invalid="ignore"):
        expected = (nir - red) / (nir + red)
    ndvi = aux[AUX_BANDS.index("ndvi")]
    np.testing.assert_allclose(ndvi[1:], expected[1:], rtol=1e-5)
    np.testing.assert_allclose(ndvi[0, 1:], expected[0, 1:], rtol=1e-5)
    assert np.isnan(ndvi[0, 0])
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    inside = expected[10:20, 10:30]
    assert stats["ndvi_mean"] == pytest.approx(float(inside.mean()), rel=1e-5)
    assert stats["ndvi_max"] == pytest.approx(float(inside.max()), rel=1e-5)


def test_street_and_city_distances_match_shapely_in_utm(tmp_path, aux_geobox):
    road = LineString([(AUX_LON + 0.03, AUX_LAT - 0.05), (AUX_LON + 0.02, AUX_LAT + 0.05)])
    town = Point(AUX_LON - 0.01, AUX_LAT + 0.015)
    far_town = Point(AUX_LON + 0.7, AUX_LAT)  # ~78 km: beyond the 50 km reach
    roads = tmp_path / "roads.gpkg"
    towns = tmp_path / "towns.gpkg"
    far = tmp_path / "far_towns.gpkg"
    gpd.GeoDataFrame(geometry=[road], crs="EPSG:4326").to_file(roads)
    gpd.GeoDataFrame(geometry=[town], crs="EPSG:4326").to_file(towns)
    gpd.GeoDataFrame(geometry=[far_town], crs="EPSG:4326").to_file(far)

    cx, cy = TO_UTM.transform(AUX_LON, AUX_LAT)
    region = box(cx - 100, cy - 60, cx + 80, cy + 90)  # in the chip's UTM CRS
    mask = np.ones(tuple(aux_geobox.shape), np.uint8)
    comp = np.full((6, AUX_SIZE, AUX_SIZE), 0.1, np.float32)
    _, scalars = aux_for_chip(aux_geobox, region, mask, comp,
                              AuxSources(roads=roads, settlements=towns))
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    road_utm = shapely_transform(TO_UTM.transform, road)
    town_utm = shapely_transform(TO_UTM.transform, town)
    assert stats["street_dist_km"] == pytest.approx(road_utm.distance(region) / 1000, rel=1e-4)
    assert stats["city_dist_km"] == pytest.approx(town_utm.distance(region) / 1000, rel=1e-4)
    assert 1.0 < stats["street_dist_km"] < 5.0

    _, scalars = aux_for_chip(aux_geobox, region, mask, comp, AuxSources(settlements=far))
    assert dict(zip(AUX_SCALARS, scalars, strict=True))["city_dist_km"] == MAX_DISTANCE_KM


def test_missing_sources_give_nan_not_zero(aux_geobox):
    mask = np.zeros(tuple(aux_geobox.shape), np.uint8)
    mask[5:10, 5:10] = 1
    comp = np.full((6, AUX_SIZE, AUX_SIZE), 0.2, np.float32)
    comp[3] = 0.4
    aux, scalars = aux_for_chip(aux_geobox, aux_geobox.extent.geom, mask, comp, AuxSources())
    assert aux.shape == (len(AUX_BANDS), AUX_SIZE, AUX_SIZE)
    for band in ("elevation", "slope", "aspect", "treecover2000", "peat"):
        assert np.isnan(aux[AUX_BANDS.index(band)]).all(), band
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    for name, value in stats.items():
        if name.startswith("ndvi_"):
            assert np.isfinite(value), name
        else:
            assert np.isnan(value), name
    assert stats["ndvi_mean"] == pytest.approx(0.2 / 0.6)


def test_aux_from_the_tiny_world_sources(chip, world):
    aux, scalars = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                                world_aux_sources(world))
    assert aux.shape == (len(AUX_BANDS), 332, 332)
    assert scalars.shape == (len(AUX_SCALARS),)
    centre = aux[:, 150:180, 150:180]
    assert np.isfinite(centre).all()
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    assert 0.0 <= stats["street_dist_km"] <= MAX_DISTANCE_KM
    assert 0.0 <= stats["peat_fraction"] <= 1.0
    assert np.isfinite(stats["precipitation_mm"]) and np.isfinite(stats["temperature_c"])


# --- chip store ---------------------------------------------------------------------------------
