"""Prefect artifacts and ``run.json`` of the train flow, and the map flow's quick looks.

Real flows against a temporary Prefect database (the ``prefect_harness`` fixture), read back
through Prefect's client. Training itself is replaced by a fake cluster that writes a
bundle with known metrics: these tests are about what the flow records and publishes.
"""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pytest
from PIL import Image
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from torch import nn

import flows.train as train_module
from flows.config.schema import PipelineConfig, load_config
from flows.mapping import mapping_flow
from flows.runtime.artifacts import CONFUSION_KEY, METRICS_KEY, QUICK_LOOK_KEY, publish_quick_looks
from forestnet_model.bundle import save_bundle
from forestnet_model.specs import ModelSpec, TrainSpec
from pipeline.core.provinces import select_provinces
from pipeline.export.geopackage import empty_driver_frame
from pipeline.export.summary_map import write_driver_png
from tests.ingest_inputs import threads_cluster
from tests.map_job import clone_map_job
from tests.model.test_report import METRICS

INLINE_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


class FakeFuture:
    def __init__(self, value: object) -> None:
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> object:
        return self.value


#: What training recorded about the fusion inputs: run.json carries it.
FUSION_INPUTS = {"kept": ["street_dist_km"],
                 "dropped": {"peat_fraction": "constant (0) over the training events"},
                 "missing_fraction": {"street_dist_km": 0.25, "peat_fraction": 0.0}}


class TrainingClient:
    """Stands in for ``distributed.Client``: "training" writes a bundle with ``METRICS``."""

    def __init__(self, address: str, set_as_default: bool = False) -> None:
        pass

    def scheduler_info(self, n_workers: int = 5) -> dict:
        return {"workers": {}}

    def subscribe_topic(self, topic: str, handler) -> None:  # the epoch feed
        pass

    def unsubscribe_topic(self, topic: str) -> None:
        pass

    def submit(self, fn, chips_path, model_dir, model, train, resources=None, pure=True):
        meta = {"model": model, "normalisation": {"mean": [0.1] * 6, "std": [0.05] * 6},
                "training": train.model_dump(mode="json"), "metrics": METRICS,
                "fusion_inputs": FUSION_INPUTS}
        # Any module will do: the flow reads the manifest, never the weights.
        return FakeFuture(save_bundle(nn.Linear(2, 1), meta, Path(model_dir) / "bundle"))

    def close(self) -> None:
        pass


def artifacts(flow_run_id: UUID, key: str) -> list:
    """The artifacts with ``key`` that one flow run published."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def inline_png(markdown: str) -> bytes:
    (data,) = INLINE_PNG.findall(markdown)
    return base64.b64decode(data)


@pytest.fixture(scope="module")
def train_runs(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two train flow runs: one that trains, and a rerun that finds the bundle."""
    patch = pytest.MonkeyPatch()
    patch.setattr(train_module, "Client", TrainingClient)
    config = PipelineConfig(workdir=tmp_path_factory.mktemp("train"),
                            model=ModelSpec(encoder="resnet18"), train=TrainSpec(epochs=3))
    try:
        first = train_module.train_flow(config, "tcp://fake", return_state=True)
        record = json.loads((config.bundle_path / "run.json").read_text())
        again = train_module.train_flow(config, "tcp://fake", return_state=True)
    finally:
        patch.undo()
    return {"config": config, "first": first, "again": again, "record": record}


def test_train_run_json_holds_counts_metrics_and_provenance(train_runs: dict) -> None:
    record = train_runs["record"]
    result = train_runs["first"].result()
    assert record["verb"] == "train"
    assert datetime.fromisoformat(record["started"]) < datetime.fromisoformat(record["ended"])
    assert record["bundle"] == result["model_id"] and result["model_id"].startswith("forestnet-")
    assert record["counts"] == {"train_events": 12, "val_events": 5, "test_events": 4,
                                "epochs_run": 3, "epochs": 3}
    assert record["metrics"] == METRICS
    assert record["fusion_inputs"] == FUSION_INPUTS
    assert record["config"]["train"]["epochs"] == 3 and "git_sha" in record
    assert record["seeds"]["train"] == 0 and record["package_versions"]["torch"]


