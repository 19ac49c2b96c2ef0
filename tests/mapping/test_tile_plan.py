"""The map job's tile plan (block counts -> one plan -> worker batches) and its tally."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core.tile_lattice import MapTile
from pipeline.mapping.loss_pieces import years_of_mask
from pipeline.mapping.tile_plan import (
    PLAN_COLUMNS,
    merge_block_tiles,
    tile_batches,
    write_tile_plan,
)
from pipeline.mapping.tile_tally import TileTally


def block(rows: list[tuple[int, int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["zone", "row", "col", "n_loss", "loss_years"])


def test_a_tile_spanning_two_blocks_is_one_row_with_the_summed_count() -> None:
    y13, y15, y16 = (1 << (year - 2000) for year in (2013, 2015, 2016))
    plan = merge_block_tiles([
        block([(50, -70, 100, 5, y13), (49, -70, 200, 1, y16)]),
        block([]),
        block([(50, -70, 100, 7, y13 | y15), (50, -71, 100, 2, y15)]),
    ])
    assert list(plan.columns) == PLAN_COLUMNS
    assert plan[["zone", "row", "col", "n_loss"]].values.tolist() == [
        [49, -70, 200, 1], [50, -71, 100, 2], [50, -70, 100, 12]]
    # Each tile's loss years, from every block it spans.
    assert [years_of_mask(m) for m in plan["loss_years"]] == [[2016], [2015], [2013, 2015]]
    assert plan["tile_id"].tolist() == [MapTile(49, -70, 200).tile_id,
                                        MapTile(50, -71, 100).tile_id,
                                        MapTile(50, -70, 100).tile_id]
    assert int(plan["n_loss"].sum()) == 15


def test_no_loss_anywhere_is_an_empty_plan_with_the_plan_columns() -> None:
    plan = merge_block_tiles([block([]), block([])])
    assert plan.empty and list(plan.columns) == PLAN_COLUMNS


def test_the_plan_is_stored_atomically_and_reads_back(tmp_path) -> None:
    plan = merge_block_tiles([block([(50, -70, 100, 5, 1 << 14)])])
    path = write_tile_plan(plan, tmp_path / "plan" / "tiles.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), plan)
    assert [p.name for p in path.parent.iterdir()] == ["tiles.parquet"]  # no temp file left


@pytest.mark.parametrize(("n_tiles", "per_task", "workers", "sizes"), [
    (4, 16, 2, [2, 2]),          # a small job still gives each worker a batch
    (5, 16, 2, [3, 2]),
    (40, 8, 2, [8, 8, 8, 8, 8]),  # a large one is cut at tiles_per_task
    (3, 16, 8, [1, 1, 1]),        # more workers than tiles: one tile each
    (0, 16, 2, []),
    (3, 2, 0, [2, 1]),            # no worker count known: per_task alone decides
])
def test_batches_cover_every_tile_once_in_order(n_tiles, per_task, workers, sizes) -> None:
    ids = [f"t{i}" for i in range(n_tiles)]
    batches = tile_batches(ids, per_task, workers)
    assert [len(b) for b in batches] == sizes
    assert [t for b in batches for t in b] == ids


def test_the_tally_counts_done_failed_and_notes_and_a_raising_batch_fails_each_tile() -> None:
    tally = TileTally(tiles=5, skipped=1)
    tally.record([
        {"tile_id": "a", "status": "done", "pieces": 3, "notes": []},
        {"tile_id": "b", "status": "done", "pieces": 1, "notes": ["loss years [2014]: no scene"]},
        {"tile_id": "c", "status": "failed", "error": "OSError: damaged scene"},
    ])
    tally.fail(["d", "e"], MemoryError("worker ran out of memory"))
    assert (tally.tiles, tally.skipped, tally.done) == (5, 1, 2)
    assert tally.notes == {"b": ["loss years [2014]: no scene"]}
    assert tally.failed == {"c": "OSError: damaged scene",
                            "d": "MemoryError: worker ran out of memory",
                            "e": "MemoryError: worker ran out of memory"}
