"""Ingest flow: Landsat folders, USGS tars, STAC Items and STAC API searches ->
``scenes.zarr`` + ``index.parquet``.

A recipe over coarse tasks: find the products (or search the API), read their MTLs (one
Dask task each), drop duplicates, ingest one Dask task per scene: the whole product, or
for a search the part the job's area needs, read in place. The index is written here, by
this one process, every few seconds as scenes finish, so a killed run keeps what it
finished.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from distributed import Client
from odc.geo.geom import Geometry
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from shapely.geometry.base import BaseGeometry

from flows.config.input_checks import require_writable
from flows.config.schema import ConfigError, PipelineConfig, require_file
from flows.config.stac_job import chip_margin, stac_search_for
from flows.runtime.cluster import gather_with_progress
from flows.runtime.provenance import run_record, write_run_record
from pipeline.core.atomic import clean_stale_temporaries
from pipeline.ingest.catalog import (
    INDEX_NAME,
    is_complete,
    read_index,
    write_index,
)
from pipeline.ingest.run_rows import BatchedIndexWriter, summary, tally
from pipeline.ingest.scene_ingest import identify, ingest_row, known_identities, plan_ingest
from pipeline.ingest.scene_store import ensure_root
from pipeline.ingest.sources import ProductSource, resolve_sources
from pipeline.ingest.stac_search import SearchResult, StacSearch, check_api, search_products

#: Seconds between index writes while scenes finish.
FLUSH_EVERY_S = 10.0


@task(name="find-products", cache_policy=NO_CACHE)
def find_products(entries: list) -> list[ProductSource]:
    """Resolve SOURCE folders, tars and STAC Item files into one record per product."""
    return resolve_sources(entries)


@task(name="search-stac", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def search_stac(search: StacSearch) -> SearchResult:
    """Search the STAC API over the job's area and dates; pair L1 with L2."""
    found = search_products(search)
    logger = get_run_logger()
    logger.info("%s: %d items, %d kept (dropped: %s); acquisitions %s; server-side: %s",
                search.url, found.found, len(found.sources), found.dropped or "none",
                found.acquisitions, ", ".join(found.extensions) or "nothing")
    return found


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
    todo: list[tuple[ProductSource, str | None]], store: str, client_address: str,
    area: BaseGeometry | None = None, margin: int = 0, stored: dict[str, str] | None = None,
) -> list[dict]:
    """One coarse task: one Dask task per scene; index rows are written as scenes finish."""
    index = BatchedIndexWriter(Path(store), FLUSH_EVERY_S)
    part_of = None if area is None else Geometry(area, "EPSG:4326")
    client = Client(client_address, set_as_default=False)
    try:
        futures = [client.submit(ingest_row, source, store, status, part_of, margin,
                                 (stored or {}).get(source.origin), pure=False)
                   for source, status in todo]
        rows = gather_with_progress(client, futures, "ingest scenes", on_result=index.add)
    finally:
        client.close()
        index.flush()
    return [summary(r) for r in rows]


def check_inputs(config: PipelineConfig) -> None:
    """The Landsat inputs are named and there, and the scene store can be written."""
    if not config.inputs.landsat and config.inputs.landsat_stac is None:
        raise ConfigError("inputs.landsat is empty: name product folders, pass SOURCES or "
                          "search a STAC API (--stac-api)")
    if config.inputs.landsat_stac is not None:
        check_api(config.inputs.landsat_stac.url)
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
    sources = find_products(list(config.inputs.landsat)) if config.inputs.landsat else []
    area = None
    if config.inputs.landsat_stac is not None:
        search = stac_search_for(config)
        sources += search_stac(search).sources
        area = search.area
    if not sources:
        raise ConfigError(
            "inputs.landsat: no Landsat products found (folders with an *_MTL.txt/json/xml, "
            ".tar bundles, STAC Item JSON files, or items of the STAC search)"
        )
    ensure_root(store)
    removed = clean_stale_temporaries(store)
    if removed:
        logger.info("removed %d stale temporary scene groups from killed runs", removed)
    index = read_index(store) if is_complete(store) else None
    known, unknown = known_identities(sources, index)
    found = dict(zip((s.origin for s in unknown), identify_scenes(unknown, client_address),
                     strict=True))
    identities = [known.get(s.origin) or found[s.origin] for s in sources]
    todo, rejected = plan_ingest(sources, identities, index)
    if rejected:
        write_index(store, rejected)
    results = [summary(r) for r in rejected]
    results += ingest_scenes(todo, str(store), client_address, area, chip_margin(config),
                             {origin: i["scene_id"] for origin, i in known.items()})
    run = tally(results)
    counts, read, full = run["counts"], run["bytes_read"], run["bytes_full"]
    logger.info("ingest: %s -> %s", counts, store / INDEX_NAME)
    if full:
        logger.info("read %.1f MB of the products' %.1f MB of files (%.1f%%)", read / 1e6,
                    full / 1e6, 100 * read / full)
    for r in run["failures"]:
        logger.error("scene %s from %s failed: %s", r["scene_id"], r["source"], r["error"])
    # A plain file in the store's root: Zarr only reads folders holding a zarr.json.
    write_run_record(run_record(config, "ingest", started, counts=counts,
                                failures=run["failures"], bytes_read=read, bytes_full=full),
                     store)
    return {"store": str(store), "index": str(store / INDEX_NAME), **counts,
            "failures": run["failures"], "bytes_read": read, "bytes_full": full}
