"""An ingest run's rows: batched index writes (a killed run keeps what finished) and the
run's tally."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.ingest.catalog import INDEX_NAME, failed_row
from pipeline.ingest.run_rows import BatchedIndexWriter, summary, tally


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def row(scene_id: str, status: str = "failed", read: int = 0, full: int = 0) -> dict:
    return {**failed_row(scene_id, f"/data/{scene_id}", "bad MTL"), "status": status,
            "bytes_read": read, "bytes_full": full}


def index_ids(store: Path) -> list[str]:
    path = store / INDEX_NAME
    return sorted(pd.read_parquet(path)["scene_id"]) if path.exists() else []


def test_rows_reach_the_index_every_interval_and_at_flush(tmp_path: Path) -> None:
    clock = Clock()
    writer = BatchedIndexWriter(tmp_path, every_s=10.0, clock=clock)
    writer.add(row("a"))
    clock.now = 5.0
    writer.add(row("b"))
    assert index_ids(tmp_path) == []  # not yet: one write per interval, not per scene
    clock.now = 10.5
    writer.add(row("c"))
    assert index_ids(tmp_path) == ["a", "b", "c"] and writer.pending == []
    writer.add(row("d"))
    writer.flush()
    assert index_ids(tmp_path) == ["a", "b", "c", "d"]
    columns = pd.read_parquet(tmp_path / INDEX_NAME).columns
    assert "bytes_read" not in columns  # read counts are the run's, not the index's


def test_the_tally_counts_statuses_failures_and_bytes() -> None:
    rows = [summary(r) for r in (row("a", "ingested", 10, 40), row("b", "skipped"),
                                 row("c", "failed", 2, 8))]
    run = tally(rows)
    assert run["counts"] == {"ingested": 1, "skipped": 1, "failed": 1}
    assert [r["scene_id"] for r in run["failures"]] == ["c"]
    assert (run["bytes_read"], run["bytes_full"]) == (12, 48)
    assert set(rows[0]) == {"scene_id", "status", "error", "source", "bytes_read",
                            "bytes_full"}
