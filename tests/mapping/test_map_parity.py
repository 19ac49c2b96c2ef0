"""The map sees each event as evaluation does: the same window, composite and scalars.

For the tiny world's events, the chip input (``chips.zarr``, as training and evaluation
read it) and the map input (``prepare_tile``, as the map flow builds it) of the same event
are built side by side and compared: the event window's placement on the ground, the
composite's pixels over that window, and the fusion scalars.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.warp import Resampling, reproject
from shapely.geometry import box

from forestnet_model.model_inputs import event_window
from forestnet_model.specs import ModelSpec
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.core.provinces import provinces
from pipeline.core.tile_lattice import HALO_PIXELS, MapTile, tile_indices
from pipeline.imagery.composite_store import CompositeSource, years_by_cells
from pipeline.imagery.views import CHIP_BANDS, ChipSpec
from pipeline.ingest.catalog import read_index
from pipeline.mapping.edge_events import fitting_events
from pipeline.mapping.loss_pieces import tile_pieces, whole_events
from pipeline.mapping.tile_inputs import prepare_tile, tile_halo
from pipeline.training_set.chip_store import open_chips
from tests.world_chips import world_chip_store, world_sources

SPEC = ChipSpec(max_single_views=2)
FEATURES = ("elevation_mean", "slope_mean", "street_dist_km", "city_dist_km", "peat_fraction",
            "temperature_c")
CONTEXT = ModelSpec().event_context
RESOLUTION = 15.0


@pytest.fixture(scope="module")
def chips(tiny_world: Path, tiny_scene_store: Path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity")
    return open_chips(world_chip_store(tiny_world.parent, folder, features=FEATURES, spec=SPEC,
                                       scene_store=tiny_scene_store))


def chip_grid(chips, i: int) -> GeoBox:
    mask = chips["loss_mask"].values[i]
    return GeoBox(mask.shape, Affine(*chips["transform"].values[i][:6]),
                  f"EPSG:{int(chips['epsg'].values[i])}")


def window_box(grid: GeoBox, rows: slice, cols: slice) -> GeoBox:
    return grid[rows, cols]


@pytest.fixture(scope="module")
def pairs(chips, tiny_world: Path, tiny_scene_store: Path) -> list[dict]:
    """Each usable event held by one map piece: its chip input beside its map input."""
    world = tiny_world.parent
    index = read_index(tiny_scene_store)
    ok = np.flatnonzero(chips["chip_ok"].values == 1)
    lon, lat = chips["lon"].values[ok], chips["lat"].values[ok]
    zones, rows, cols = tile_indices(lon, lat)
    prepared: dict[tuple, object] = {}
    out = []
    # As the map job reads them: every loss year at once, pieces of several years per tile.
    years = sorted({int(y) for y in chips["loss_year"].values})
    for i, zone, row, col in zip(ok, zones, rows, cols, strict=True):
        tile = MapTile(int(zone), int(row), int(col))
        if tile not in prepared:
            prepared[tile] = prepare_tile(
                tile, world / "gfc" / "lossyear.tif", years, provinces(),
                CompositeSource(tiny_scene_store, index, SPEC), CHIP_BANDS, (),
                world_sources(world), FEATURES, CONTEXT)
        tile_input = prepared[tile]
        grid = chip_grid(chips, int(i))
        anchor = grid.geographic_extent.centroid.to_crs(tile.crs)
        hit = tile_input.pieces.to_crs(tile.crs.to_wkt()).contains(anchor.geom)
        if hit.sum() != 1:
            continue
        piece = int(np.flatnonzero(hit.to_numpy())[0])
        (sample,) = [s for s in tile_input.samples if piece in s.pieces]
        k = sample.pieces.index(piece)
        edge = bool(tile_input.pieces["touches_edge"].iloc[piece])
        # A piece at the tile's edge is classified as its whole event.
        assert not edge or k in sample.event_masks, (i, "edge piece without its event")
        out.append({"row": int(i), "grid": grid, "tile": tile, "sample": sample, "k": k,
                    "edge": edge})
    return out


def test_loss_years_share_a_composite_only_when_their_scenes_are_the_same(
        tiny_scene_store: Path) -> None:
    """The tiny world's scenes are of 2017, 2018 and 2019: 2013's window (2008-2018) lacks
    2019's, so a 2013 piece gets a composite of its own, as its chip does."""
    index = read_index(tiny_scene_store)
    tile = MapTile.from_id(pairs_tile_id(index))
    groups = years_by_cells([2016, 2013, 2014, 2015], tile.geobox(),
                            CompositeSource(tiny_scene_store, index, SPEC))
    assert groups == [[2013], [2014, 2015, 2016]]


