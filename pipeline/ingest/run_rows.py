"""The rows an ingest run produces, one per product: written to the store's index in
batches as scenes finish, and tallied for the run record."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.ingest.catalog import write_index
from pipeline.ingest.scene_ingest import READ_COUNTS

#: The statuses a run counts.
STATUSES = ("ingested", "skipped", "failed")


class BatchedIndexWriter:
    """Index rows written every ``every_s`` seconds at most, and at ``flush``: a killed
    run keeps what it finished, without rewriting the index once per scene."""

    def __init__(self, store: Path, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.every_s, self.clock = Path(store), every_s, clock
        self.pending: list[dict] = []
        self.last = clock()

    def add(self, row: dict) -> None:
        """Queue one ``ingest_row`` row (its read counts stay out of the index)."""
        self.pending.append({k: v for k, v in row.items() if k not in READ_COUNTS})
        if self.clock() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            write_index(self.store, self.pending)
            self.pending.clear()
        self.last = self.clock()


def summary(row: dict) -> dict:
    """What a run keeps of a row: its scene, status, error, source and read counts."""
    return {k: row.get(k, 0) for k in ("scene_id", "status", "error", "source", *READ_COUNTS)}


def tally(results: Iterable[dict]) -> dict:
    """Counts per status, the failed rows and the bytes read of the bytes there were."""
    results = list(results)
    read, full = (sum(r.get(k, 0) for r in results) for k in READ_COUNTS)
    return {"counts": {s: sum(r["status"] == s for r in results) for s in STATUSES},
            "failures": [r for r in results if r["status"] == "failed"],
            "bytes_read": read, "bytes_full": full}
