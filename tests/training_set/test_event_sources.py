"""Event sources beyond the GFC components: hectare minimum, 5 km tiles, vector files."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.training_set.event_vectors import events_from_vector
from pipeline.training_set.events import (
    EVENT_COLUMNS,
    TILE_DEGREES,
    TILE_GRID,
    EventInputError,
    area_ha,
    events_from_forestnet_csvs,
    loss_regions,
    snap_to_tiles,
)

RES = 0.00025
# A window whose tile edges (multiples of 0.045 degrees) cut through it: 113.49 and -1.98.
WEST, NORTH = 113.46, -1.95
SIZE = 240
TRANSFORM = Affine(RES, 0.0, WEST, 0.0, -RES, NORTH)
BOUNDS = (WEST, NORTH - SIZE * RES, WEST + SIZE * RES, NORTH)
EDGE_COL = round((113.49 - WEST) / RES)  # first column of the next tile (120)
EDGE_ROW = round((NORTH - -1.98) / RES)  # first row of the next tile (120)


@pytest.fixture(scope="module")
def lossyear(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = np.zeros((SIZE, SIZE), np.uint8)
    data[10:20, 10:20] = 14  # 100 px in tile A
    data[40:43, 40:43] = 14  # 9 px in tile A: a second component
    data[10:20, EDGE_COL - 5:EDGE_COL + 5] = 14  # one component cut by the tile edge
    data[EDGE_ROW + 30:EDGE_ROW + 34, 30:34] = 14  # 16 px, tile below A
    data[60:62, 60:62] = 14  # 4 px speck: below min_pixels, never grouped
    data[80:90, 80:90] = 15  # another year in tile A
    path = tmp_path_factory.mktemp("gfc") / "lossyear.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                       dtype="uint8", crs="EPSG:4326", transform=TRANSFORM) as dst:
        dst.write(data, 1)
    return path


# --- hectares -----------------------------------------------------------------------------------


def test_area_is_measured_in_the_equal_area_crs(lossyear: Path) -> None:
    events = loss_regions(lossyear, BOUNDS, [2014])
    assert list(events.columns) == EVENT_COLUMNS
    expected = events.geometry.to_crs(EQUAL_AREA_CRS.epsg).area / 1e4
    np.testing.assert_allclose(events["area_ha"], expected)
    # A GFC pixel here is ~27.8 m x 27.8 m: 0.077 ha.
    np.testing.assert_allclose(events["area_ha"] / events["n_pixels"], 0.0772, rtol=0.01)


def test_min_event_ha_drops_small_events(lossyear: Path) -> None:
    every = loss_regions(lossyear, BOUNDS, [2014])
    assert sorted(every["n_pixels"]) == [9, 16, 100, 100]
    big = loss_regions(lossyear, BOUNDS, [2014], min_ha=1.0)  # 9 px = 0.7 ha, 16 px = 1.2 ha
    assert sorted(big["n_pixels"]) == [16, 100, 100]
    assert (big["area_ha"] >= 1.0).all()
    assert loss_regions(lossyear, BOUNDS, [2014], min_ha=1e6).empty


def tile_index(lon: float, lat: float) -> tuple[int, int]:
    """The tile holding a point, by hand: the oracle for the GridSpec-based grouping."""
    return math.floor(lon / TILE_DEGREES), math.floor(lat / TILE_DEGREES)


# --- tiles --------------------------------------------------------------------------------------


def test_tiles_come_from_the_gridspec() -> None:
    assert tile_index(113.4901, -1.9799) == (2522, -44)
    box_ = TILE_GRID.tile_geobox((2522, -44)).boundingbox
    assert box_.left == pytest.approx(2522 * TILE_DEGREES)
    assert box_.bottom == pytest.approx(-44 * TILE_DEGREES)
    assert box_.right - box_.left == pytest.approx(TILE_DEGREES)
    grown = snap_to_tiles((113.50, -1.96, 113.51, -1.95))
    assert grown == pytest.approx((113.49, -1.98, 113.535, -1.935))


def test_tile_grouping_makes_one_event_per_tile_and_year(lossyear: Path) -> None:
    events = loss_regions(lossyear, BOUNDS, [2014, 2015], group="tile")
    tiles = [tile_index(*_interior_point(g)) for g in events.geometry]
    assert len(set(zip(tiles, events["loss_year"], strict=True))) == len(events)
    by_tile = {(t, y): n for t, y, n in zip(tiles, events["loss_year"], events["n_pixels"],
                                            strict=True)}
    a = tile_index(WEST + 0.001, NORTH - 0.001)
    right, below = (a[0] + 1, a[1]), (a[0], a[1] - 1)
    # Tile A: the 100 px and 9 px components and the west half of the cut one; the speck
    # (under min_pixels) is dropped before grouping.
    assert by_tile[(a, 2014)] == 100 + 9 + 50
    assert by_tile[(right, 2014)] == 50
    assert by_tile[(below, 2014)] == 16
    assert by_tile[(a, 2015)] == 100
    assert len(events) == 4
    for geom, t in zip(events.geometry, tiles, strict=True):
        assert TILE_GRID.tile_geobox(t).extent.geom.buffer(1e-9).contains(geom)
    a_2014 = events.geometry[[(t, y) == (a, 2014) for t, y in zip(tiles, events["loss_year"],
                                                                   strict=True)]].iloc[0]
    assert isinstance(a_2014, MultiPolygon) and len(a_2014.geoms) == 3


def test_tile_events_do_not_depend_on_the_window(lossyear: Path) -> None:
    whole = loss_regions(lossyear, BOUNDS, [2014], group="tile")
    corner = (WEST + 0.001, NORTH - 0.002, WEST + 0.002, NORTH - 0.001)  # inside tile A
    part = loss_regions(lossyear, corner, [2014], group="tile")
    assert set(part["event_id"]) <= set(whole["event_id"])
    assert whole.set_index("event_id").loc[part["event_id"], "n_pixels"].tolist() == [159]


def test_csv_events_with_tile_grouping(lossyear: Path, tmp_path: Path) -> None:
    lon, lat = WEST + 15.5 * RES, NORTH - 15.5 * RES
    csv = tmp_path / "train.csv"
    csv.write_text("label,merged_label,latitude,longitude,year,example_path\n"
                   f"Mining,Other,{lat},{lon},2014,examples/a\n")
    events, problems = events_from_forestnet_csvs({"train": csv}, lossyear, search_m=300,
                                                  group="tile")
    assert problems == [] and events["n_pixels"].tolist() == [159]
    assert events["label"].tolist() == ["Mining"]


def _interior_point(geom) -> tuple[float, float]:
    p = geom.representative_point()
    return p.x, p.y


# --- vector files -------------------------------------------------------------------------------

LON, LAT = 113.55, -1.95
SQUARE = box(LON, LAT, LON + 0.01, LAT + 0.01)  # ~123 ha
BOWTIE = Polygon([(LON, LAT), (LON + 0.01, LAT + 0.01), (LON + 0.01, LAT), (LON, LAT + 0.01)])


def _frame(crs: str = "EPSG:4326") -> gpd.GeoDataFrame:
    geoms = [SQUARE, BOWTIE, None, Polygon(), LineString([(LON, LAT), (LON + 0.01, LAT)]),
             box(LON + 0.02, LAT, LON + 0.021, LAT + 0.001),  # ~1.2 ha
             box(LON + 0.05, LAT, LON + 0.06, LAT + 0.01),
             box(LON + 0.07, LAT, LON + 0.08, LAT + 0.01),
             box(LON + 0.09, LAT, LON + 0.1, LAT + 0.01)]
    frame = gpd.GeoDataFrame({
        "yr": [2014, 2015, 2015, 2015, 2015, 2016, 2013, 2014, 2015],
        "driver": ["Oil palm plantation", "Mining", "Mining", "Mining", "Mining", "Logging",
                   "Banana farm", "Fish pond", "Timber plantation"],
        "subset": ["train", "val", "test", "train", "train", "test", "train", "nope", "val"],
    }, geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"), crs="EPSG:4326")
    return frame.to_crs(crs)


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet"])
def test_vector_events_refuse_bad_features_by_name(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"events{suffix}"
    frame = _frame("EPSG:32749")  # UTM: reprojected to EPSG:4326
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_file(path)
    events, problems = events_from_vector(path, "yr", "driver", "subset", min_ha=5.0)
    assert list(events.columns) == EVENT_COLUMNS and events.crs.to_epsg() == 4326
    assert set(events["source"]) == {"vector"}
    assert sorted(events["loss_year"]) == [2014, 2015]  # the square and the last box
    square = events.set_index("loss_year").loc[2014]
    assert square["merged_label"] == "Plantation" and square["split"] == "train"
    assert square.geometry.symmetric_difference(SQUARE).area < 1e-12
    assert events.set_index("loss_year").loc[2015, "split"] == "val"
    assert len(problems) == 7 and all(str(path) in p for p in problems)
    first = 1 if suffix == ".gpkg" else 0  # GPKG feature ids start at 1
    what = "row" if suffix == ".parquet" else "feature"
    for k, reason in [(1, "invalid geometry (Self-intersection"), (2, "no geometry"),
                      (4, "LineString"), (5, "below min_event_ha"), (6, "Banana farm"),
                      (7, "not one of")]:
        assert any(f"{what} {k + first}: " in p and reason in p for p in problems), (k, problems)
    assert any(f"{what} {3 + first}: " in p and "geometry" in p for p in problems)


def test_shapefile_events(tmp_path: Path) -> None:
    path = tmp_path / "events.shp"
    gpd.GeoDataFrame({"year": [2014, 2015]}, geometry=[SQUARE, BOWTIE],
                     crs="EPSG:4326").to_file(path)
    events, problems = events_from_vector(path, year_column="year")
    assert events["loss_year"].tolist() == [2014]
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}, feature 1: invalid geometry (Self-intersection")


def test_vector_without_labels_or_crs(tmp_path: Path) -> None:
    path = tmp_path / "plain.gpkg"
    gpd.GeoDataFrame({"loss_year": [2015]}, geometry=[SQUARE], crs="EPSG:4326").to_file(path)
    events, problems = events_from_vector(path)
    assert problems == [] and events["label"].tolist() == [""]
    assert events["split"].tolist() == [""]
    assert events["area_ha"].iloc[0] == pytest.approx(area_ha(events.geometry)[0])
    with pytest.raises(EventInputError, match="no column") as info:
        events_from_vector(path, year_column="year")
    assert "loss_year" in str(info.value)
    nocrs = tmp_path / "nocrs.parquet"
    gpd.GeoDataFrame({"loss_year": [2015]}, geometry=[Point(0, 0).buffer(1)]).to_parquet(nocrs)
    with pytest.raises(EventInputError, match="no CRS"):
        events_from_vector(nocrs)
