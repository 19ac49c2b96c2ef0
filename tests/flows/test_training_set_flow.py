"""The training-set flow on the tiny sample world: chips.zarr and its ``run.json``.

Real flow under a temporary Prefect database, an in-process Dask cluster and the
session's ingested scene store. The aux sets are cut to one band and one scalar: this
test is about what the flow records, not about the aux predictors.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from flows.config.schema import load_config
from flows.training_set import training_set_flow
from pipeline.training_set.chip_store import open_chips
from pipeline.training_set.events import read_events
from tests.ingest_inputs import threads_cluster
from tests.tiny_config import write_tiny_config


@pytest.fixture(scope="module")
def built(prefect_harness, tiny_world: Path, tiny_scene_store: Path,
          tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("training-set")
    path = write_tiny_config(folder, tiny_world.parent, scenes=str(tiny_scene_store),
                             aux={"bands": ["elevation"], "features": ["street_dist_km"]})
    config = load_config(path)
    with threads_cluster() as address:
        first = training_set_flow(config, address)
        record = json.loads((config.chips_path / "run.json").read_text())
        again = training_set_flow(config, address)
    return {"config": config, "first": first, "again": again, "record": record}


def test_run_json_counts_what_the_flow_built(built: dict) -> None:
    config, record, first = built["config"], built["record"], built["first"]
    events = read_events(config.events_path)
    chips = open_chips(config.chips_path)
    assert record["verb"] == "build-training-set"
    assert datetime.fromisoformat(record["started"]) < datetime.fromisoformat(record["ended"])
    counts = record["counts"]
    assert counts == first["counts"]
    assert counts["events"] == events["split"].value_counts().to_dict()
    assert sum(counts["events"].values()) == chips.sizes["event"]
    n_batches = -(-len(events) // config.chips.batch_size)
    assert counts["chip_batches"] == n_batches and counts["batches_reused"] == 0
    assert counts["events_without_imagery"] == len(chips.attrs["skipped_events"])
    assert counts["events_without_imagery"] == int((chips["chip_ok"] == 0).sum())
    assert record["input_scene_ids"] and record["events"] == str(config.events_path)
    assert record["config"]["aux"]["bands"] == ["elevation"]


def test_a_rerun_skips_and_keeps_the_run_json(built: dict) -> None:
    assert built["again"] == {"chips": str(built["config"].chips_path), "skipped": True}
    on_disk = json.loads((built["config"].chips_path / "run.json").read_text())
    assert on_disk == built["record"]


def test_a_store_left_without_run_json_gets_one_marked_late(built: dict) -> None:
    """A run killed between finishing chips.zarr and writing run.json: the rerun skips
    the store and records what it holds, marked as recorded after the fact."""
    config, record = built["config"], built["record"]
    path = config.chips_path / "run.json"
    path.unlink()
    try:
        with threads_cluster() as address:
            assert training_set_flow(config, address)["skipped"] is True
        late = json.loads(path.read_text())
        assert late["recorded_after_the_fact"] is True and late["verb"] == "build-training-set"
        assert late["counts"] == {
            "events": record["counts"]["events"],
            "events_without_imagery": record["counts"]["events_without_imagery"]}
    finally:
        path.write_text(json.dumps(record))  # other tests read the first run's record
