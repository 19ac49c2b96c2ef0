"""``forestnet ingest`` through the real CLI, flow and Dask: a failed scene means exit 1.

Most of this file's time is importing ``flows.cli`` (its config pulls in torch) and
starting Prefect's temporary server; the ingest itself takes about a second.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import flows.ingest  # noqa: F401  (Prefect's log handlers bind to the real stderr, not CliRunner's)
from flows.cli import app
from pipeline.catalog import read_index
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
