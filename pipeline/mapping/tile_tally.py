"""The tally of a map job's tiles: done, skipped, failed (with the reason) and notes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TileTally:
    """Counts what became of each tile; ``failed`` and ``notes`` map tile ids to text."""

    tiles: int
    skipped: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    #: Cell composites built and reused from the composite store by this run's tiles.
    composites_built: int = 0
    composites_reused: int = 0

    def record(self, results: list[dict]) -> None:
        """One batch's results, as ``infer_tiles`` returns them."""
        for r in results:
            if r["status"] == "done":
                self.done += 1
                self.composites_built += r.get("composites", {}).get("built", 0)
                self.composites_reused += r.get("composites", {}).get("reused", 0)
                if r.get("notes"):
                    self.notes[r["tile_id"]] = r["notes"]
            else:
                self.failed[r["tile_id"]] = r["error"]

    def fail(self, batch: list[str], exc: BaseException) -> None:
        """A batch whose task raised: every tile of it failed with that error."""
        for tile_id in batch:
            self.failed[tile_id] = f"{type(exc).__name__}: {exc}"
