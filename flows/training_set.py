"""Training-set flow: ForestNet CSV events + lossyear -> ``events.parquet`` -> ``chips.zarr``."""

from __future__ import annotations

from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.cluster import gather_with_progress
from flows.config import PipelineConfig, require_file
from pipeline.auxiliary import AuxSources
from pipeline.chip_store import finalize_chip_store, init_chip_store
from pipeline.chips import ChipSpec
from pipeline.events import events_from_forestnet_csvs, read_events, write_events
from pipeline.training_set import build_chip_batch, plan_batches


def chip_spec(config: PipelineConfig) -> ChipSpec:
    c = config.chips
    return ChipSpec(
        size=c.size,
        resolution=c.resolution,
        max_single_views=c.max_single_views,
        max_view_cloud=c.max_view_cloud,
    )


def aux_sources(config: PipelineConfig) -> AuxSources:
    i = config.inputs
    return AuxSources(
        dem=i.dem,
        treecover=i.treecover,
        roads=i.roads,
        settlements=i.settlements,
        peat=i.peat,
        climate=i.climate,
    )


@task(name="labelled-events")
def labelled_events(config: PipelineConfig) -> str:
    """Events from the ForestNet-schema CSVs, with their loss polygons from lossyear."""
    logger = get_run_logger()
    csv_dir = require_file(config.inputs.events_csv_dir, "events_csv_dir")
    lossyear = require_file(config.inputs.lossyear, "lossyear")
    csvs = {
        s: csv_dir / f"{s}.csv" for s in ("train", "val", "test") if (csv_dir / f"{s}.csv").exists()
    }
    if not csvs:
        raise FileNotFoundError(f"{csv_dir}: no train.csv, val.csv or test.csv")
    events, problems = events_from_forestnet_csvs(
        csvs, lossyear, min_pixels=config.mapping.min_event_pixels
    )
    for problem in problems:
        logger.warning("event skipped: %s", problem)
    write_events(events, config.events_path)
    logger.info("%d labelled events -> %s", len(events), config.events_path)
    return str(config.events_path)


@task(name="build-chips")
def build_chips(config: PipelineConfig, events_path: str, client_address: str) -> str:
    """Coarse task: one Dask task per batch of events, region-writing chips.zarr."""
    logger = get_run_logger()
    events = read_events(Path(events_path))
    spec, sources = chip_spec(config), aux_sources(config)
    init_chip_store(config.chips_path, events, spec)
    batches = plan_batches(len(events), config.chips.batch_size)
    client = Client(client_address, set_as_default=False)
    try:
        futures = [
            client.submit(
                build_chip_batch,
                Path(events_path),
                a,
                b,
                config.scene_store,
                config.chips_path,
                spec,
                sources,
                pure=False,
            )
            for a, b in batches
        ]
        results = gather_with_progress(client, futures, "chip batches")
    finally:
        client.close()
    skipped = sum(r["skipped"] for r in results)
    failed = sum(r.get("failed", 0) for r in results)
    logger.info(
        "%d chip batches (%d reused from an earlier run); %d events without imagery",
        len(batches),
        skipped,
        failed,
    )
    return str(finalize_chip_store(config.chips_path, batches))


@flow(name="build-training-set", log_prints=True)
def training_set_flow(config: PipelineConfig, client_address: str) -> dict:
    if (config.chips_path / "zarr.json").exists():
        get_run_logger().info("%s exists; nothing to do", config.chips_path)
        return {"chips": str(config.chips_path), "skipped": True}
    events_path = labelled_events(config)
    chips = build_chips(config, events_path, client_address)
    return {"events": events_path, "chips": chips, "skipped": False}
