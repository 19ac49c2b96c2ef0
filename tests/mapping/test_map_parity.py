"""The map sees each event as evaluation does: the same window, composite and scalars.

For the tiny world's events, the chip input (``chips.zarr``, as training and evaluation
read it) and the map input (``prepare_tile``, as the map flow builds it) of the same event
are built side by side and compared: the event window's placement on the ground, the
composite's pixels over that window, and the fusion scalars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.warp import Resampling, reproject

from forestnet_model.model_inputs import event_window
from forestnet_model.specs import ModelSpec
from pipeline.core.provinces import provinces
from pipeline.imagery.views import CHIP_BANDS, ChipSpec, years_by_scenes
from pipeline.ingest.catalog import read_index
from pipeline.mapping.tile_inputs import prepare_tile, tile_halo
from pipeline.mapping.tiles import HALO_PIXELS, MapTile, tile_indices
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
                tile, world / "gfc" / "lossyear.tif", years, provinces(), tiny_scene_store,
                index, SPEC, CHIP_BANDS, (), world_sources(world), FEATURES, CONTEXT)
        tile_input = prepared[tile]
        grid = chip_grid(chips, int(i))
        anchor = grid.geographic_extent.centroid.to_crs(tile.crs)
        hit = tile_input.pieces.to_crs(tile.crs.to_wkt()).contains(anchor.geom)
        if hit.sum() != 1 or tile_input.pieces["touches_edge"][hit].any():
            continue  # an event split over tiles is seen piece by piece: no single window
        piece = int(np.flatnonzero(hit.to_numpy())[0])
        (sample,) = [s for s in tile_input.samples if piece in s.pieces]
        out.append({"row": int(i), "grid": grid, "tile": tile, "sample": sample,
                    "k": sample.pieces.index(piece)})
    return out


def test_loss_years_share_a_composite_only_when_their_scenes_are_the_same(
        tiny_scene_store: Path) -> None:
    """The tiny world's scenes are of 2017, 2018 and 2019: 2013's window (2008-2018) lacks
    2019's, so a 2013 piece gets a composite of its own, as its chip does."""
    index = read_index(tiny_scene_store)
    tile = MapTile.from_id(pairs_tile_id(index))
    groups = years_by_scenes([2016, 2013, 2014, 2015], tile.geobox(), index, SPEC)
    assert groups == [[2013], [2014, 2015, 2016]]


def pairs_tile_id(index) -> str:
    """A map tile at the centre of the scenes' footprints."""
    centre = index.union_all().centroid
    zones, rows, cols = tile_indices(np.array([centre.x]), np.array([centre.y]))
    return MapTile(int(zones[0]), int(rows[0]), int(cols[0])).tile_id


def test_most_events_lie_in_one_tile_piece(pairs, chips) -> None:
    assert len(pairs) >= 0.6 * int((chips["chip_ok"].values == 1).sum()) >= 6


def map_window(pair: dict) -> tuple[GeoBox, np.ndarray]:
    sample = pair["sample"]
    halo = (sample.labels.shape[0] - 332) // 2
    grid = pair["tile"].geobox(halo)
    rows, cols = event_window(sample.labels == pair["k"] + 1, CONTEXT)
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
