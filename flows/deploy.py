"""Deployable entry flows: what a Prefect schedule, ``forestnet deploy --serve`` or a work
pool worker runs.

Each job takes JSON parameters (a config path and a few overrides), loads and checks the
config, opens the configured Dask cluster and runs the pipeline's flow as a subflow, like
the ``forestnet`` verbs do. Their deployments (``prefect.yaml``, ``forestnet deploy``)
are planned in ``flows/cli/deployments.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger

from flows.config.overrides import with_cluster_address, with_mapping
from flows.config.schema import PipelineConfig, load_config, parse_years

DEFAULT_CONFIG = "configs/demo.yaml"


def job_config(
    config: str | Path,
    dask_address: str | None = None,
    provinces: list[str] | None = None,
    years: str | None = None,
) -> PipelineConfig:
    """Load a config and apply a job's overrides (validated: a bad value is one line)."""
    cfg = with_cluster_address(load_config(Path(config)), dask_address)
    update: dict[str, Any] = {}
    if provinces:  # naming provinces replaces --all or an AOI from the config
        update.update({"provinces": list(provinces), "all": False, "aoi": None})
    if years:
        update["years"] = parse_years(years)
    return with_mapping(cfg, update, "mapping override")


def _on_cluster(
    cfg: PipelineConfig, check_inputs: Callable[[PipelineConfig], None],
    flows: list[Callable[[PipelineConfig, str], dict]],
) -> list[dict]:
    """Check the first flow's inputs, open the cluster and run the flows in order on it."""
    from flows.runtime.cluster import dask_client

    check_inputs(cfg)
    logger = get_run_logger()
    # Cluster start/stop chatter (INFO once distributed is imported) buries the run's log.
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with dask_client(cfg.cluster, echo=logger.info) as client:
        return [run(cfg, client.scheduler.address) for run in flows]


@flow(name="ingest-job", log_prints=True)
def ingest_job(config: str = DEFAULT_CONFIG, dask_address: str | None = None) -> dict:
    """Ingest the config's Landsat inputs; reruns skip finished scenes.

    Fails (after ingesting everything else) when a scene failed, so that a scheduled run
    shows up red; the failures are in the scene index and the log.
    """
    from flows.ingest import check_inputs, ingest_flow

    (result,) = _on_cluster(job_config(config, dask_address), check_inputs, [ingest_flow])
    if result["failed"]:
        names = ", ".join(f["scene_id"] for f in result["failures"][:5])
        raise RuntimeError(f"{result['failed']} scene(s) failed to ingest: {names}")
    return result


@flow(name="train-job", log_prints=True)
def train_job(config: str = DEFAULT_CONFIG, dask_address: str | None = None) -> dict:
    """Build the training set (skipped when it exists), then train a model bundle."""
    from flows.train import train_flow
    from flows.training_set import check_inputs, training_set_flow

    chips, model = _on_cluster(job_config(config, dask_address), check_inputs,
                               [training_set_flow, train_flow])
    return {"chips": chips, "model": model}


@flow(name="map-job", log_prints=True)
def map_job(
    config: str = DEFAULT_CONFIG,
    provinces: list[str] | None = None,
    years: str | None = None,
    dask_address: str | None = None,
) -> dict:
    """Map loss drivers for provinces (default: the config's) and years like "2015-2020"."""
    from flows.mapping import check_inputs, mapping_flow

    cfg = job_config(config, dask_address, provinces, years)
    (result,) = _on_cluster(cfg, check_inputs, [mapping_flow])
    return result


JOBS: dict[str, Flow] = {"ingest_job": ingest_job, "train_job": train_job, "map_job": map_job}
