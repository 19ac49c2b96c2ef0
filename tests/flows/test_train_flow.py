"""The train flow's placement: GPU (or any configured) resources when a worker holds them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import flows.train as train_flow
from flows.config.schema import PipelineConfig
from flows.runtime.cluster import gpu_resources, matching_resources
from forestnet_model.specs import TrainSpec


class FakeFuture:
    def __init__(self, value: object) -> None:
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> object:
        return self.value


class FakeClient:
    """Just enough of ``distributed.Client``: workers with resources, and submit."""

    workers: dict = {}
    submitted: list = []

    def __init__(self, address: str, set_as_default: bool = False) -> None:
        self.address = address

    def scheduler_info(self, n_workers: int = 5) -> dict:
        assert n_workers == -1  # every worker, not the first five
        return {"workers": self.workers}

    def subscribe_topic(self, topic: str, handler) -> None:  # the epoch feed
        pass

    def unsubscribe_topic(self, topic: str) -> None:
        pass

    def submit(self, fn, *args, resources=None, pure=True):
        FakeClient.submitted.append({"fn": fn, "args": args, "resources": resources})
        return FakeFuture("/bundle")

    def close(self) -> None:
        pass


def _workers(*resources: dict) -> dict:
    return {f"tcp://w{i}": {"resources": r} for i, r in enumerate(resources)}


@pytest.mark.parametrize(("workers", "wanted", "expected"), [
    (_workers({}, {"GPU": 1}), {"GPU": 1}, {"GPU": 1}),
    (_workers({}, {}), {"GPU": 1}, None),
    (_workers({"GPU": 2, "MEM": 4}), {"GPU": 1, "MEM": 8}, None),
    (_workers({"GPU": 2, "MEM": 8}), {"GPU": 1, "MEM": 8}, {"GPU": 1, "MEM": 8}),
    (_workers({"GPU": 1}), {}, None),
])
def test_matching_resources(workers, wanted, expected):
    FakeClient.workers = workers
    assert matching_resources(FakeClient("x"), wanted) == expected


@pytest.mark.parametrize(("workers", "expected"), [
    (_workers({}, {"GPU": 1}), {"GPU": 1.0}), (_workers({}, {"MEM": 8}), None)])
def test_gpu_work_asks_for_a_gpu_only_when_a_worker_holds_one(workers, expected):
    FakeClient.workers = workers
    assert gpu_resources(FakeClient("x")) == expected


@pytest.mark.parametrize(("workers", "resources"), [
    (_workers({"GPU": 1}), {"GPU": 1.0}),
    (_workers({}), None),
])
def test_training_asks_for_the_resources_only_when_a_worker_holds_them(
    monkeypatch, tmp_path: Path, caplog, workers, resources
):
    monkeypatch.setattr(train_flow, "Client", FakeClient)
    monkeypatch.setattr(train_flow, "get_run_logger", lambda: logging.getLogger("train-flow"))
    FakeClient.workers, FakeClient.submitted = workers, []
    config = PipelineConfig(workdir=tmp_path, train=TrainSpec(worker_resources={"GPU": 1}))
    with caplog.at_level(logging.INFO, logger="train-flow"):
        assert train_flow.train_on_cluster.fn(config, "tcp://scheduler") == "/bundle"
    (call,) = FakeClient.submitted
    assert call["fn"].func is train_flow._train  # bound to the run's epoch feed
    assert call["resources"] == resources
    assert call["args"][:2] == (config.chips_path, config.model_dir)
    if resources is None:
        assert "training on a CPU worker" in caplog.text
