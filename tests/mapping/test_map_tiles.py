"""Map tiles, loss pieces and the seam merge, on synthetic GFC rasters at real places.

One raster straddles the Kalimantan Tengah / Kalimantan Selatan border, one the UTM zone
49/50 boundary (114 E), so the zone, tile and province rules are all exercised.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from pipeline.core.provinces import provinces
from pipeline.core.tile_lattice import HALO_PIXELS, TILE_METRES, MapTile, tile_indices, zone_of_lon
from pipeline.mapping.loss_pieces import (
    plan_blocks,
    tile_pieces,
    tiles_in_block,
    year_mask,
    years_of_mask,
)
from pipeline.mapping.piece_merge import (
    LOGIT_COLUMNS,
    driver_fields,
    drop_small_events,
    merge_pieces,
)
from pipeline.mapping.tile_plan import scan_here, tiles_with_loss
from pipeline.training_set.events import EIGHT_CONNECTED

RES = 0.00025  # GFC pixel


def write_lossyear(path: Path, west: float, north: float, data: np.ndarray,
                   nodata: int | None = None) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": "uint8", "crs": "EPSG:4326",
               "transform": Affine(RES, 0, west, 0, -RES, north), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def all_pieces(lossyear: Path, years=range(2013, 2017)) -> tuple[pd.DataFrame, gpd.GeoDataFrame]:
    tiles = pd.concat([tiles_in_block(lossyear, b, years, None)
                       for b in plan_blocks(lossyear, (-180, -90, 180, 90), block=256)])
    tiles = tiles.groupby(["zone", "row", "col"], as_index=False)["n_loss"].sum()
    pieces = [tile_pieces(lossyear, MapTile(int(z), int(r), int(c)), years, provinces())
              for z, r, c in tiles[["zone", "row", "col"]].itertuples(index=False)]
    return tiles, gpd.GeoDataFrame(pd.concat(pieces, ignore_index=True), crs="EPSG:4326")


def with_logits(pieces: gpd.GeoDataFrame, logits: np.ndarray | None = None) -> gpd.GeoDataFrame:
    out = pieces.copy()
    values = np.zeros((len(out), 4)) if logits is None else logits
    for k, column in enumerate(LOGIT_COLUMNS):
        out[column] = values[:, k]
    out["logit_weight"] = out["n_pixels"].astype(float)
    out["scene_ids"], out["scene_dates"] = "s1", "2017-06-12"
    return out


@pytest.fixture(scope="module")
def border_raster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """0.1 x 0.1 degree around a point of the KT/KS border, with loss squares and specks."""
    west, north = 114.42, -3.07
    data = np.zeros((400, 400), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(40):  # rectangles of random years, many crossing tile edges
        r, c = rng.integers(0, 360, size=2)
        h, w = rng.integers(3, 40, size=2)
        data[r:r + h, c:c + w] = rng.integers(13, 17)
    specks = rng.random(data.shape) < 0.002
    data[specks] = 15
    data[:2, :] = 20  # a year outside the requested range
    path = write_lossyear(tmp_path_factory.mktemp("gfc") / "lossyear.tif", west, north, data)
    return path, data


def test_zone_and_tile_of_points_follow_the_documented_rule() -> None:
    assert zone_of_lon(np.array([113.999, 114.0, 119.5, 95.3])).tolist() == [49, 50, 50, 46]
    zone, row, col = tile_indices(np.array([113.55]), np.array([-1.95]))
    tile = MapTile(int(zone[0]), int(row[0]), int(col[0]))
    assert tile.crs.epsg == 32649  # one northern CRS per zone, also south of the equator
    left, bottom, right, top = tile.bounds()
    assert right - left == top - bottom == TILE_METRES == 4980.0
    assert bottom < 0  # southern hemisphere: negative northing in EPSG:326zz
    box = tile.geobox()
    assert box.shape == (352, 352) and box.resolution.x == 15.0
    assert box.affine.c == left - HALO_PIXELS * 15.0 and box.affine.f == top + HALO_PIXELS * 15
    assert MapTile.from_id(tile.tile_id) == tile


def test_every_loss_pixel_lands_in_exactly_one_piece(border_raster) -> None:
    path, data = border_raster
    tiles, pieces = all_pieces(path)
    loss = int(year_mask(data, range(2013, 2017), None).sum())
    assert int(tiles["n_loss"].sum()) == loss
    assert int(pieces["n_pixels"].sum()) == loss
    assert pieces["piece_id"].is_unique
    # Pieces never overlap: the union's area equals the sum of their areas.
    metric = pieces.to_crs("EPSG:6933")
    assert metric.union_all().area == pytest.approx(metric.area.sum(), rel=1e-6)
    assert set(pieces["province"]) == {"Kalimantan Tengah", "Kalimantan Selatan"}


def test_the_plan_counts_every_loss_pixel_however_the_blocks_are_scanned(border_raster
                                                                       ) -> None:
    """``tiles_with_loss`` as `forestnet plan` runs it (here) and as the map flow does
    (through its own scanner): the same tiles and counts."""
    path, data = border_raster
    area = box(114.0, -4.0, 115.0, -2.0)
    seen = []

    def scan_backwards(lossyear, blocks, years, area):
        seen.append(len(blocks))
        return scan_here(lossyear, blocks[::-1], years, area)

    here, n_blocks = tiles_with_loss(path, area, list(range(2013, 2017)))
    other, _ = tiles_with_loss(path, area, list(range(2013, 2017)), scan_backwards)
    pd.testing.assert_frame_equal(here, other)
    assert seen == [n_blocks] and n_blocks >= 1
    assert int(here["n_loss"].sum()) == int(year_mask(data, range(2013, 2017), None).sum())
    # Each tile's loss years (what `forestnet plan` keys its composites by) are those of
    # the pieces cut from it.
    _, pieces = all_pieces(path)
    years = pieces.groupby("tile_id")["loss_year"].agg(lambda y: sorted(set(y)))
    assert {t: years_of_mask(m) for t, m in zip(here["tile_id"], here["loss_years"],
                                               strict=True)} == years.to_dict()


def test_pieces_merge_back_into_connected_regions(border_raster) -> None:
    from scipy import ndimage

    path, data = border_raster
    _, pieces = all_pieces(path)
    assert pieces["touches_edge"].any()
    events = merge_pieces(with_logits(pieces))
    assert events["event_id"].is_unique
    # Expected: 8-connected components per year, split only by the province border.
    expected = 0
    for code in range(13, 17):
        _, n = ndimage.label(data == code, structure=EIGHT_CONNECTED)
        expected += n
    split_by_border = events.groupby("loss_year")["province"].nunique().sum() > 4
    assert len(events) >= expected
    assert len(events) < len(pieces)
    if not split_by_border:
        assert len(events) == expected
    # Merging keeps every pixel and the area.
    assert int(events["n_pixels"].sum()) == int(pieces["n_pixels"].sum())
    assert events.to_crs("EPSG:6933").area.sum() == pytest.approx(
        pieces.to_crs("EPSG:6933").area.sum(), rel=1e-6)


def test_a_square_across_a_tile_edge_is_one_event_with_pixel_weighted_logits(tmp_path) -> None:
    # A tile edge near 114.45 E, -3.1 S: find it, then put a square of loss across it.
    zone, row, col = tile_indices(np.array([114.45]), np.array([-3.1]))
    tile = MapTile(int(zone[0]), int(row[0]), int(col[0]))
    west_edge = tile.lonlat_bounds()[0]
    data = np.zeros((200, 200), np.uint8)
    data[90:110, 60:140] = 14
    west, north = west_edge - 100 * RES, -3.1 + 100 * RES
    path = write_lossyear(tmp_path / "lossyear.tif", west, north, data)
    tiles, pieces = all_pieces(path)
    assert len(pieces) == 2 and pieces["touches_edge"].all()
    assert pieces["tile_id"].nunique() == 2
    logits = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    events = merge_pieces(with_logits(pieces, logits))
    assert len(events) == 1
    event = events.iloc[0]
    assert event["event_id"] == pieces["piece_id"].min()
    assert event["n_pixels"] == 1600 and event["n_pieces"] == 2
    w = pieces["n_pixels"].to_numpy(float)
    expected = (logits * w[:, None]).sum(axis=0) / w.sum()
    np.testing.assert_allclose(event[LOGIT_COLUMNS].to_numpy(float), expected)
    drivers = driver_fields(events, [[0.1, 0.6, 0.2, 0.1]])
    probs = drivers[[f"p_{k}" for k in ("plantation", "smallholder_agriculture",
                                        "grassland_shrubland", "other")]].to_numpy()
    np.testing.assert_allclose(probs, [[0.1, 0.6, 0.2, 0.1]])
    assert drivers["driver"].iloc[0] == "Smallholder agriculture"
    assert drivers["confidence"].iloc[0] == 0.6
    assert not set(LOGIT_COLUMNS) & set(drivers.columns)


def test_a_square_across_the_zone_boundary_is_one_event(tmp_path) -> None:
    data = np.zeros((100, 100), np.uint8)
    data[40:60, 30:70] = 15
    path = write_lossyear(tmp_path / "lossyear.tif", 114.0 - 50 * RES, -1.9, data)
    _, pieces = all_pieces(path)
    zones = {MapTile.from_id(t).zone for t in pieces["tile_id"]}
    assert zones == {49, 50}
    events = merge_pieces(with_logits(pieces))
    assert len(events) == 1 and events["n_pixels"].iloc[0] == 800


def test_speckle_is_dropped_after_merging_not_before(tmp_path) -> None:
    zone, row, col = tile_indices(np.array([114.45]), np.array([-3.1]))
    west_edge = MapTile(int(zone[0]), int(row[0]), int(col[0])).lonlat_bounds()[0]
    data = np.zeros((50, 50), np.uint8)
    data[20:22, 23:27] = 16  # 8 pixels, split 4 + 4 by the tile edge
    data[5, 5] = 16  # a lone speck
    path = write_lossyear(tmp_path / "lossyear.tif", west_edge - 25 * RES, -3.1 + 25 * RES,
                          data)
    _, pieces = all_pieces(path)
    assert sorted(pieces["n_pixels"]) == [1, 4, 4]
    kept = drop_small_events(merge_pieces(with_logits(pieces)), min_pixels=6)
    assert kept["n_pixels"].tolist() == [8]


def test_nodata_and_years_outside_the_range_are_not_loss() -> None:
    data = np.array([[0, 13, 14, 255], [20, 16, 15, 1]], np.uint8)
    assert year_mask(data, range(2013, 2017), 255).sum() == 4
    assert year_mask(data, [2001], None).sum() == 1


