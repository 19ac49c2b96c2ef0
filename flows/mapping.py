"""Mapping flow: loss events in provinces -> driver probabilities -> one GeoPackage each."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from distributed import Client
from prefect import flow, get_run_logger, task

from flows.cluster import gather_with_progress
from flows.config import PipelineConfig, require_file
from flows.training_set import aux_sources, chip_spec
from forestnet_model.bundle import package_versions, read_bundle_meta
from forestnet_model.map_batch import map_event_batch
from pipeline.chips import ChipSpec
from pipeline.events import clip_to_area, loss_regions, write_events
from pipeline.export import DRIVER_MAP_FIELDS, add_area_ha, read_parts, write_driver_geopackage
from pipeline.provinces import province_of, select_provinces, slug, union
from pipeline.training_set import plan_batches


def run_id_for(config: PipelineConfig, model_id: str) -> str:
    """Deterministic run id: the same job (config + model) resumes into the same folder."""
    key = json.dumps({"mapping": config.mapping.model_dump(), "chips": config.chips.model_dump(),
                      "model": model_id}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@task(name="find-loss-events")
def find_loss_events(config: PipelineConfig, run_dir: str) -> str:
    """GFC loss regions in the provinces; each owned by the province holding its anchor."""
    logger = get_run_logger()
    lossyear = require_file(config.inputs.lossyear, "lossyear")
    chosen = select_provinces(config.mapping.provinces)
    area = union(chosen)
    first, last = config.mapping.years
    events = loss_regions(lossyear, area.bounds, range(first, last + 1),
                          config.mapping.min_event_pixels)
    events = clip_to_area(events, area)
    events["province"] = province_of(events.geometry.representative_point())
    events = events[events["province"].isin(chosen["province"])].reset_index(drop=True)
    path = Path(run_dir) / "events.parquet"
    write_events(events, path)
    logger.info("%d loss events in %s, %d-%d", len(events), ", ".join(chosen["province"]),
                first, last)
    return str(path)


@task(name="predict-drivers")
def predict_drivers(config: PipelineConfig, events_path: str, run_dir: str, run_id: str,
                    client_address: str) -> list[str]:
    """Coarse task: one Dask task per batch of events, each writing a GeoParquet part."""
    n = pq.ParquetFile(events_path).metadata.num_rows
    batches = plan_batches(n, config.mapping.batch_size)
    spec: ChipSpec = chip_spec(config)
    parts = Path(run_dir) / "parts"
    client = Client(client_address, set_as_default=False)
    try:
        futures = [client.submit(map_event_batch, Path(events_path), a, b, config.scene_store,
                                 config.bundle_path, spec, aux_sources(config),
                                 parts / f"part-{a:07d}.parquet", run_id, pure=False)
                   for a, b in batches]
        results = gather_with_progress(client, futures, "map batches")
    finally:
        client.close()
    reused = sum(r["skipped"] for r in results)
    get_run_logger().info("%d batches predicted (%d reused)", len(results), reused)
    return [r["part"] for r in results]


@task(name="write-geopackages")
def write_geopackages(config: PipelineConfig, parts: list[str], run_id: str) -> list[str]:
    """The one writer: merge the parts and write ``<province>.gpkg`` per province."""
    logger = get_run_logger()
    required = [f for f in DRIVER_MAP_FIELDS if f != "area_ha"]
    features = read_parts([Path(p) for p in parts], required=required)
    no_imagery = features[features["driver_code"] == 0]
    features = add_area_ha(features[features["driver_code"] > 0])
    meta = read_bundle_meta(config.bundle_path)
    provenance = {
        "run_id": run_id, "model_id": meta.model_id, "created": datetime.now(UTC).isoformat(),
        "config": config.model_dump_json(), "package_versions": json.dumps(package_versions()),
        "events_without_imagery": ",".join(no_imagery["event_id"]),
    }
    out = []
    for province in sorted(select_provinces(config.mapping.provinces)["province"]):
        path = config.maps_dir / f"{slug(province)}.gpkg"
        subset = features[features["province"] == province]
        write_driver_geopackage(subset, path, metadata={**provenance, "province": province})
        logger.info("%s: %d events -> %s", province, len(subset), path)
        out.append(str(path))
    if len(no_imagery):
        logger.warning("%d events had no usable imagery and are not in the map: %s",
                       len(no_imagery), ", ".join(no_imagery["event_id"][:10]))
    return out


@flow(name="map", log_prints=True)
def mapping_flow(config: PipelineConfig, client_address: str) -> dict:
    meta = read_bundle_meta(config.bundle_path)
    run_id = run_id_for(config, meta.model_id)
    run_dir = config.workdir / "map-runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    events_path = run_dir / "events.parquet"
    if not events_path.exists():
        events_path = find_loss_events(config, str(run_dir))
    parts = predict_drivers(config, str(events_path), str(run_dir), run_id, client_address)
    gpkgs = write_geopackages(config, parts, run_id)
    return {"run_id": run_id, "geopackages": gpkgs}
