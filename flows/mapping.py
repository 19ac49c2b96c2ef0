"""Mapping flow: lossyear -> tiles with loss -> driver per piece -> one GeoPackage per province.

Three coarse Prefect tasks, each submitting plain functions to Dask:

1. ``plan-tiles``: the lossyear raster is scanned in ~1 degree blocks (one Dask task each)
   for loss pixels of the requested years in the area; the tiles holding them are kept.
2. ``predict-tiles``: batches of tiles, at most ``mapping.max_in_flight`` in flight. Each
   batch is a CPU task (pieces, composite, aux) feeding a model task that asks for the
   ``GPU`` resource when a worker has one; Dask runs the next batches' CPU tasks while the
   model runs, which is the prefetch. Each tile writes its own part; existing parts are
   skipped, so a rerun resumes.
3. ``write-geopackages``: the one writer. Per province, the parts of its tiles are read,
   pieces merged across tile edges, and ``<province>.gpkg`` written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
from distributed import Client
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from shapely.geometry.base import BaseGeometry

from flows.config.schema import PipelineConfig, require_file
from flows.runtime.artifacts import publish_quick_looks
from flows.runtime.cluster import gpu_resources
from flows.runtime.provenance import run_record, scene_ids, write_run_record
from flows.runtime.waves import run_in_waves
from forestnet_model.bundle import BundleMeta, package_versions, read_bundle_meta
from pipeline.core.atomic import atomic_output
from pipeline.core.progress_bar import progress_bar
from pipeline.core.provinces import province_names, select_provinces, slug, union
from pipeline.core.run_lock import output_lock
from pipeline.export.driver_grid import dominant_driver_grid, write_dominant_grid
from pipeline.export.driver_raster import driver_raster_grid, write_driver_cog
from pipeline.export.geopackage import add_area_ha, empty_driver_frame, write_driver_geopackage
from pipeline.export.run_summary import render_summary_markdown, summarise_run
from pipeline.export.summary_map import write_driver_png
from pipeline.mapping.area_of_interest import read_aoi
from pipeline.mapping.inference import infer_tiles
from pipeline.mapping.loss_pieces import PROVINCE_SNAP_DEGREES, plan_blocks, tiles_in_block
from pipeline.mapping.parts import file_version, part_path, part_provinces, parts_key, read_pieces
from pipeline.mapping.piece_merge import driver_fields, drop_small_events, merge_pieces
from pipeline.mapping.tile_inputs import prepare_tiles
from pipeline.mapping.tiles import MapTile
from pipeline.training_set.auxiliary import AuxSources

NATIONAL_NAME = "indonesia"


def run_id_for(config: PipelineConfig, model_id: str) -> str:
    """Deterministic run id: the same job (config + model) resumes into the same folder."""
    key = json.dumps({"mapping": config.mapping.model_dump(), "chips": config.chips.model_dump(),
                      "model": model_id}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def chosen_provinces(config: PipelineConfig) -> list[str]:
    """Every province with ``mapping.all``, else the named ones (validated)."""
    if config.mapping.all:
        return province_names()
    return sorted(select_provinces(config.mapping.provinces)["province"])


def parts_dir_for(config: PipelineConfig, meta: BundleMeta) -> Path:
    """The parts folder of this (years, model, inputs, settings) combination."""
    # Aux files shape the parts only when the model reads aux bands.
    aux_keys = AuxSources.names() if meta.model.aux_bands else ()
    inputs = {"lossyear": file_version(config.inputs.lossyear),
              # The scenes themselves, not the index file: ingest rewrites it on every run.
              "scenes": hashlib.sha256(",".join(scene_ids(config.scene_store)).encode())
              .hexdigest(),
              **{k: file_version(getattr(config.inputs, k)) for k in aux_keys}}
    settings = {"chips": config.chips.model_dump(mode="json"), "aux": list(meta.model.aux_bands)}
    key = parts_key(config.mapping.years, meta.model_id, inputs, settings)
    return config.workdir / "map-parts" / key


@task(name="plan-tiles")
def plan_tiles(config: PipelineConfig, run_dir: str, client_address: str) -> str:
    """Tiles with loss of the requested years in the area; written to ``tiles.parquet``."""
    logger = get_run_logger()
    path = Path(run_dir) / "tiles.parquet"
    if path.exists():
        return str(path)
    lossyear = require_file(config.inputs.lossyear, "lossyear")
    if config.mapping.aoi is not None:
        area = read_aoi(config.mapping.aoi).union_all()
    else:
        # Loss pixels just outside the coarse boundaries snap to the nearest province.
        area = union(select_provinces(chosen_provinces(config))).buffer(PROVINCE_SNAP_DEGREES)
    first, last = config.mapping.years
    years = list(range(first, last + 1))
    blocks = plan_blocks(lossyear, area.bounds)
    client = Client(client_address, set_as_default=False)
    try:
        area_future = client.scatter(area, broadcast=True)
        futures = client.map(tiles_in_block, [lossyear] * len(blocks), blocks,
                             [years] * len(blocks), [area_future] * len(blocks), pure=False)
        counts = client.gather(futures)
    finally:
        client.close()
    found = [c for c in counts if len(c)]
    tiles = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    if len(tiles):
        tiles = tiles.groupby(["zone", "row", "col"], as_index=False)["n_loss"].sum()
        tiles["tile_id"] = [MapTile(int(z), int(r), int(c)).tile_id
                            for z, r, c in tiles[["zone", "row", "col"]].itertuples(index=False)]
    else:
        tiles = pd.DataFrame({"zone": [], "row": [], "col": [], "n_loss": [], "tile_id": []})
    with atomic_output(path) as tmp:
        tiles.sort_values(["zone", "row", "col"]).to_parquet(tmp, index=False)
    logger.info("%d tiles with %d-%d loss in %d blocks of %s", len(tiles), first, last,
                len(blocks), lossyear.name)
    return str(path)


@task(name="predict-tiles")
def predict_tiles(config: PipelineConfig, tiles_path: str, parts_dir: str, meta: BundleMeta,
                  client_address: str) -> dict:
    """Batches of tiles in waves; each finished tile leaves its part. Returns the tally."""
    logger = get_run_logger()
    tiles = pd.read_parquet(tiles_path)
    parts = {t: part_path(Path(parts_dir), MapTile.from_id(t)) for t in tiles["tile_id"]}
    todo = [t for t in tiles["tile_id"] if not parts[t].exists()]
    tally: dict = {"tiles": len(tiles), "skipped": len(tiles) - len(todo), "done": 0,
                   "failed": {}, "notes": {}}
    first, last = config.mapping.years
    lossyear = require_file(config.inputs.lossyear, "lossyear")
    spec, sources = config.chips.spec(), config.inputs.aux_sources()
    client = Client(client_address, set_as_default=False)
    gpu = gpu_resources(client)
    # Small jobs: smaller batches, so that every worker gets one (else a 4-tile job is one
    # batch on one worker while the other idles).
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    size = max(1, min(config.mapping.tiles_per_task, math.ceil(len(todo) / n_workers)))
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    logger.info("%d tiles to predict (%d already done) in %d batches, on %s",
                len(todo), tally["skipped"], len(batches), "GPU workers" if gpu else "CPU")

    def submit(batch: list[str]):
        inputs = client.submit(prepare_tiles, batch, lossyear, list(range(first, last + 1)),
                               config.scene_store, spec, meta.model.in_bands,
                               meta.model.aux_bands, sources, pure=False)
        return client.submit(infer_tiles, inputs, config.bundle_path,
                             {t: str(parts[t]) for t in batch}, config.mapping.infer_batch_size,
                             resources=gpu, pure=False)

    def on_result(batch: list[str], results: list[dict]) -> None:
        for r in results:
            if r["status"] == "done":
                tally["done"] += 1
                if r.get("notes"):
                    tally["notes"][r["tile_id"]] = r["notes"]
            else:
                tally["failed"][r["tile_id"]] = r["error"]

    def on_error(batch: list[str], exc: BaseException) -> None:
        for tile_id in batch:
            tally["failed"][tile_id] = f"{type(exc).__name__}: {exc}"

    try:
        with progress_bar() as progress:
            bar = progress.add_task("map tiles", total=len(batches))
            run_in_waves(client, batches, submit, config.mapping.max_in_flight, on_result,
                         on_error, advance=lambda: progress.advance(bar))
    finally:
        client.close()
    for tile_id, error in list(tally["failed"].items())[:10]:
        logger.error("tile %s failed: %s", tile_id, error)
    return tally


@task(name="write-geopackages")
def write_geopackages(config: PipelineConfig, tiles_path: str, parts_dir: str, run_id: str,
                      meta: BundleMeta) -> dict:
    """The one writer: per province, merge its pieces and write ``<province>.gpkg``."""
    logger = get_run_logger()
    tiles = pd.read_parquet(tiles_path)
    finished = [p for p in (part_path(Path(parts_dir), MapTile.from_id(t))
                            for t in tiles["tile_id"]) if p.exists()]
    by_province: dict[str, list[Path]] = {}
    for path in finished:
        for province in part_provinces(path):
            by_province.setdefault(province, []).append(path)
    aoi = read_aoi(config.mapping.aoi).union_all() if config.mapping.aoi else None
    provenance = {
        "run_id": run_id, "model_id": meta.model_id, "created": datetime.now(UTC).isoformat(),
        "config": config.model_dump_json(), "package_versions": json.dumps(package_versions()),
        "tile_rule": "UTM zone tiles of 332 px at 15 m; pixels by centre; see pipeline/map_tiles",
    }
    out_dir = config.mapping.out or config.maps_dir
    written, extras, frames, without_imagery = [], [], [], []
    targets = chosen_provinces(config) if aoi is None else sorted(by_province)
    for province in targets:
        events, blind = province_events(by_province.get(province, []), province,
                                        config.mapping.min_event_pixels, aoi)
        events["run_id"] = run_id
        without_imagery.append(blind)
        frames.append(events)
        if aoi is None:
            path = out_dir / f"{slug(province)}.gpkg"
            write_driver_geopackage(events, path, metadata={
                **provenance, "province": province,
                "events_without_imagery": ",".join(blind["event_id"])})
            logger.info("%s: %d events -> %s", province, len(events), path)
            written.append(str(path))
            extras += write_side_outputs(config, events, path, select_provinces([province]))
    merged = (gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
              if frames else empty_driver_frame())
    blind = (gpd.GeoDataFrame(pd.concat(without_imagery, ignore_index=True), crs="EPSG:4326")
             if without_imagery else empty_driver_frame())
    if aoi is not None or config.mapping.all:
        name = Path(config.mapping.aoi).stem if aoi is not None else NATIONAL_NAME
        path = out_dir / f"{slug(name)}.gpkg"
        write_driver_geopackage(merged, path, metadata={
            **provenance, "province": name,
            "events_without_imagery": ",".join(blind["event_id"])})
        written.append(str(path))
        outline = (read_aoi(config.mapping.aoi) if aoi is not None
                   else select_provinces(chosen_provinces(config)))
        extras += write_side_outputs(config, merged, path, outline)
        logger.info("%s: %d events -> %s", name, len(merged), path)
    if len(blind):
        logger.warning("%d events had no usable imagery and are not in the map: %s",
                       len(blind), ", ".join(blind["event_id"][:10]))
    return {"geopackages": written, "extras": extras,
            "events": pd.concat([merged, blind], ignore_index=True)}


def province_events(parts: list[Path], province: str, min_pixels: int,
                    aoi: BaseGeometry | None = None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """One province's pieces merged into events with driver fields and areas.

    Returns the mappable events and the events with no usable imagery, which are kept out
    of the driver layer (never a guessed driver) but counted in the summary and listed in
    the layer's metadata.
    """
    pieces = read_pieces(parts, province)
    if aoi is not None and len(pieces):
        pieces = gpd.clip(pieces, aoi, keep_geom_type=True)
    if pieces.empty:
        return empty_driver_frame(), empty_driver_frame()
    events = add_area_ha(driver_fields(drop_small_events(merge_pieces(pieces), min_pixels)))
    blind = events["driver_code"] == 0
    return events[~blind], events[blind]


def write_side_outputs(config: PipelineConfig, events: gpd.GeoDataFrame, gpkg: Path,
                       outline: gpd.GeoDataFrame | None) -> list[str]:
    """The quick-look PNG beside each GeoPackage, and the optional COG and 1 km grid."""
    title = f"{gpkg.stem}: forest loss drivers {config.mapping.years[0]}-{config.mapping.years[1]}"
    written = [str(write_driver_png(events, outline, gpkg.with_suffix(".png"), title))]
    if config.mapping.driver_raster and len(events):
        # The raster covers the mapped events, not the whole province: a national run
        # would otherwise write province-sized rasters of nodata.
        written.append(str(write_driver_cog(events, gpkg.with_name(f"{gpkg.stem}-drivers.tif"),
                                            grid=driver_raster_grid(events))))
    if config.mapping.dominant_grid:
        grid = dominant_driver_grid(events)
        written.append(str(write_dominant_grid(
            grid, gpkg.with_name(f"{gpkg.stem}-dominant-1km.gpkg"))))
    return written


@flow(name="map", log_prints=True)
def mapping_flow(config: PipelineConfig, client_address: str) -> dict:
    """Plan tiles, predict them in waves, write the GeoPackages and the run summary.

    One run at a time per output folder: a second run on the same folder is refused.
    """
    out_dir = config.mapping.out or config.maps_dir
    with output_lock(out_dir, "map"):
        return _map(config, client_address, out_dir)


def _map(config: PipelineConfig, client_address: str, out_dir: Path) -> dict:
    logger = get_run_logger()
    started, started_at = time.perf_counter(), datetime.now(UTC)
    meta = read_bundle_meta(config.bundle_path)
    run_id = run_id_for(config, meta.model_id)
    run_dir = config.workdir / "map-runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = parts_dir_for(config, meta)
    tiles_path = plan_tiles(config, str(run_dir), client_address)
    tally = predict_tiles(config, tiles_path, str(parts_dir), meta, client_address)
    if tally["failed"]:
        # A map missing tiles must not replace a complete one: keep the previous maps,
        # report the failures; a rerun retries only the failed tiles.
        logger.error("%d of %d tiles failed; GeoPackages not written (rerun to retry them)",
                     len(tally["failed"]), tally["tiles"])
        written = {"geopackages": [], "extras": [], "events": empty_driver_frame()}
    else:
        written = write_geopackages(config, tiles_path, str(parts_dir), run_id, meta)
    seconds = time.perf_counter() - started
    summary = summarise_run(
        written["events"], tally["done"], tally["skipped"], len(tally["failed"]), seconds,
        extra={"run_id": run_id, "model_id": meta.model_id, "years": list(config.mapping.years),
               "geopackages": written["geopackages"], "other_outputs": written["extras"],
               "failed_tiles": tally["failed"], "tile_notes": tally["notes"]})
    write_run_record(run_record(config, "map", started_at, counts=summary["tiles"],
                                run_id=run_id, summary=summary), out_dir)
    create_markdown_artifact(render_summary_markdown(summary), key="map-run-summary",
                             description=f"forestnet map run {run_id}")
    publish_quick_looks([Path(p) for p in written["extras"] if p.endswith(".png")], run_id)
    logger.info("map: %d tiles (%d skipped, %d failed), %d events in %.1f s", tally["tiles"],
                tally["skipped"], len(tally["failed"]), summary["events"]["total"], seconds)
    return {"run_id": run_id, "geopackages": written["geopackages"], "tiles": tally,
            "seconds": seconds, "summary": summary}
