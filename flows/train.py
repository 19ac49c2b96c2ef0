"""Train flow: chips.zarr -> model bundle, on a GPU worker when the cluster has one."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from distributed import Client
from prefect import flow, get_run_logger, task

from flows.config.input_checks import require_writable
from flows.config.schema import ConfigError, PipelineConfig
from flows.runtime.artifacts import publish_training
from flows.runtime.cluster import matching_resources
from flows.runtime.epoch_events import epoch_feed, epoch_sender
from flows.runtime.provenance import RUN_RECORD, run_record, write_run_record
from flows.runtime.training_progress import EpochReport
from forestnet_model.bundle_meta import BundleMeta, is_complete, read_bundle_meta
from pipeline.core.radiometry import require_same, store_radiometry
from pipeline.training_set import chip_store


def check_inputs(config: PipelineConfig) -> None:
    """A finished chip store to train on, and a work folder the bundle can be written to."""
    if not chip_store.is_complete(config.chips_path):
        raise ConfigError(f"{config.chips_path}: no chip store; run `forestnet build-training-set`")
    require_writable(config.workdir, "workdir")
    if not is_complete(config.bundle_path):
        from forestnet_model.pretrained_weights import require_offline_weights

        require_offline_weights(config.model.encoder_weights, config.model.encoder)
    if is_complete(config.bundle_path):  # kept, not retrained: it must fit these chips
        chips = store_radiometry(chip_store.open_chips(config.chips_path).attrs)
        require_same(chips, f"the chip store {config.chips_path}",
                     read_bundle_meta(config.bundle_path).radiometry,
                     f"the model bundle {config.bundle_path}")


def _train(feed_id: str, *args) -> Path:
    """The Dask task: train, publishing each epoch's record to the flow's feed."""
    # Imported in the worker: the flow process never needs torch to submit the task.
    from forestnet_model.train import train_model

    return train_model(*args, on_epoch=epoch_sender(feed_id))


@task(name="train-model")
def train_on_cluster(config: PipelineConfig, client_address: str) -> str:
    """Submit training as one Dask task, asking for ``train.worker_resources`` when some
    worker holds them; otherwise it runs on a CPU worker. Each epoch shows as a line in
    this run's log and advances its progress artifact."""
    logger = get_run_logger()
    client = Client(client_address, set_as_default=False)
    try:
        wanted = config.train.worker_resources
        resources = matching_resources(client, wanted)
        if resources:
            logger.info("training on a worker with %s", resources)
        else:
            logger.info("no worker holds %s: training on a CPU worker", wanted or "resources")
        report = EpochReport(config.train.epochs, logger)
        with epoch_feed(client) as feed:
            future = client.submit(partial(_train, feed.id), config.chips_path,
                                   config.model_dir, config.model, config.train,
                                   resources=resources, pure=False)
            bundle = feed.wait(future, report)
        report.finish()
        return str(bundle)
    finally:
        client.close()


@flow(name="train", log_prints=True)
def train_flow(config: PipelineConfig, client_address: str) -> dict:
    """Train (unless the bundle exists), then record and publish what the model scores."""
    logger = get_run_logger()
    started = datetime.now(UTC)
    trained = not is_complete(config.bundle_path)
    if trained:
        bundle = train_on_cluster(config, client_address)
    else:
        logger.info("%s exists; delete it to retrain", config.bundle_path)
        bundle = str(config.bundle_path)
    meta = read_bundle_meta(config.bundle_path)
    val, test = meta.metrics.get("val", {}), meta.metrics.get("test", {})
    logger.info("model %s: val acc %.3f macro F1 %.3f; test acc %.3f macro F1 %.3f",
                meta.model_id, val.get("accuracy", float("nan")), val.get("macro_f1", float("nan")),
                test.get("accuracy", float("nan")), test.get("macro_f1", float("nan")))
    # A skipped run leaves the run.json of the run that trained this bundle; a bundle
    # without one (killed before it was written, or copied in) gets one, marked as such.
    if trained or not (config.bundle_path / RUN_RECORD).exists():
        late = {} if trained else {"recorded_after_the_fact": True}
        # The fusion inputs kept and dropped, and how much of each was missing in training.
        write_run_record(run_record(config, "train", started, counts=training_counts(meta),
                                    metrics=meta.metrics, fusion_inputs=meta.fusion_inputs,
                                    **late), config.bundle_path)
    publish_training(meta, config.bundle_path)
    return {"bundle": bundle, "model_id": meta.model_id, "metrics": meta.metrics}


def training_counts(meta: BundleMeta) -> dict:
    """Events per split and epochs, as far as the bundle records them (None otherwise)."""
    metrics = meta.metrics
    return {"train_events": metrics.get("train_events"),
            "val_events": (metrics.get("val") or {}).get("n"),
            "test_events": (metrics.get("test") or {}).get("n"),
            "epochs_run": metrics.get("epochs_run"), "epochs": meta.training.get("epochs")}