def pairs_tile_id(index) -> str:
    """A map tile at the centre of the scenes' footprints."""
    centre = index.union_all().centroid
    zones, rows, cols = tile_indices(np.array([centre.x]), np.array([centre.y]))
    return MapTile(int(zones[0]), int(rows[0]), int(cols[0])).tile_id


def test_every_event_is_found_on_the_map(pairs, chips) -> None:
    assert len(pairs) == int((chips["chip_ok"].values == 1).sum()) >= 10


def test_a_piece_cut_by_a_tile_edge_is_seen_as_its_whole_event(tmp_path: Path) -> None:
    """A 600 x 300 m clearing across the east edge of a tile: each tile's piece gets the
    whole clearing (the demo's split events are checked end to end in test_accuracy)."""
    tile = MapTile(*[int(v[0]) for v in tile_indices(np.array([113.55]), np.array([-1.95]))])
    left, bottom, right, top = tile.bounds()
    middle = (bottom + top) / 2
    clearing = gpd.GeoSeries([box(right - 300, middle - 150, right + 300, middle + 150)],
                             crs=tile.crs.to_wkt()).to_crs("EPSG:4326")
    west, south, east, north = tile.lonlat_bounds(margin_m=8000)
    res = 0.00025
    transform = Affine(res, 0, np.floor(west / res) * res, 0, -res, np.ceil(north / res) * res)
    shape = (int((north - south) / res) + 2, int((east - west) / res) + 2)
    data = rasterio.features.rasterize([(clearing.iloc[0], 15)], out_shape=shape,
                                       transform=transform, dtype="uint8")
    lossyear = tmp_path / "lossyear.tif"
    with rasterio.open(lossyear, "w", driver="GTiff", height=shape[0], width=shape[1], count=1,
                       dtype="uint8", crs="EPSG:4326", transform=transform) as dst:
        dst.write(data, 1)
    neighbour = MapTile(tile.zone, tile.row, tile.col + 1)
    areas = []
    for t in (tile, neighbour):
        pieces = tile_pieces(lossyear, t, [2015], provinces())
        assert len(pieces) == 1 and pieces["touches_edge"].all()
        (event,) = whole_events(lossyear, t, pieces).values()
        piece_ha = pieces.to_crs(EQUAL_AREA_CRS).area.iloc[0] / 1e4
        event_ha = gpd.GeoSeries([event], crs="EPSG:4326").to_crs(EQUAL_AREA_CRS).area[0] / 1e4
        assert event_ha == pytest.approx(18.0, rel=0.1) and piece_ha < 0.7 * event_ha
        areas.append(event_ha)
        local = gpd.GeoSeries([event], crs="EPSG:4326").to_crs(t.crs.to_wkt())
        kept, beyond = fitting_events({0: local.iloc[0]}, t.geobox(), CONTEXT)
        assert list(kept) == [0] and beyond > 0  # the halo grows to hold the window
    assert areas[0] == pytest.approx(areas[1])


def test_the_map_classifies_each_event_over_the_chips_loss_region(pairs, chips) -> None:
    """The pixels pooled: the whole event's (a piece at an edge too), as on its chip."""
    for pair in pairs:
        mask = chips["loss_mask"].values[pair["row"]].astype(bool)
        region = pair["sample"].region(pair["k"])
        assert region.sum() == pytest.approx(mask.sum(), rel=0.02), pair["row"]