def test_a_rerun_that_skips_training_keeps_the_run_json(train_runs: dict) -> None:
    bundle = train_runs["config"].bundle_path
    assert train_runs["again"].is_completed()
    assert json.loads((bundle / "run.json").read_text()) == train_runs["record"]


def test_a_bundle_without_run_json_gets_one_marked_late(train_runs: dict) -> None:
    """A bundle copied in, or left by a run killed before its run.json: a rerun records
    it, marked as recorded after the fact, with the bundle's own counts and metrics."""
    config, record = train_runs["config"], train_runs["record"]
    path = config.bundle_path / "run.json"
    path.unlink()
    try:
        assert train_module.train_flow(config, "tcp://unused", return_state=True).is_completed()
        late = json.loads(path.read_text())
        assert late["recorded_after_the_fact"] is True and late["verb"] == "train"
        assert late["counts"] == record["counts"] and late["metrics"] == record["metrics"]
        assert late["bundle"] == record["bundle"]
    finally:
        path.write_text(json.dumps(record))  # the other tests compare with the first run's


def test_metrics_and_confusion_matrix_are_published(train_runs: dict) -> None:
    bundle = train_runs["config"].bundle_path
    for state in (train_runs["first"], train_runs["again"]):  # every run publishes them
        run_id = state.state_details.flow_run_id
        (metrics,) = artifacts(run_id, METRICS_KEY)
        assert metrics.type == "markdown"
        lines = metrics.data.splitlines()
        assert "| val | 5 | 0.600 | 0.550 | 0.800 | 0.500 | n/a | 0.350 |" in lines
        assert "| test | 4 | 0.750 | 0.625 | 1.000 | 0.500 | n/a | 0.375 |" in lines
        (confusion,) = artifacts(run_id, CONFUSION_KEY)
        png = inline_png(confusion.data)
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.width > 300
        assert "test split" in confusion.data  # the test split's matrix, rows tabulated
        assert "| Smallholder agriculture | 0 | 1 | 0 | 1 |" in confusion.data.splitlines()
    assert (bundle / "confusion_matrix.png").read_bytes() == png
    assert not [p for p in bundle.iterdir() if ".tmp-" in p.name]


@flow(name="quick-look-test")
def _publish(pngs: list[Path]) -> None:
    publish_quick_looks(pngs, "run-123")


def test_quick_look_maps_are_published_inline(prefect_harness, tmp_path: Path) -> None:
    outline = select_provinces(["Kalimantan Tengah"])
    pngs = [write_driver_png(empty_driver_frame(), outline, tmp_path / f"{name}.png", name)
            for name in ("kalimantan-tengah", "indonesia")]
    state = _publish(pngs, return_state=True)
    (artifact,) = artifacts(state.state_details.flow_run_id, QUICK_LOOK_KEY)
    assert "#### kalimantan-tengah" in artifact.data and "#### indonesia" in artifact.data
    inlined = [base64.b64decode(d) for d in INLINE_PNG.findall(artifact.data)]
    assert inlined == [p.read_bytes() for p in pngs]


def test_the_map_flow_publishes_its_quick_look(prefect_harness, border_map_inputs: dict,
                                               tmp_path: Path) -> None:
    job = clone_map_job(border_map_inputs, tmp_path, {
        "provinces": ["Kalimantan Tengah"], "years": [2013, 2016], "tiles_per_task": 2})
    config = load_config(job["config"])
    with threads_cluster() as address:
        state = mapping_flow(config, address, return_state=True)
    png = config.maps_dir / "kalimantan-tengah.png"
    run_id = state.state_details.flow_run_id
    (artifact,) = artifacts(run_id, QUICK_LOOK_KEY)
    assert [base64.b64decode(d) for d in INLINE_PNG.findall(artifact.data)] == [png.read_bytes()]
    assert state.result()["run_id"] in artifact.data
    (summary,) = artifacts(run_id, "map-run-summary")
    assert "Forest loss driver mapping run" in summary.data
