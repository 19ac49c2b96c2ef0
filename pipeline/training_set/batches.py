"""One batch of the training set: chips and auxiliary predictors for events [start, stop),
built from the scene store or imported from the published ForestNet release."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from pipeline.imagery.composite_store import CompositeSource
from pipeline.imagery.event_chips import build_event_chip
from pipeline.imagery.views import ChipSpec
from pipeline.ingest.catalog import read_index
from pipeline.training_set.auxiliary import AUX_BANDS, AUX_SCALARS, AuxSources, aux_for_chip
from pipeline.training_set.chip_store import batch_marker, write_chip_batch
from pipeline.training_set.release_import import read_example
from pipeline.training_set.release_reader import ReleaseReader


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
    aux_bands: tuple[str, ...] = AUX_BANDS,
    aux_features: tuple[str, ...] = AUX_SCALARS,
    composite_store: Path | None = None,
) -> dict:
    """Build and write chips for one batch; a batch already written is skipped. Chip
    composites are cut from ``composite_store``'s cells, built there when missing."""
    if batch_marker(chips_path, start, stop).exists():
        return {"start": start, "stop": stop, "skipped": True}
    events = gpd.read_parquet(events_path).iloc[start:stop]
    source = CompositeSource(scene_store, read_index(scene_store), spec, composite_store)
    chips, aux, scalars = [], [], []
    for row in events.itertuples(index=False):
        chip = build_event_chip(row.geometry, int(row.loss_year), source)
        a, s = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0], aux_sources,
                            aux_bands, aux_features)
        chips.append(chip)
        aux.append(a)
        scalars.append(s)
    summary = write_chip_batch(chips_path, start, chips, aux, scalars)
    return {"start": start, "stop": stop, "skipped": False,
            "failed": sum(s != "ok" for s in summary["status"])}


def import_release_batch(
    release: str,
    events_path: Path,
    start: int,
    stop: int,
    chips_path: Path,
    spec: ChipSpec,
    aux_bands: tuple[str, ...] = AUX_BANDS,
    aux_features: tuple[str, ...] = AUX_SCALARS,
) -> dict:
    """Import ForestNet release examples ``[start, stop)`` (see ``forestnet_release``)."""
    if batch_marker(chips_path, start, stop).exists():
        return {"start": start, "stop": stop, "skipped": True}
    events = gpd.read_parquet(events_path).iloc[start:stop]
    chips, aux, scalars = [], [], []
    with ReleaseReader(release) as reader:
        for row in events.itertuples(index=False):
            chip, given_bands, given_scalars = read_example(reader, row, spec)
            # The release's own aux arrays go in; only what it lacks is derived (NDVI from
            # the composite, slope/aspect from elevation) or left NaN (no other sources).
            a, s = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                                AuxSources(), aux_bands, aux_features, given_bands,
                                given_scalars)
            chips.append(chip)
            aux.append(a)
            scalars.append(s)
    summary = write_chip_batch(chips_path, start, chips, aux, scalars)
    return {"start": start, "stop": stop, "skipped": False,
            "failed": sum(s != "ok" for s in summary["status"]),
            "notes": [n for c in chips for n in c.notes]}
