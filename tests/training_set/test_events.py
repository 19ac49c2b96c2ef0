"""Tests for forest-loss events: GFC lossyear components and ForestNet-schema CSVs."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from pyproj import Geod
from shapely.geometry import Point, box

from pipeline.training_set.events import (
    EVENT_COLUMNS,
    EventInputError,
    events_from_forestnet_csvs,
    loss_regions,
    read_events,
    read_forestnet_csvs,
    write_events,
)

RES = 0.00025  # GFC pixel size in degrees (about 28 m)
WEST, NORTH = 113.0, -1.0  # Kalimantan Tengah
SIZE = 200
BOUNDS = (WEST, NORTH - SIZE * RES, WEST + SIZE * RES, NORTH)
TRANSFORM = Affine(RES, 0.0, WEST, 0.0, -RES, NORTH)
GEOD = Geod(ellps="WGS84")

#: Blobs painted into the raster: name -> (loss year, [(row0, row1, col0, col1) half-open]).
BLOBS: dict[str, tuple[int, list[tuple[int, int, int, int]]]] = {
    "square": (2014, [(10, 14, 10, 14)]),  # 16 px
    # Two 3x3 groups touching only at one corner: one 8-connected component of 18 px.
    "diagonal": (2014, [(30, 33, 30, 33), (33, 36, 33, 36)]),
    "speck": (2014, [(60, 61, 60, 62)]),  # 2 px, below min_pixels
    # Different years side by side: two events, not one.
    "touch_2014": (2014, [(80, 85, 80, 85)]),  # 25 px
    "touch_2015": (2015, [(80, 85, 85, 90)]),  # 25 px
    "strip_2015": (2015, [(120, 123, 120, 124)]),  # 12 px
    "other_year": (2016, [(150, 160, 150, 160)]),  # never asked for below
}
EXPECTED = {  # kept events: name -> (year, pixels)
    "square": (2014, 16),
    "diagonal": (2014, 18),
    "touch_2014": (2014, 25),
    "touch_2015": (2015, 25),
    "strip_2015": (2015, 12),
}


def _pixel_box(row0: int, row1: int, col0: int, col1: int):
    return box(WEST + col0 * RES, NORTH - row1 * RES, WEST + col1 * RES, NORTH - row0 * RES)


def _blob_centre(name: str) -> tuple[float, float]:
    """(lon, lat) of the centre of a blob's first rectangle."""
    row0, row1, col0, col1 = BLOBS[name][1][0]
    c = _pixel_box(row0, row1, col0, col1).centroid
    return c.x, c.y


def _geodesic_area(geometry) -> float:
    return abs(GEOD.geometry_area_perimeter(geometry)[0])


def _write_lossyear(path: Path, data: np.ndarray, **profile: object) -> Path:
    meta = {
        "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
        "dtype": data.dtype.name, "crs": "EPSG:4326", "transform": TRANSFORM, "nodata": None,
        **profile,
    }
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data, 1)
    return path


