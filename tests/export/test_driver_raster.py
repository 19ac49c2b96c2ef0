"""Tests for the driver COG: layout, metadata, nodata, and areas that match the polygons."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.features import geometry_mask

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_COLOURS
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.export.driver_raster import (
    BAND_DESCRIPTIONS,
    BLOCK_SIZE,
    NODATA,
    driver_raster_grid,
    write_driver_cog,
)
from tests.mapped_features import NO_IMAGERY, make_features, utm_squares

# Two clusters 20 km apart make the raster wider than one COG tile, so it gets overviews
# and is rasterised in several strips (the squares straddle strip edges too).
# Squares of 1 km or more: a 30 m grid then measures each class within 3 %.
SQUARES = [
    (600_000, 60_000, 1_200), (601_500, 60_200, 1_500), (603_000, 59_000, 1_050),
    (605_000, 61_000, 1_350), (620_000, 78_000, 1_800), (622_000, 77_000, 900),
    (618_000, 72_000, 660),
]
DRIVERS = [*DRIVER_CLASSES, "Plantation", "Other", NO_IMAGERY]
CONFIDENCE = [0.55, 0.705, 0.9, 0.314, 0.999, 0.5, 0.8]


@pytest.fixture(scope="module")
def features():
    return make_features(utm_squares(SQUARES), DRIVERS, confidence=CONFIDENCE)


@pytest.fixture(scope="module")
def cog(features, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cog")
    path = write_driver_cog(features, folder / "riau_drivers.tif")
    assert sorted(p.name for p in folder.iterdir()) == ["riau_drivers.tif"]  # no staging left
    return path


def test_cog_layout_bands_and_nodata(cog):
    with rasterio.open(cog) as src:
        profile = src.profile
        assert (profile["count"], profile["dtype"], profile["nodata"]) == (2, "uint8", NODATA)
        assert src.nodatavals == (NODATA, NODATA)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert profile["tiled"] and src.block_shapes == [(BLOCK_SIZE, BLOCK_SIZE)] * 2
        assert profile["compress"] == "deflate"
        assert src.width > BLOCK_SIZE and src.height > BLOCK_SIZE
        assert src.overviews(1) and src.overviews(1) == src.overviews(2)
        assert src.descriptions == BAND_DESCRIPTIONS
        assert src.units[1] == "percent"
        assert src.crs.to_epsg() == EQUAL_AREA_CRS.epsg
        assert src.res == (30.0, 30.0)
        # Pixel edges on multiples of the resolution, so rasters of any run line up.
        assert src.transform.c % 30 == 0 and src.transform.f % 30 == 0


def test_class_codes_and_colours_travel_with_the_file(cog):
    with rasterio.open(cog) as src:
        tags, band_tags, palette = src.tags(), src.tags(1), src.colormap(1)
    for code, name in enumerate(DRIVER_CLASSES, start=1):
        assert tags[f"DRIVER_CODE_{code}"] == name == band_tags[f"DRIVER_CODE_{code}"]
        rgb = tuple(int(DRIVER_COLOURS[name][i : i + 2], 16) for i in (1, 3, 5))
        assert palette[code] == (*rgb, 255)
    assert palette[NODATA][3] == 0  # transparent


def test_pixel_area_per_class_matches_the_polygon_area(cog, features):
    with rasterio.open(cog) as src:
        codes = src.read(1)
        pixel_m2 = abs(src.transform.a * src.transform.e)
    areas = features.to_crs(EQUAL_AREA_CRS.proj).area
    for code, name in enumerate(DRIVER_CLASSES, start=1):
        expected = areas[features["driver"] == name].sum()
        assert (codes == code).sum() * pixel_m2 == pytest.approx(expected, rel=0.03), name
    mapped = areas[features["driver_code"] > 0].sum()
    assert (codes > 0).sum() * pixel_m2 == pytest.approx(mapped, rel=0.01)
    assert set(np.unique(codes)) == {0, 1, 2, 3, 4}


def test_confidence_band_shares_the_footprint_and_holds_percent(cog, features):
    with rasterio.open(cog) as src:
        codes, confidence = src.read(1), src.read(2)
        transform, shape = src.transform, src.shape
    assert np.array_equal(codes == NODATA, confidence == NODATA)
    projected = features.to_crs(EQUAL_AREA_CRS.proj)
    for row in projected.itertuples():
        inside = ~geometry_mask([row.geometry], shape, transform)
        if row.driver == NO_IMAGERY:
            assert (codes[inside] == NODATA).all()  # no imagery is not burned
            continue
        assert (codes[inside] == row.driver_code).all()
        assert (confidence[inside] == round(row.confidence * 100)).all()


def test_overviews_keep_small_events_visible(cog):
    with rasterio.open(cog) as src:
        factor = src.overviews(1)[-1]
        coarse = src.read(1, out_shape=(src.height // factor, src.width // factor))
    assert set(np.unique(coarse)) == {0, 1, 2, 3, 4}


def test_given_grid_fixes_the_footprint_even_without_events(features, tmp_path):
    grid = driver_raster_grid(features, 60.0)
    assert isinstance(grid, GeoBox)
    empty = write_driver_cog(features.iloc[:0], tmp_path / "empty.tif", grid=grid)
    with rasterio.open(empty) as src:
        assert src.shape == grid.shape.yx and src.transform == grid.affine
        assert (src.read() == NODATA).all()
    with pytest.raises(ValueError, match="grid="):
        write_driver_cog(features.iloc[:0], tmp_path / "none.tif")


def test_a_rewrite_replaces_the_old_file(features, tmp_path):
    path = tmp_path / "d.tif"
    write_driver_cog(features.iloc[:1], path)
    write_driver_cog(features, path)
    with rasterio.open(path) as src:
        assert set(np.unique(src.read(1))) == {0, 1, 2, 3, 4}
    assert [p.name for p in tmp_path.iterdir()] == ["d.tif"]
