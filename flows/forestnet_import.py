"""Import flow: the published ForestNetDataset (folder or zip) -> events + ``chips.zarr``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.config.schema import PipelineConfig
from flows.runtime.cluster import gather_with_progress
from flows.runtime.provenance import chip_band_stats, run_record, write_run_record
from pipeline.imagery.views import ChipSpec
from pipeline.training_set.batches import import_release_batch, plan_batches
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, is_complete
from pipeline.training_set.events import write_events
from pipeline.training_set.release_aux import (
    UNKNOWN_AUX,
    UNREADABLE_AUX,
    unknown_aux_counts,
    unreadable_aux_counts,
)
from pipeline.training_set.release_import import imported_store_attrs, plan_release

IMPORT_BATCH = 64  # examples per coarse task: ~64 x 3 MB of images read per task


def events_path_for(out: Path) -> Path:
    """Where the import's events table goes: next to the store."""
    return out.with_name(f"{out.stem}.events.parquet")


def plan_and_write(release: str, spec: ChipSpec, events_path: Path) -> tuple[int, list[str]]:
    """Plan the import and write its events table; return (events, problems)."""
    events, problems = plan_release(release, spec)
    write_events(events, events_path)
    return len(events), problems


def _first(notes: list[str], name: str, kind: str) -> str:
    """The first note of ``kind`` about file ``name``: one example of the reason."""
    return next((n for n in notes if kind in n and f"/{name}: " in n), "")


@task(name="plan-release")
def plan(config: PipelineConfig, release: str, out: Path, client_address: str) -> tuple[str, list]:
    """One coarse Dask task: read the CSVs and loss polygons; write the events table."""
    path = events_path_for(out)
    with Client(client_address, set_as_default=False) as client:
        n, problems = client.submit(plan_and_write, release, config.chips.spec(), path,
                                    pure=False).result()
    logger = get_run_logger()
    for problem in problems:
        logger.warning("example left out: %s", problem)
    logger.info("%d examples to import, %d left out", n, len(problems))
    return str(path), problems


@task(name="import-chips")
def import_chips(config: PipelineConfig, release: str, events_path: str, out: Path,
                 problems: list[str], client_address: str, batch_size: int) -> dict:
    """Coarse tasks of ``batch_size`` examples each, region-writing the store (resumable)."""
    import geopandas as gpd

    events = gpd.read_parquet(events_path)
    spec, bands, features = config.chips.spec(), config.aux.bands, config.aux.features
    init_chip_store(out, events, spec, bands, features, imported_store_attrs(release))
    batches = plan_batches(len(events), batch_size)
    with Client(client_address, set_as_default=False) as client:
        futures = [client.submit(import_release_batch, release, Path(events_path), a, b, out,
                                 spec, bands, features, pure=False) for a, b in batches]
        results = gather_with_progress(client, futures, "import batches")
    excluded = dict(p.split(": ", 1) for p in problems)
    store = finalize_chip_store(out, batches, extra_attrs={"excluded_examples": excluded})
    notes = [n for r in results for n in r.get("notes", [])]
    logger = get_run_logger()
    unknown = unknown_aux_counts(notes)
    for name, count in unknown.items():  # once per file name, never silently dropped
        logger.warning("auxiliary file %s not understood, not imported (%d examples)", name,
                       count)
    unreadable = unreadable_aux_counts(notes)
    for name, count in unreadable.items():  # once per file name, never silently dropped
        logger.warning("auxiliary file %s: a value unreadable, not imported (%d examples; "
                       "e.g. %s)", name, count, _first(notes, name, UNREADABLE_AUX))
    counted = (UNKNOWN_AUX, UNREADABLE_AUX)
    for note in [n for n in notes if not any(k in n for k in counted)][:10]:
        logger.info("note: %s", note)
    failed = sum(r.get("failed", 0) for r in results)
    return {"chips": str(store), "events": events_path, "imported": len(events) - failed,
            "failed": failed, "left_out": len(problems), "notes": len(notes),
            "unknown_aux_files": unknown, "unreadable_aux_values": unreadable,
            "reused_batches": sum(r["skipped"] for r in results)}


@flow(name="import-forestnet", log_prints=True)
def import_forestnet_flow(config: PipelineConfig, client_address: str, release: str,
                          out: Path, batch_size: int = IMPORT_BATCH) -> dict:
    """plan (CSVs + polygons) -> batches of examples -> one finalised chips.zarr."""
    out = Path(out)
    if is_complete(out):
        get_run_logger().info("%s exists; nothing to do", out)
        return {"chips": str(out), "skipped": True}
    started = datetime.now(UTC)
    events_path, problems = plan(config, release, out, client_address)
    result = import_chips(config, release, events_path, out, problems, client_address,
                          batch_size)
    counts = {k: result[k] for k in ("imported", "failed", "left_out", "reused_batches")}
    write_run_record(run_record(config, "import-forestnet", started, counts=counts,
                                from_scenes=False, release=str(release),
                                unknown_aux_files=result["unknown_aux_files"],
                                unreadable_aux_values=result["unreadable_aux_values"],
                                band_stats=chip_band_stats(out)), out)
    return {**result, "skipped": False}
