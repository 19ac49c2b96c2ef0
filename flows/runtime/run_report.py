"""What a finished map run leaves behind: its summary, ``run.json``, Prefect artifacts and
the closing log line."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import geopandas as gpd
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.config.schema import PipelineConfig
from flows.runtime.artifacts import publish_quick_looks
from flows.runtime.provenance import run_record, write_run_record
from forestnet_model.bundle_meta import BundleMeta
from forestnet_model.fusion_features import missing_warnings
from pipeline.export.geopackage import empty_driver_frame
from pipeline.export.run_summary import render_summary_markdown, summarise_run
from pipeline.mapping.event_drivers import imputed_fractions


def report_map_run(config: PipelineConfig, meta: BundleMeta, run_id: str, started: float,
                   started_at: datetime, tally: dict, written: dict[str, list[str]]) -> dict:
    """Summarise the run from its tally and written events; record and publish it."""
    seconds = time.perf_counter() - started
    events = (gpd.read_parquet(written["events"][0]) if written["events"]
              else empty_driver_frame())
    summary = summarise_run(
        events, tally["done"], tally["skipped"], len(tally["failed"]), seconds,
        extra={"run_id": run_id, "model_id": meta.model_id, "years": list(config.mapping.years),
               "geopackages": written["geopackages"], "other_outputs": written["extras"],
               "failed_tiles": tally["failed"], "tile_notes": tally["notes"],
               "composites": {"built": tally["composites_built"],
                              "reused": tally["composites_reused"],
                              "store": str(config.composite_store)}})
    features = meta.model.fusion_features
    if features:
        # Features the map's inputs lacked reached the model as their training mean.
        summary["fusion_inputs_missing_fraction"] = missing = imputed_fractions(events, features)
        for line in missing_warnings(missing, features, "mapped events"):
            get_run_logger().warning(line)
    write_run_record(run_record(config, "map", started_at, counts=summary["tiles"],
                                run_id=run_id, summary=summary),
                     config.mapping.out or config.maps_dir)
    create_markdown_artifact(render_summary_markdown(summary), key="map-run-summary",
                             description=f"forestnet map run {run_id}")
    publish_quick_looks([Path(p) for p in written["extras"] if p.endswith(".png")], run_id)
    get_run_logger().info(
        "map: %d tiles (%d skipped, %d failed), %d events in %.1f s", tally["tiles"],
        tally["skipped"], len(tally["failed"]), summary["events"]["total"], seconds)
    return {"run_id": run_id, "geopackages": written["geopackages"], "tiles": tally,
            "seconds": seconds, "summary": summary}