def map_window(pair: dict) -> tuple[GeoBox, np.ndarray]:
    sample = pair["sample"]
    halo = (sample.labels.shape[0] - 332) // 2
    grid = pair["tile"].geobox(halo)
    rows, cols = event_window(sample.region(pair["k"]), CONTEXT)
    return grid[rows, cols], sample.image[:, rows, cols]


def test_the_map_window_sits_where_the_chip_window_sits(pairs, chips) -> None:
    """Placement on the ground, within a pixel (the issue's bound; chips and tiles share
    one lattice, so it is exact here); the same size."""
    for pair in pairs:
        mask = chips["loss_mask"].values[pair["row"]].astype(bool)
        chip_box = window_box(pair["grid"], *event_window(mask, CONTEXT))
        box, _ = map_window(pair)
        assert box.shape == chip_box.shape, pair["row"]
        (x0, y0), (x1, y1) = (chip_box.affine.c, chip_box.affine.f), (box.affine.c, box.affine.f)
        shift = max(abs(x1 - x0), abs(y1 - y0)) / RESOLUTION
        assert shift <= 1.0 + 1e-6, (pair["row"], shift)


def test_the_map_composite_matches_the_chip_composite_over_the_window(pairs, chips) -> None:
    scale = chips["image"].encoding.get("scale_factor", 1.0)
    errors = []
    for pair in pairs:
        i = pair["row"]
        mask = chips["loss_mask"].values[i].astype(bool)
        rows, cols = event_window(mask, CONTEXT)
        chip_box = window_box(pair["grid"], rows, cols)
        chip = chips["image"].values[i, 0][:, rows, cols].astype(np.float32)
        box, image = map_window(pair)
        resampled = np.full(chip.shape, np.nan, np.float32)
        for b in range(len(chip)):
            reproject(image[b], resampled[b], src_transform=box.affine, src_crs=box.crs.to_wkt(),
                      dst_transform=chip_box.affine, dst_crs=chip_box.crs.to_wkt(),
                      resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
        both = np.isfinite(resampled) & np.isfinite(chip)
        assert both.mean() > 0.9, i
        errors.append(float(np.abs(resampled - chip)[both].mean()))
    print({"composite_mae": [round(e, 4) for e in errors], "store_step": scale})
    assert max(errors) <= 0.005, errors


def test_the_map_scalars_are_the_chip_scalars(pairs, chips) -> None:
    features = [str(f) for f in chips["feature"].values]
    for pair in pairs:
        chip = chips["aux_scalar"].values[pair["row"]]
        mapped = pair["sample"].scalars[pair["k"]]
        for n, name in enumerate(FEATURES):
            expected = chip[features.index(name)]
            assert mapped[n] == pytest.approx(expected, rel=0.02, abs=0.05), (pair["row"], name)


def test_a_tile_halo_holds_the_window_of_a_piece_at_its_corner() -> None:
    size = 332 + 2 * HALO_PIXELS
    labels = np.zeros((size, size), np.int32)
    labels[HALO_PIXELS:HALO_PIXELS + 6, HALO_PIXELS:HALO_PIXELS + 9] = 1  # the core's corner
    labels[150:160, 150:170] = 2  # inside: needs no more than the default
    halo = tile_halo(labels, 2, CONTEXT)
    assert (332 + 2 * halo) % 32 == 0
    padded = np.pad(labels, halo - HALO_PIXELS)
    rows, cols = event_window(padded == 1, CONTEXT)
    # Centred on the piece: as much context before it as after (to the stride's rounding).
    top, bottom = halo - rows.start, rows.stop - (halo + 6)
    left, right = halo - cols.start, cols.stop - (halo + 9)
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    assert top >= CONTEXT and left >= CONTEXT
    interior = np.where(labels == 2, 1, 0)
    assert tile_halo(interior, 1, CONTEXT) == HALO_PIXELS  # inside pieces keep the default
