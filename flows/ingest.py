"""Ingest flow: Landsat product folders -> ``scenes.zarr`` + ``index.parquet``."""

from __future__ import annotations

import logging
from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.cluster import gather_with_progress
from flows.config import ConfigError, PipelineConfig
from pipeline.atomic import clean_stale_temporaries
from pipeline.catalog import failed_row, scene_row, write_index
from pipeline.ingest import IngestResult, ingest_scene


def find_products(sources: list[Path]) -> list[Path]:
    """Product folders (holding one ``*_MTL.txt``) among the given folders, sorted."""
    found: set[Path] = set()
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise ConfigError(f"inputs.landsat: not found: {source}")
        if any(source.glob("*_MTL.txt")):
            found.add(source)
        found.update(p.parent for p in source.glob("*/*_MTL.txt"))
    return sorted(found)


def _ingest_one(product_dir: str, store: str) -> dict:
    """Worker-side: ingest one scene, turning any failure into a summary (not a crash)."""
    try:
        result = ingest_scene(Path(product_dir), Path(store))
    except Exception as exc:  # one bad scene must not stop the others
        name = Path(product_dir).name
        logging.getLogger(__name__).error("%s: %s", product_dir, exc)
        result = IngestResult(name, "failed", error=str(exc), source=product_dir)
    return result.__dict__


@task(name="ingest-scenes", retries=1, retry_delay_seconds=5)
def ingest_scenes(products: list[str], store: str, client_address: str) -> list[dict]:
    """One coarse task: fan the scenes out to Dask workers, one Dask task per scene."""
    client = Client(client_address, set_as_default=False)
    try:
        futures = client.map(_ingest_one, products, store=store, pure=False)
        return gather_with_progress(client, futures, "ingest scenes")
    finally:
        client.close()


@task(name="write-scene-index")
def write_scene_index(results: list[dict], store: str) -> str:
    rows = [
        scene_row(Path(store), r["scene_id"], r["status"], r["source"]) if r["status"] != "failed"
        else failed_row(r["scene_id"], r["source"], r["error"])
        for r in results
    ]
    return str(write_index(Path(store), rows))


@flow(name="ingest", log_prints=True)
def ingest_flow(config: PipelineConfig, client_address: str) -> dict:
    """Ingest every product under ``inputs.landsat``; failed scenes get an error row."""
    logger = get_run_logger()
    products = [str(p) for p in find_products(config.inputs.landsat)]
    if not products:
        raise ConfigError("inputs.landsat: no Landsat product folders (*_MTL.txt) found")
    removed = clean_stale_temporaries(config.scene_store)
    if removed:
        logger.info("removed %d stale temporary scene groups from killed runs", removed)
    results = ingest_scenes(products, str(config.scene_store), client_address)
    index = write_scene_index(results, str(config.scene_store))
    counts = {s: sum(r["status"] == s for r in results) for s in ("ingested", "skipped", "failed")}
    logger.info("ingest: %s -> %s", counts, index)
    for r in results:
        if r["status"] == "failed":
            logger.error("scene %s failed: %s", r["source"], r["error"])
    return {"store": str(config.scene_store), "index": index, **counts}
