"""Train flow: chips.zarr -> model bundle, on a GPU worker when the cluster has one."""

from __future__ import annotations

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.cluster import gpu_resources
from flows.config import PipelineConfig
from forestnet_model.bundle import read_bundle_meta
from forestnet_model.train import train_model


@task(name="train-model")
def train_on_cluster(config: PipelineConfig, client_address: str) -> str:
    """Submit training as one Dask task; it asks for ``GPU=1`` when any worker has it."""
    logger = get_run_logger()
    client = Client(client_address, set_as_default=False)
    try:
        resources = gpu_resources(client)
        logger.info("training on %s", "a GPU worker" if resources else "a CPU worker (no GPU)")
        future = client.submit(train_model, config.chips_path, config.model_dir, config.model,
                               config.train, resources=resources, pure=False)
        return str(future.result())
    finally:
        client.close()


@flow(name="train", log_prints=True)
def train_flow(config: PipelineConfig, client_address: str) -> dict:
    logger = get_run_logger()
    if (config.bundle_path / "bundle.json").exists():
        logger.info("%s exists; delete it to retrain", config.bundle_path)
        bundle = str(config.bundle_path)
    else:
        bundle = train_on_cluster(config, client_address)
    meta = read_bundle_meta(config.bundle_path)
    val, test = meta.metrics.get("val", {}), meta.metrics.get("test", {})
    logger.info("model %s: val acc %.3f macro F1 %.3f; test acc %.3f macro F1 %.3f",
                meta.model_id, val.get("accuracy", float("nan")), val.get("macro_f1", float("nan")),
                test.get("accuracy", float("nan")), test.get("macro_f1", float("nan")))
    return {"bundle": bundle, "model_id": meta.model_id, "metrics": meta.metrics}
