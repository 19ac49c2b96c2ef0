"""``forestnet ingest`` through the real CLI, flow and Dask: a failed scene means exit 1.

Most of this file's time is importing ``flows.cli.app`` (its config pulls in torch) and
starting Prefect's temporary server; the ingest itself takes about a second.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import xarray as xr
import zarr
from typer.testing import CliRunner

import flows.ingest  # noqa: F401  (Prefect's log handlers bind to the real stderr, not CliRunner's)
from flows.cli.app import app
from pipeline.ingest.catalog import read_index
from tests.ingest_inputs import (
    clone_product,
    make_tar,
    new_product_id,
    products,
    threads_cluster,
)
from tests.tiny_config import write_tiny_config


def test_cli_exits_non_zero_when_a_scene_failed(tiny_world: Path, tmp_path: Path) -> None:
    first, second = products(tiny_world)[:2]
    truncated = clone_product(second, tmp_path / "bad", new_product_id(second.name, "20210101"))
    with (truncated / f"{truncated.name}_B4.TIF").open("r+b") as f:
        f.truncate(5000)
    tar = make_tar(second, tmp_path / f"{second.name}.tar")
    config = write_tiny_config(tmp_path, tiny_world.parent)
    store = tmp_path / "scenes.zarr"
    with threads_cluster() as address:
        result = CliRunner().invoke(app, [
            "ingest", str(first), str(tar), str(truncated), "--store", str(store),
            "--config", str(config), "--dask-address", address,
        ])
    assert result.exit_code == 1, result.output
    assert f"scene store: {store} (2 ingested, 0 skipped, 1 failed)" in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1, result.stderr
    assert f"{truncated.name}: {truncated}/{truncated.name}_B4.TIF" in failed[0]
    index = read_index(store).set_index("source")
    assert index.loc[str(first), "status"] == "ingested"
    assert index.loc[str(tar), "status"] == "ingested"  # read in place from the tar
    assert index.loc[str(truncated), "status"] == "failed"
    assert index.loc[str(truncated), "scene_id"] == truncated.name
    assert not [p for p in store.iterdir() if ".tmp-" in p.name]
    check_run_record(store, index.reset_index(), truncated.name)


def check_run_record(store: Path, index: pd.DataFrame, failed_scene: str) -> None:
    """``run.json`` in the store's root says what the run did, and Zarr readers ignore it."""
    record = json.loads((store / "run.json").read_text())
    assert record["verb"] == "ingest"
    started, ended = (datetime.fromisoformat(record[k]) for k in ("started", "ended"))
    assert started.tzinfo is not None and started < ended
    assert "git_sha" in record and record["package_versions"]["python"]
    assert record["package_versions"]["zarr"] == zarr.__version__
    assert record["seeds"] == {"sample_world": 42, "split": 0, "train": 0}
    ingested = sorted(index.loc[index["status"] == "ingested", "scene_id"])
    assert len(ingested) == 2 and record["input_scene_ids"] == ingested
    assert record["counts"] == {"ingested": 2, "skipped": 0, "failed": 1}
    (failure,) = record["failures"]
    assert failure["scene_id"] == failed_scene and "_B4.TIF" in failure["error"]
    assert record["config"]["scenes"] == str(store)
    assert record["config"]["cluster"]["n_workers"] == 2  # the resolved config, in full
    # A plain file in the root: the store and its scene groups still open.
    assert set(zarr.open_group(str(store), mode="r").group_keys()) == set(ingested)
    scene = xr.open_zarr(store, group=ingested[0], consolidated=False)
    assert "multispectral" in scene.data_vars
