"""The composite store on the tiny world: cells built once and reused, keys that change
only with what decides a cell's pixels, atomic writes, and grids cut from the cells."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr

from pipeline.core.tile_lattice import TILE_METRES, TILE_RESOLUTION, MapTile
from pipeline.imagery import composite_store
from pipeline.imagery.composite_cells import lattice_cells
from pipeline.imagery.composite_store import (
    CompositeSource,
    cell_path,
    composite_key,
    grid_composite,
    read_cell,
)
from pipeline.imagery.event_chips import build_event_chip
from pipeline.imagery.views import ChipSpec, chip_geobox
from pipeline.ingest.catalog import read_index

SPEC = ChipSpec()
YEAR = 2016  # every acquisition (2017-2019) lies in its window
CENTRE = MapTile(49, -44, 157)
NEIGHBOURHOOD = [MapTile(49, CENTRE.row + dr, CENTRE.col + dc)
                 for dr in (-1, 0, 1) for dc in (-1, 0, 1)]


@pytest.fixture(scope="module")
def index(tiny_scene_store: Path):
    return read_index(tiny_scene_store)


@pytest.fixture(scope="module")
def event(tiny_events):
    """A 2016 event whose chip straddles four cells."""
    return tiny_events[tiny_events["loss_year"] == YEAR].iloc[0]


@pytest.fixture()
def cold_cache() -> Iterator[None]:
    """No cell decoded in this process: what a fresh worker sees."""
    composite_store._CACHE.clear()
    yield
    composite_store._CACHE.clear()


def _temporaries(final: Path) -> list[Path]:
    return list(final.parent.glob(f".{final.name}.tmp-*"))


def test_cells_are_built_once_and_reused_from_the_store(
        tmp_path: Path, tiny_scene_store: Path, index, event, cold_cache: None) -> None:
    store = tmp_path / "composites.zarr"
    grid = chip_geobox(event.geometry, SPEC)
    assert len(lattice_cells(grid)) == 4
    first = CompositeSource(tiny_scene_store, index, SPEC, store)
    built = grid_composite(grid, YEAR, first)
    assert (first.built, first.reused) == (4, 0)
    assert len(list(store.glob("z49/*/*/zarr.json"))) == 4
    assert built.image is not None and np.abs(built.image).max() > 0.01

    composite_store._CACHE.clear()  # else the second source would read this process's cache
    second = CompositeSource(tiny_scene_store, index, SPEC, store)
    reused = grid_composite(grid, YEAR, second)
    assert (second.built, second.reused) == (0, 4)
    np.testing.assert_array_equal(reused.image, built.image)
    assert reused.scene_ids == built.scene_ids and reused.clouds == built.clouds
    assert reused.scene_dates == built.scene_dates and reused.notes == built.notes


def _keys(source: CompositeSource, spec: ChipSpec,
          years: tuple[int, ...] = (2013, YEAR)) -> dict[tuple[MapTile, int], str]:
    """Each (cell, year) of the neighbourhood with candidates -> its key under ``spec``."""
    out = {}
    for cell in NEIGHBOURHOOD:
        for year in years:
            ids = source.candidates(cell, year)
            if ids:
                out[cell, year] = composite_key(cell, ids, spec)
    return out


@pytest.mark.parametrize("change", [{"max_view_cloud": 0.4}, {"composite_pool": 3},
                                    {"composite_max_views": None}], ids=str)
def test_a_rule_change_changes_every_key(tiny_scene_store: Path, index, change: dict) -> None:
    source = CompositeSource(tiny_scene_store, index, SPEC)
    before = _keys(source, SPEC)
    after = _keys(source, SPEC.model_copy(update=change))
    assert len(before) == 2 * len(NEIGHBOURHOOD)
    assert all(after[k] != before[k] for k in before)


def test_a_setting_outside_the_composite_keeps_every_key(tiny_scene_store: Path,
                                                         index) -> None:
    """Single views are not part of a cell: models differing in them share cells."""
    source = CompositeSource(tiny_scene_store, index, SPEC)
    assert _keys(source, SPEC.model_copy(update={"max_single_views": 1})) == \
        _keys(source, SPEC)


def test_dropping_a_scene_changes_only_the_keys_of_the_cells_it_was_a_candidate_of(
        tiny_scene_store: Path, index) -> None:
    # The 2019 surface scene, its footprint cut to the inside of one cell.
    sid = next(s for s in index["scene_id"] if "_L2SP_" in s and "_2019" in s)
    corner = index.copy()
    row = corner.index[corner["scene_id"] == sid][0]
    corner.loc[row, corner.geometry.name] = shapely.box(*CENTRE.lonlat_bounds(margin_m=-1000.0))
    dropped = corner[corner["scene_id"] != sid].reset_index(drop=True)

    with_scene = CompositeSource(tiny_scene_store, corner, SPEC)
    before = _keys(with_scene, SPEC)
    after = _keys(CompositeSource(tiny_scene_store, dropped, SPEC), SPEC)
    assert before.keys() == after.keys()  # the other scenes still cover every cell
    changed = {k for k in before if after[k] != before[k]}
    held = {(cell, year) for cell, year in before if sid in with_scene.candidates(cell, year)}
    # One cell held it, and only in 2016's window (2013's ends in 2018).
    assert changed == held == {(CENTRE, YEAR)}


def test_a_failed_write_leaves_neither_a_cell_nor_a_temporary(
        tmp_path: Path, tiny_scene_store: Path, index, cold_cache: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "composites.zarr"
    source = CompositeSource(tiny_scene_store, index, SPEC, store)
    final = cell_path(store, CENTRE, composite_key(CENTRE, source.candidates(CENTRE, YEAR),
                                                   SPEC))
    half_written: list[bool] = []

    def failing_write(array: zarr.Array, selection: object, value: object) -> None:
        # Mid-way: the group is on disk in its temporary, the pixels are not.
        half_written.extend((tmp / "image" / "zarr.json").exists() for tmp in _temporaries(final))
        raise OSError("no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Array, "__setitem__", failing_write)
        with pytest.raises(OSError, match="no space left"):
            source.cell(CENTRE, YEAR)
    assert half_written == [True]
    assert not final.exists()
    assert _temporaries(final) == []

    comp = source.cell(CENTRE, YEAR)  # a later build succeeds
    assert comp is not None and comp.scene_ids
    assert _temporaries(final) == []
    stored = read_cell(final)
    np.testing.assert_array_equal(stored.image, comp.image)
    assert stored.scene_ids == comp.scene_ids


def test_a_chip_straddling_cells_takes_each_pixel_from_its_own_cell(
        tiny_scene_store: Path, index, event) -> None:
    source = CompositeSource(tiny_scene_store, index, SPEC)
    grid = chip_geobox(event.geometry, SPEC)
    image = grid_composite(grid, YEAR, source).image
    # Each pixel centre's cell and its pixel there, from the coordinates alone.
    height, width = grid.shape
    xs = grid.affine.c + TILE_RESOLUTION * (np.arange(width) + 0.5)
    ys = grid.affine.f - TILE_RESOLUTION * (np.arange(height) + 0.5)
    cell_cols, cell_rows = np.floor(xs / TILE_METRES), np.floor(ys / TILE_METRES)
    cells = lattice_cells(grid)
    assert len(cells) == 4
    images = {cell: source.cell(cell, YEAR).image for cell in cells}
    for cell in cells:
        rows, cols = np.flatnonzero(cell_rows == cell.row), np.flatnonzero(cell_cols == cell.col)
        assert rows.size and cols.size  # the chip has pixels in every cell under it
        i = ((cell.row + 1) * TILE_METRES - ys[rows]) // TILE_RESOLUTION
        j = (xs[cols] - cell.col * TILE_METRES) // TILE_RESOLUTION
        at = (slice(None), i.astype(int)[:, None], j.astype(int)[None])
        got = image[:, rows[:, None], cols[None]]
        np.testing.assert_array_equal(got, images[cell][at])
        # Varied pixels: the same window of another cell, or one row lower, would differ.
        assert np.ptp(got) > 0.01
        assert not any(np.array_equal(got, images[other][at]) for other in cells
                       if other != cell)
        lower = (slice(None), np.minimum(i.astype(int) + 1, 331)[:, None], at[2])
        assert not np.array_equal(got, images[cell][lower])


def test_an_event_chips_composite_is_its_grids_composite(
        tmp_path: Path, tiny_scene_store: Path, index, event) -> None:
    source = CompositeSource(tiny_scene_store, index, SPEC, tmp_path / "composites.zarr")
    chip = build_event_chip(event.geometry, YEAR, source)
    assert chip.status == "ok"
    grid = grid_composite(chip.geobox, YEAR, source)
    np.testing.assert_array_equal(chip.image[0], grid.image)
    assert np.abs(chip.image[0]).max() > 0.01
    pooled = {sid for cell in lattice_cells(chip.geobox)
              for sid in source.cell(cell, YEAR).scene_ids}
    assert len(chip.scene_ids) == len(set(chip.scene_ids))
    assert set(chip.scene_ids) == pooled
    assert all("_L2SP_" in sid for sid in chip.scene_ids)


def test_a_damaged_cell_is_built_again_not_a_failure(
        tmp_path: Path, tiny_scene_store: Path, index, event, cold_cache: None,
        caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "composites.zarr"
    grid = chip_geobox(event.geometry, SPEC)
    first = grid_composite(grid, YEAR, CompositeSource(tiny_scene_store, index, SPEC, store))
    chunks = [p for p in store.rglob("*") if p.is_file() and p.parent.name == "0"]
    assert chunks
    chunks[0].write_bytes(b"not a zstd chunk")  # a cell damaged on disk
    composite_store._CACHE.clear()
    source = CompositeSource(tiny_scene_store, index, SPEC, store)
    again = grid_composite(grid, YEAR, source)
    assert source.built == 1  # only the damaged cell
    np.testing.assert_array_equal(again.image, first.image)
    assert "unreadable composite" in caplog.text and str(store) in caplog.text
    composite_store._CACHE.clear()  # and the rebuilt cell reads back whole
    third = CompositeSource(tiny_scene_store, index, SPEC, store)
    np.testing.assert_array_equal(grid_composite(grid, YEAR, third).image, first.image)
    assert third.built == 0
