"""Mapping flow: lossyear -> tiles with loss -> driver per piece -> one GeoPackage per province.

Three coarse Prefect tasks, each submitting plain functions to Dask:

1. ``plan-tiles``: the lossyear raster is scanned in ~1 degree blocks (one Dask task each)
   for loss of the requested years in the area; the tiles holding it are kept.
2. ``predict-tiles``: batches of tiles, at most ``mapping.max_in_flight`` in flight. Each
   batch is a CPU task (pieces, composite, aux) feeding a model task that asks for the
   ``GPU`` resource when a worker has one: Dask prepares the next batches while the model
   runs. Each tile writes its own part; a rerun skips existing parts.
3. ``write-geopackages``: the one writer, per province (``pipeline.export.driver_maps``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from distributed import Client
from prefect import flow, get_run_logger, task

from flows.config.mapping_job import check_inputs, chosen_provinces, parts_dir_for, run_id_for
from flows.config.schema import PipelineConfig
from flows.runtime.cluster import gpu_resources
from flows.runtime.run_report import report_map_run
from flows.runtime.waves import run_in_waves
from forestnet_model.bundle_meta import BundleMeta, read_bundle_meta
from pipeline.core.progress_bar import progress_bar
from pipeline.core.run_lock import output_lock
from pipeline.core.tile_lattice import MapTile
from pipeline.export.driver_maps import MapOutputs, layer_provenance, publish_driver_maps
from pipeline.mapping import tile_plan
from pipeline.mapping.fusion_inputs import scalar_names
from pipeline.mapping.inference import infer_tiles
from pipeline.mapping.loss_pieces import tiles_in_block
from pipeline.mapping.parts import part_path
from pipeline.mapping.tile_inputs import prepare_tiles
from pipeline.mapping.tile_tally import TileTally

__all__ = ["check_inputs", "mapping_flow"]


@task(name="plan-tiles")
def plan_tiles(config: PipelineConfig, run_dir: str, client_address: str) -> str:
    """Tiles with loss of the requested years in the area; written to ``tiles.parquet``."""
    path, lossyear = Path(run_dir) / "tiles.parquet", config.inputs.lossyear
    if path.exists():
        return str(path)
    area = tile_plan.mapping_area(config.mapping.aoi, chosen_provinces(config))
    years = config.mapping.year_list()
    with Client(client_address, set_as_default=False) as client:
        shared = client.scatter(area, broadcast=True)

        def scan_on_dask(lossyear, blocks, years, _area) -> list:
            n = len(blocks)  # the area travels once, scattered to every worker
            return client.gather(client.map(tiles_in_block, [lossyear] * n, blocks,
                                            [years] * n, [shared] * n, pure=False))

        tiles, n_blocks = tile_plan.tiles_with_loss(lossyear, area, years, scan_on_dask)
    get_run_logger().info("%d tiles with %d-%d loss in %d blocks of %s", len(tiles), years[0],
                          years[-1], n_blocks, lossyear.name)
    return str(tile_plan.write_tile_plan(tiles, path))


@task(name="predict-tiles")
def predict_tiles(config: PipelineConfig, tiles_path: str, parts_dir: str, meta: BundleMeta,
                  client_address: str) -> dict:
    """Batches of tiles in waves; each finished tile leaves its part. Returns the tally."""
    logger, ids = get_run_logger(), list(pd.read_parquet(tiles_path)["tile_id"])
    parts = {t: part_path(Path(parts_dir), MapTile.from_id(t)) for t in ids}
    todo = [t for t in ids if not parts[t].exists()]
    tally = TileTally(tiles=len(ids), skipped=len(ids) - len(todo))
    with Client(client_address, set_as_default=False) as client:
        gpu = gpu_resources(client)
        batches = tile_plan.tile_batches(todo, config.mapping.tiles_per_task,
                               len(client.scheduler_info().get("workers", {})))
        logger.info("%d tiles to predict (%d already done) in %d batches, on %s", len(todo),
                    tally.skipped, len(batches), "GPU workers" if gpu else "CPU")

        def submit(batch: list[str]):
            inputs = client.submit(prepare_tiles, batch, config.inputs.lossyear,
                                   config.mapping.year_list(), config.scene_store,
                                   config.chips.spec(), meta.model.in_bands,
                                   meta.model.aux_bands, config.inputs.aux_sources(),
                                   scalar_names(meta.model.fusion_features),
                                   meta.model.event_context, config.composite_store,
                                   pure=False)
            return client.submit(infer_tiles, inputs, config.bundle_path,
                                 {t: str(parts[t]) for t in batch},
                                 config.mapping.infer_batch_size,
                                 cpu_runtime=config.mapping.cpu_runtime, resources=gpu,
                                 pure=False)

        with progress_bar() as progress:
            bar = progress.add_task("map tiles", total=len(batches))
            run_in_waves(client, batches, submit, config.mapping.max_in_flight,
                         lambda _, results: tally.record(results), tally.fail,
                         advance=lambda: progress.advance(bar))
    logger.info("composites: %d built, %d reused from %s", tally.composites_built,
                tally.composites_reused, config.composite_store)
    for tile_id, error in list(tally.failed.items())[:10]:
        logger.error("tile %s failed: %s", tile_id, error)
    return asdict(tally)


@task(name="write-geopackages")
def write_geopackages(config: PipelineConfig, tiles_path: str, parts_dir: str, run_id: str,
                      meta: BundleMeta, client_address: str) -> dict[str, list[str]]:
    """The one writer, on a worker (it runs the fusion head: the model stack stays out of
    the flow's process); returns the GeoPackages, the side outputs and the events file."""
    parts = [p for p in (part_path(Path(parts_dir), MapTile.from_id(t))
                         for t in pd.read_parquet(tiles_path)["tile_id"]) if p.exists()]
    m = config.mapping
    with Client(client_address, set_as_default=False) as client:
        written = client.submit(
            publish_driver_maps, parts, config.bundle_path, chosen_provinces(config), m.aoi,
            m.all, m.out or config.maps_dir,
            layer_provenance(run_id, meta.model_id, config.model_dump_json(),
                             config.inputs.lossyear),
            MapOutputs(m.years, m.min_event_pixels, m.driver_raster, m.dominant_grid),
            Path(tiles_path).with_name("events.parquet"), pure=False).result()
    for gpkg in map(Path, written["geopackages"]):
        get_run_logger().info("%s -> %s", gpkg.stem, gpkg)
    return written


@flow(name="map", log_prints=True)
def mapping_flow(config: PipelineConfig, client_address: str) -> dict:
    """Plan tiles, predict them in waves, write the GeoPackages and the run summary.

    One run at a time per output folder: a second run on the same folder is refused.
    """
    out_dir = config.mapping.out or config.maps_dir
    with output_lock(out_dir, "map"):
        started, started_at = time.perf_counter(), datetime.now(UTC)
        meta = read_bundle_meta(config.bundle_path)
        run_id, parts_dir = run_id_for(config, meta.model_id), parts_dir_for(config, meta)
        run_dir = config.workdir / "map-runs" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        tiles_path = plan_tiles(config, str(run_dir), client_address)
        tally = predict_tiles(config, tiles_path, str(parts_dir), meta, client_address)
        written = {"geopackages": [], "extras": [], "events": []}
        if tally["failed"]:
            # A map missing tiles must not replace a complete one: keep the previous maps;
            # a rerun retries only the failed tiles.
            get_run_logger().error("%d of %d tiles failed; GeoPackages not written (rerun to "
                                   "retry them)", len(tally["failed"]), tally["tiles"])
        else:
            written = write_geopackages(config, tiles_path, str(parts_dir), run_id, meta,
                                       client_address)
        return report_map_run(config, meta, run_id, started, started_at, tally, written)
