"""One batch of the training set: chips and auxiliary predictors for events [start, stop)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from pipeline.auxiliary import AuxSources, aux_for_chip
from pipeline.catalog import read_index
from pipeline.chip_store import batch_marker, write_chip_batch
from pipeline.chips import ChipSpec, build_event_chip


def plan_batches(n_events: int, batch_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` event ranges: one coarse task each."""
    return [(s, min(s + batch_size, n_events)) for s in range(0, n_events, batch_size)]


def build_chip_batch(
    events_path: Path,
    start: int,
    stop: int,
    scene_store: Path,
    chips_path: Path,
    spec: ChipSpec,
    aux_sources: AuxSources,
) -> dict:
    """Build and write chips for one batch; a batch already written is skipped."""
    if batch_marker(chips_path, start, stop).exists():
        return {"start": start, "stop": stop, "skipped": True}
    events = gpd.read_parquet(events_path).iloc[start:stop]
    index = read_index(scene_store)
    chips, aux, scalars = [], [], []
    for row in events.itertuples(index=False):
        chip = build_event_chip(row.geometry, int(row.loss_year), scene_store, index, spec)
        a, s = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0], aux_sources)
        chips.append(chip)
        aux.append(a)
        scalars.append(s)
    summary = write_chip_batch(chips_path, start, chips, aux, scalars)
    return {"start": start, "stop": stop, "skipped": False,
            "failed": sum(s != "ok" for s in summary["status"])}
