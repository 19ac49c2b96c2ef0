"""Training progress in the flow's log and a Prefect progress artifact, sent by the worker.

The real ``train-model`` task on a real process LocalCluster and a real Prefect API
(``prefect_harness``); the training function on the worker is a fake that reports epochs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dask
import pytest
from distributed import KilledWorker, LocalCluster
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

import flows.train as train_module
from flows.config.schema import PipelineConfig
from flows.runtime import training_progress
from flows.runtime.epoch_events import epoch_sender
from flows.runtime.training_progress import PROGRESS_KEY, EpochReport, epoch_line
from forestnet_model.specs import TrainSpec


def record(epoch: int) -> dict:
    """A train.py epoch record; epoch 1 is the best."""
    return {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.5 + 0.1 * epoch,
            "val_macro_f1": [0.4, 0.6, 0.5][epoch], "val_nll": 1.0,
            "best_val_macro_f1": [0.4, 0.6, 0.6][epoch], "best_epoch": [0, 1, 1][epoch],
            "images_per_s": 10.0, "seconds": 1.25}


# The fakes run in the worker process, called as the flow calls ``_train``.
def three_epochs(feed_id: str, chips_path: Path, model_dir: Path, *args) -> str:
    send = epoch_sender(feed_id)
    for epoch in range(3):
        send(record(epoch))
    return str(Path(model_dir) / "bundle")


def fails_after_one_epoch(feed_id: str, *args) -> str:
    epoch_sender(feed_id)(record(0))
    raise RuntimeError("training diverged")


def dies_after_one_epoch(feed_id: str, *args) -> str:
    epoch_sender(feed_id)(record(0))
    time.sleep(0.5)
    os._exit(1)


@pytest.fixture(scope="module")
def process_cluster() -> Iterator[str]:
    """One worker process; a task whose worker dies fails at once (no retries)."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
            memory_limit="2GiB") as cluster:
        yield cluster.scheduler_address


@flow(name="training-progress-test")
def train_only(config: PipelineConfig, address: str) -> str:
    return train_module.train_on_cluster(config, address)


def run_training(monkeypatch: pytest.MonkeyPatch, fake, address: str, tmp_path: Path,
                 epochs: int):
    monkeypatch.setattr(train_module, "_train", fake)
    config = PipelineConfig(workdir=tmp_path, train=TrainSpec(epochs=epochs))
    return train_only(config, address, return_state=True)


def epoch_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "prefect.task_runs" and r.getMessage().startswith("epoch ")]


def progress_artifacts(state) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[PROGRESS_KEY])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))


def test_epoch_line_reads_like_the_worker_log() -> None:
    assert epoch_line(record(2), 16, improved=True) == (
        "epoch 3/16: loss 0.3333, val accuracy 0.700, val macro F1 0.500 (best), 1.2 s")
    empty = {"epoch": 0, "train_loss": None, "val_accuracy": float("nan"), "val_macro_f1": 0.0}
    assert epoch_line(empty, 2, improved=False) == (
        "epoch 1/2: loss n/a, val accuracy n/a, val macro F1 0.000, n/a s")


def test_best_marks_the_kept_model_as_train_py_picks_it(monkeypatch) -> None:
    """The epoch train.py kept (its record's ``best_epoch``: a higher val macro F1, or the
    same F1 with a lower val NLL), also after a resume, where earlier epochs are unseen."""
    monkeypatch.setattr(training_progress, "create_progress_artifact", lambda *a, **k: None)
    lines: list[str] = []
    report = EpochReport(5, SimpleNamespace(info=lines.append, warning=lines.append))
    for epoch, (f1, nll, best) in enumerate([(0.4, 1.0, 0), (0.6, 0.9, 1), (0.6, 0.8, 2),
                                             (0.6, 0.85, 2), (0.5, 0.7, 2)]):
        report({"epoch": epoch, "train_loss": 1.0, "val_accuracy": 0.5, "val_macro_f1": f1,
                "val_nll": nll, "best_val_macro_f1": 0.6, "best_epoch": best, "seconds": 1.0})
    assert ["(best)" in line for line in lines] == [True, True, True, False, False]


def test_each_epoch_is_one_line_in_the_flow_log_and_the_progress_reaches_100(
        prefect_harness, process_cluster: str, monkeypatch, caplog, tmp_path: Path) -> None:
    with caplog.at_level(logging.INFO, logger="prefect"):
        state = run_training(monkeypatch, three_epochs, process_cluster, tmp_path, epochs=3)
    assert state.is_completed() and state.result().endswith("bundle")
    lines = epoch_lines(caplog)
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert [line.endswith(", 1.2 s") for line in lines] == [True] * 3
    assert ["(best)" in line for line in lines] == [True, True, False]
    (artifact,) = progress_artifacts(state)
    assert artifact.type == "progress" and float(artifact.data) == 100.0
    assert artifact.description == "training finished"


def test_an_early_stop_still_ends_at_100(prefect_harness, process_cluster: str, monkeypatch,
                                         caplog, tmp_path: Path) -> None:
    with caplog.at_level(logging.INFO, logger="prefect"):
        state = run_training(monkeypatch, three_epochs, process_cluster, tmp_path, epochs=8)
    assert state.is_completed()
    assert [line.split(":")[0] for line in epoch_lines(caplog)] == [
        "epoch 1/8", "epoch 2/8", "epoch 3/8"]
    (artifact,) = progress_artifacts(state)
    assert float(artifact.data) == 100.0
    assert artifact.description == "training stopped early after epoch 3 of 8"


def test_an_error_on_the_worker_fails_the_flow_promptly(
        prefect_harness, process_cluster: str, monkeypatch, caplog, tmp_path: Path) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="prefect"), pytest.raises(
            RuntimeError, match="training diverged"):
        run_training(monkeypatch, fails_after_one_epoch, process_cluster, tmp_path,
                     epochs=3).result()
    assert time.monotonic() - started < 20
    assert [line.split(":")[0] for line in epoch_lines(caplog)] == ["epoch 1/3"]


def test_a_worker_that_dies_fails_the_flow_instead_of_hanging(
        prefect_harness, process_cluster: str, monkeypatch, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(KilledWorker):
        run_training(monkeypatch, dies_after_one_epoch, process_cluster, tmp_path,
                     epochs=3).result()
    assert time.monotonic() - started < 30
