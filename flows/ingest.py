"""Ingest flow: Landsat folders, USGS tars and STAC Items -> ``scenes.zarr`` + ``index.parquet``.

A recipe over coarse tasks: find the products, read their MTLs (one Dask task each),
drop duplicates, ingest one Dask task per scene. The index is written here, by this one
process, every few seconds as scenes finish, so a killed run keeps what it finished.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.config.input_checks import require_writable
from flows.config.schema import ConfigError, PipelineConfig, require_file
from flows.runtime.cluster import gather_with_progress
from flows.runtime.provenance import run_record, write_run_record
from pipeline.core.atomic import clean_stale_temporaries
from pipeline.ingest.catalog import INDEX_NAME, is_complete, read_index, write_index
from pipeline.ingest.scene_ingest import identify, ingest_row, plan_ingest
from pipeline.ingest.scene_store import ensure_root
from pipeline.ingest.sources import ProductSource, resolve_sources

#: Seconds between index writes while scenes finish.
FLUSH_EVERY_S = 10.0


@task(name="find-products", cache_policy=NO_CACHE)
def find_products(entries: list) -> list[ProductSource]:
    """Resolve SOURCE folders, tars and STAC Item files into one record per product."""
    return resolve_sources(entries)


@task(name="identify-scenes", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def identify_scenes(sources: list[ProductSource], client_address: str) -> list[dict]:
    """Read every product's MTL on the workers (remote MTLs cost a round trip each)."""
    client = Client(client_address, set_as_default=False)
    try:
        return client.gather(client.map(identify, sources, pure=False))
    finally:
        client.close()


@task(name="ingest-scenes", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def ingest_scenes(
    todo: list[tuple[ProductSource, str | None]], store: str, client_address: str
) -> list[dict]:
    """One coarse task: one Dask task per scene; index rows are written as scenes finish."""
    pending: list[dict] = []
    last = [time.monotonic()]

    def record(row: dict) -> None:
        pending.append(row)
        if time.monotonic() - last[0] >= FLUSH_EVERY_S:
            write_index(Path(store), pending)
            pending.clear()
            last[0] = time.monotonic()

    client = Client(client_address, set_as_default=False)
    try:
        futures = [client.submit(ingest_row, source, store, status, pure=False)
                   for source, status in todo]
        rows = gather_with_progress(client, futures, "ingest scenes", on_result=record)
    finally:
        client.close()
    if pending:
        write_index(Path(store), pending)
    return [_summary(r) for r in rows]


def _summary(row: dict) -> dict:
    return {k: row[k] for k in ("scene_id", "status", "error", "source")}


def check_inputs(config: PipelineConfig) -> None:
    """The Landsat inputs are named and there, and the scene store can be written."""
    if not config.inputs.landsat:
        raise ConfigError("inputs.landsat is empty: name product folders or pass SOURCES")
    for i, path in enumerate(config.inputs.landsat):
        if isinstance(path, Path):  # URLs are checked when they are read
            require_file(path, f"landsat[{i}]")
    require_writable(config.scene_store, "scenes")


@flow(name="ingest", log_prints=True)
def ingest_flow(config: PipelineConfig, client_address: str) -> dict:
    """Ingest every product under ``inputs.landsat``; failed scenes get an error row."""
    logger = get_run_logger()
    started = datetime.now(UTC)
    store = config.scene_store
    sources = find_products(list(config.inputs.landsat))
    if not sources:
        raise ConfigError(
            "inputs.landsat: no Landsat products found (folders with an *_MTL.txt/json/xml, "
            ".tar bundles or STAC Item JSON files)"
        )
    ensure_root(store)
    removed = clean_stale_temporaries(store)
    if removed:
        logger.info("removed %d stale temporary scene groups from killed runs", removed)
    identities = identify_scenes(sources, client_address)
    index = read_index(store) if is_complete(store) else None
    todo, rejected = plan_ingest(sources, identities, index)
    if rejected:
        write_index(store, rejected)
    results = [_summary(r) for r in rejected]
    results += ingest_scenes(todo, str(store), client_address)
    counts = {s: sum(r["status"] == s for r in results) for s in ("ingested", "skipped", "failed")}
    logger.info("ingest: %s -> %s", counts, store / INDEX_NAME)
    failures = [r for r in results if r["status"] == "failed"]
    for r in failures:
        logger.error("scene %s from %s failed: %s", r["scene_id"], r["source"], r["error"])
    # A plain file in the store's root: Zarr only reads folders holding a zarr.json.
    write_run_record(run_record(config, "ingest", started, counts=counts, failures=failures),
                     store)
    return {"store": str(store), "index": str(store / INDEX_NAME), **counts,
            "failures": failures}
