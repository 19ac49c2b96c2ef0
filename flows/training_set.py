"""Training-set flow: events (ForestNet CSV, GFC or a vector file) -> ``events.parquet``,
with splits -> ``chips.zarr`` (chips + the configured aux bands and features)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.config.input_checks import (
    check_event_csvs,
    check_lossyear_file,
    require_aux_files,
    require_scene_index,
    require_writable,
)
from flows.config.schema import ConfigError, PipelineConfig, require_file
from flows.runtime.cluster import gather_with_progress
from flows.runtime.provenance import RUN_RECORD, chip_band_stats, run_record, write_run_record
from pipeline.core.radiometry import require_same, store_radiometry
from pipeline.training_set.auxiliary import describe_aux
from pipeline.training_set.batches import build_chip_batch, plan_batches
from pipeline.training_set.chip_store import (
    finalize_chip_store,
    init_chip_store,
    is_complete,
    open_chips,
    store_counts,
)
from pipeline.training_set.event_sources import make_events
from pipeline.training_set.events import read_events, write_events


def check_inputs(config: PipelineConfig) -> None:
    """The event source, the lossyear, the ingested scenes and the aux files are there and
    readable, and the work folder can be written."""
    source, inputs = config.events.source, config.inputs
    if source != "vector":
        require_file(inputs.lossyear, "lossyear")
    require_scene_index(config)
    if source == "forestnet_csv":
        require_file(inputs.events_csv_dir, "events_csv_dir")
    if source == "vector":
        path = config.events.vector.path
        if path is None:
            raise ConfigError("events.vector.path is not set (events.source is 'vector')")
        if not Path(path).exists():
            raise ConfigError(f"events.vector.path: file not found: {path}")
    require_aux_files(config)
    # Then the checks that open files or probe folders.
    require_writable(config.workdir, "workdir")
    if source != "vector":
        check_lossyear_file(inputs.lossyear)
    if source == "forestnet_csv":
        check_event_csvs(inputs.events_csv_dir)


@task(name="labelled-events")
def labelled_events(config: PipelineConfig) -> str:
    """``events.parquet`` from the configured source (events.source), with splits."""
    logger = get_run_logger()
    events, problems = make_events(config.events, config.inputs.lossyear,
                                   config.inputs.events_csv_dir)
    for problem in problems:
        logger.warning("event skipped: %s", problem)
    write_events(events, config.events_path)
    counts = events["split"].value_counts().to_dict() if len(events) else {}
    logger.info("%d %s events (%s) -> %s", len(events), config.events.source, counts,
                config.events_path)
    return str(config.events_path)


@task(name="build-chips")
def build_chips(config: PipelineConfig, events_path: str, client_address: str) -> dict:
    """Coarse task: one Dask task per batch of events, region-writing chips.zarr.

    Returns the store's path and its counts (events per split, batches, reused batches,
    events without imagery).
    """
    logger = get_run_logger()
    events = read_events(Path(events_path))
    spec, sources = config.chips.spec(), config.inputs.aux_sources()
    bands, features = config.aux.bands, config.aux.features
    attrs = {"source": f"pipeline ({config.events.source} events)",
             "aux_provenance": describe_aux(bands, features, sources)}
    init_chip_store(config.chips_path, events, spec, bands, features, attrs)
    batches = plan_batches(len(events), config.chips.batch_size)
    with Client(client_address, set_as_default=False) as client:
        futures = [client.submit(build_chip_batch, Path(events_path), a, b, config.scene_store,
                                 config.chips_path, spec, sources, bands, features,
                                 config.composite_store, pure=False)
                   for a, b in batches]
        results = gather_with_progress(client, futures, "chip batches")
    chips = finalize_chip_store(config.chips_path, batches)
    # From the finished store, not the batch results: reused batches report no failures.
    counts = {**store_counts(chips), "chip_batches": len(batches),
              "batches_reused": sum(r["skipped"] for r in results)}
    logger.info("%d chip batches (%d reused from an earlier run); %d events without imagery",
                counts["chip_batches"], counts["batches_reused"], counts["events_without_imagery"])
    return {"chips": str(chips), "counts": counts}


@flow(name="build-training-set", log_prints=True)
def training_set_flow(config: PipelineConfig, client_address: str) -> dict:
    """Events with splits, then chips.zarr with its ``run.json``; skipped when the store exists."""
    started = datetime.now(UTC)
    if is_complete(config.chips_path):
        # The earlier run's run.json stays: it describes the store that is there. A store
        # without one (the run was killed right after finishing it) gets one, marked so.
        require_same(store_radiometry(open_chips(config.chips_path).attrs),
                     f"the existing chip store {config.chips_path}", config.chips.radiometry,
                     "chips.radiometry in the config")
        get_run_logger().info("%s exists; nothing to do", config.chips_path)
        if not (config.chips_path / RUN_RECORD).exists():
            write_run_record(run_record(config, "build-training-set", started,
                                        counts=store_counts(config.chips_path),
                                        recorded_after_the_fact=True), config.chips_path)
        return {"chips": str(config.chips_path), "skipped": True}
    events_path = labelled_events(config)
    built = build_chips(config, events_path, client_address)
    write_run_record(run_record(config, "build-training-set", started, counts=built["counts"],
                                events=events_path,
                                band_stats=chip_band_stats(config.chips_path)),
                     config.chips_path)
    return {"events": events_path, "chips": built["chips"], "counts": built["counts"],
            "skipped": False}