@pytest.fixture(scope="module")
def lossyear(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for year, rects in BLOBS.values():
        for row0, row1, col0, col1 in rects:
            data[row0:row1, col0:col1] = year - 2000
    return _write_lossyear(tmp_path_factory.mktemp("gfc") / "lossyear.tif", data)


@pytest.fixture(scope="module")
def regions(lossyear: Path) -> gpd.GeoDataFrame:
    return loss_regions(lossyear, BOUNDS, [2015, 2014, 2014])


def _match(regions: gpd.GeoDataFrame, name: str) -> pd.Series:
    """The single region holding a blob's centre."""
    hit = regions[regions.contains(Point(*_blob_centre(name)))]
    assert len(hit) == 1, name
    return hit.iloc[0]


# --- loss_regions ------------------------------------------------------------------------------


def test_counts_per_year(regions: gpd.GeoDataFrame) -> None:
    assert list(regions.columns) == EVENT_COLUMNS
    assert regions.crs.to_epsg() == 4326
    assert regions["loss_year"].value_counts().to_dict() == {2014: 3, 2015: 2}
    assert set(regions["source"]) == {"gfc"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_blob_is_one_event(regions: gpd.GeoDataFrame, name: str) -> None:
    year, pixels = EXPECTED[name]
    event = _match(regions, name)
    assert event["loss_year"] == year
    assert event["n_pixels"] == pixels
    # The polygon is exactly the blob's pixels.
    blob = gpd.GeoSeries([_pixel_box(*r) for r in BLOBS[name][1]]).union_all()
    assert event.geometry.is_valid
    assert event.geometry.symmetric_difference(blob).area < 1e-12
    # Its geodesic area is the pixel count times the area of one pixel at this latitude.
    lat = _blob_centre(name)[1]
    one_pixel = _geodesic_area(box(WEST, lat - RES / 2, WEST + RES, lat + RES / 2))
    assert _geodesic_area(event.geometry) == pytest.approx(pixels * one_pixel, rel=1e-3)


def test_speck_and_unrequested_years_are_dropped(regions: gpd.GeoDataFrame) -> None:
    for name in ("speck", "other_year"):
        assert not regions.intersects(Point(*_blob_centre(name))).any(), name


def test_min_pixels(lossyear: Path) -> None:
    everything = loss_regions(lossyear, BOUNDS, [2014], min_pixels=1)
    assert sorted(everything["n_pixels"]) == [2, 16, 18, 25]
    big = loss_regions(lossyear, BOUNDS, [2014], min_pixels=17)
    assert sorted(big["n_pixels"]) == [18, 25]


def test_event_ids_are_stable_and_unique(lossyear: Path, regions: gpd.GeoDataFrame) -> None:
    assert regions["event_id"].is_unique
    again = loss_regions(lossyear, BOUNDS, [2014, 2015])
    assert list(again["event_id"]) == list(regions["event_id"])
    # Other windows over the same pixels (tiles of a larger area) name the events the same.
    for first in (1, 3, 5, 7, 9):
        window = (WEST + first * RES, NORTH - 130 * RES, WEST + 130 * RES, NORTH - first * RES)
        shifted = loss_regions(lossyear, window, [2014, 2015])
        assert list(shifted["event_id"]) == list(regions["event_id"]), first
    for event_id in regions["event_id"]:
        year, lat, lon = event_id.split("_")
        event = regions.set_index("event_id").loc[event_id]
        assert int(year) == event["loss_year"]
        assert event.geometry.buffer(1e-5).contains(Point(float(lon), float(lat)))


def test_window_clips_to_bounds(lossyear: Path) -> None:
    only_square = (WEST, NORTH - 20 * RES, WEST + 20 * RES, NORTH)
    found = loss_regions(lossyear, only_square, [2014, 2015])
    assert list(found["n_pixels"]) == [16]
    assert loss_regions(lossyear, (100.0, -5.0, 100.1, -4.9), [2014]).empty
    empty = loss_regions(lossyear, BOUNDS, [2019])
    assert empty.empty and list(empty.columns) == EVENT_COLUMNS


def test_float_lossyear_is_refused(tmp_path: Path) -> None:
    path = _write_lossyear(tmp_path / "lossyear_f32.tif", np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(EventInputError, match="float32") as info:
        loss_regions(path, BOUNDS, [2014])
    assert str(path) in str(info.value)


def test_lossyear_without_crs_is_refused(tmp_path: Path) -> None:
    path = _write_lossyear(tmp_path / "lossyear_nocrs.tif", np.zeros((8, 8), np.uint8), crs=None)
    with pytest.raises(EventInputError, match="no CRS") as info:
        loss_regions(path, BOUNDS, [2014])
    assert str(path) in str(info.value)


# --- ForestNet CSVs ------------------------------------------------------------------------------


def _csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(label: str, merged: str, lon: float, lat: float, year: int, name: str) -> dict:
    return {
        "label": label, "merged_label": merged, "latitude": lat, "longitude": lon,
        "year": year, "example_path": f"examples/{name}",
    }


def test_read_forestnet_csvs(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [
        _row("Oil palm plantation", "Plantation", 113.0, -1.0, 2014, "a"),
        _row("Small-scale agriculture", "Smallholder agriculture", 113.0, -1.0, 2015, "b"),
    ])
    test = _csv(tmp_path / "test.csv", [_row("Mining", "Other", 113.0, -1.0, 2014, "c")])
    table = read_forestnet_csvs({"train": train, "test": test})
    assert list(table["split"]) == ["train", "train", "test"]
    assert list(table["merged_label"]) == ["Plantation", "Smallholder agriculture", "Other"]
    assert list(table["label"]) == ["Oil palm plantation", "Small-scale agriculture", "Mining"]
    assert read_forestnet_csvs({}).empty


def test_csv_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "val.csv"
    pd.DataFrame({"label": ["Mining"], "latitude": [-1.0]}).to_csv(path, index=False)
    with pytest.raises(EventInputError, match="missing columns") as info:
        read_forestnet_csvs({"val": path})
    assert str(path) in str(info.value) and "merged_label" in str(info.value)


def test_csv_unknown_label_names_file_and_row(tmp_path: Path) -> None:
    path = _csv(tmp_path / "train.csv", [
        _row("Mining", "Other", 113.0, -1.0, 2014, "a"),
        _row("Banana farm", "Other", 113.0, -1.0, 2014, "b"),
    ])
    with pytest.raises(EventInputError, match="Banana farm") as info:
        read_forestnet_csvs({"train": path})
    # The bad record is on line 3 of the file (line 1 is the header).
    assert f"{path}, row 3" in str(info.value)


def test_csv_label_in_the_wrong_merged_class(tmp_path: Path) -> None:
    path = _csv(tmp_path / "train.csv", [_row("Mining", "Plantation", 113.0, -1.0, 2014, "a")])
    with pytest.raises(EventInputError, match="does not merge") as info:
        read_forestnet_csvs({"train": path})
    assert f"{path}, row 2" in str(info.value)


def test_csv_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(EventInputError, match="cannot read CSV") as info:
        read_forestnet_csvs({"train": path})
    assert str(path) in str(info.value)


def test_events_from_csvs(tmp_path: Path, lossyear: Path, regions: gpd.GeoDataFrame) -> None:
    lon, lat = _blob_centre("diagonal")
    empty_lon, empty_lat = WEST + 190 * RES, NORTH - 190 * RES
    path = _csv(tmp_path / "train.csv", [
        _row("Timber plantation", "Plantation", lon, lat, 2014, "on_loss"),
        _row("Grassland shrubland", "Grassland shrubland", empty_lon, empty_lat, 2015, "no_loss"),
        _row("Logging", "Other", lon, lat, 2013, "wrong_year"),
    ])
    events, problems = events_from_forestnet_csvs({"train": path}, lossyear, search_m=500.0)
    assert len(events) == 1
    event = events.iloc[0]
    assert (event["label"], event["merged_label"], event["split"]) == (
        "Timber plantation", "Plantation", "train"
    )
    assert (event["loss_year"], event["n_pixels"], event["source"]) == (2014, 18, "forestnet_csv")
    # The same pixels as found over the whole raster (up to float noise from the window).
    assert event.geometry.symmetric_difference(_match(regions, "diagonal").geometry).area < 1e-12
    assert event["event_id"].startswith("2014_")
    assert events.crs.to_epsg() == 4326 and list(events.columns) == EVENT_COLUMNS
    assert len(problems) == 2
    assert any("examples/no_loss" in p and "2015" in p for p in problems)
    assert any("examples/wrong_year" in p and "2013" in p for p in problems)


def test_events_from_csvs_picks_the_nearest_region(tmp_path: Path, lossyear: Path) -> None:
    # Just outside the 2014 square, one pixel to its east: the square is the nearest region.
    row0, row1, col0, col1 = BLOBS["square"][1][0]
    lon = WEST + (col1 + 0.5) * RES
    lat = NORTH - (row0 + 1.5) * RES
    path = _csv(tmp_path / "val.csv", [_row("Mining", "Other", lon, lat, 2014, "near")])
    events, problems = events_from_forestnet_csvs({"val": path}, lossyear, search_m=500.0)
    assert problems == []
    assert list(events["n_pixels"]) == [16]


# --- Areas and files ---------------------------------------------------------------------------



def test_write_and_read_events(regions: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = write_events(regions, tmp_path / "events.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["events.parquet"]
    back = read_events(path)
    assert list(back.columns) == EVENT_COLUMNS and back.crs.to_epsg() == 4326
    assert list(back["event_id"]) == list(regions["event_id"])
    assert back.geometry.geom_equals(regions.geometry).all()
