"""Streamed ingest from a real STAC API: `rustac serve` holds Items of a sample world's
products (USGS layout for Level-1, Planetary Computer's for Level-2), whose COGs a local
server sends in HTTP ranges, failing on purpose: 429 and 503 answers, connections dropped
mid-body, and (for signed URLs) a SAS token that has expired.

One CLI run ingests a small area; its store must equal a local ingest of the same
products, read well under their full size; a rerun reads nothing; a wider area grows the
stored parts without reading them again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
import xarray as xr

from pipeline.ingest.catalog import read_index
from pipeline.sample_world.stac_items import COLLECTIONS, write_stac_items
from tests.stac_servers import asset_server, stac_api

pytestmark = pytest.mark.slow

#: Where Planetary Computer-style Level-2 assets live; HTTP_PROXY sends them to the server.
BLOB = "http://landsatsample.blob.core.windows.net"
FAULTS = {"busy": 3, "drop": 2, "expire_first_token": True}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24 km world (800 x 800 px scenes: 2 x 2 store chunks) with two acquisitions."""
    from pipeline.sample_world import WorldSpec, generate_world

    spec = replace(WorldSpec.tiny(), size_km=24.0, scene_dates=("2017-06-12", "2018-07-18"),
                   scene_cloud_cover=(0.05, 0.35))
    return generate_world(tmp_path_factory.mktemp("stac") / "world", spec).parent


@pytest.fixture(scope="module")
def areas(world: Path) -> dict[str, tuple]:
    """A small area near the world's north-west corner, and a wider one to its middle."""
    import rasterio
    from rasterio.warp import transform_bounds

    qa = next((world / "landsat").glob("*L2SP*/*_QA_PIXEL.TIF"))
    with rasterio.open(qa) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    small = (west + 0.02, north - 0.03, west + 0.03, north - 0.02)
    wider = (west + 0.02, (south + north) / 2, (west + east) / 2, north - 0.02)
    return {"small": small, "wider": wider}


@pytest.fixture(scope="module")
def servers(world: Path, shared_prefect_server: dict) -> dict:
    with asset_server(world, FAULTS) as assets:
        items = write_stac_items(world, world.parent / "items.json",
                                 {"L1": assets["url"], "L2": BLOB})
        with stac_api(items) as api:
            yield {"api": api, "assets": assets, "prefect": shared_prefect_server["api"],
                   "lossyear": world / "gfc" / "lossyear.tif"}


def ingest(servers: dict, store: Path, bbox: tuple, *extra: str) -> subprocess.CompletedProcess:
    """`forestnet ingest --stac-api ...` (``extra[0]`` "plan": `forestnet plan`) with its
    own LocalCluster, whose workers reach the blob host through the asset server
    (HTTP_PROXY) and get SAS tokens from it; Prefect is the session's server."""
    proxy = servers["assets"]["url"]
    env = {**os.environ, "PREFECT_API_URL": servers["prefect"],
           "HTTP_PROXY": proxy, "http_proxy": proxy,
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PC_SDK_SAS_URL": f"{proxy}/sas"}
    config = store.parent / "config.yaml"
    config.write_text(f"workdir: {store.parent}\ncluster: {{n_workers: 1, threads_per_worker: 2}}\n"
                      f"inputs:\n  lossyear: {servers['lossyear']}\n"
                      "  landsat_stac: {signing: planetary-computer, url: unset, "
                      "collections: [unset]}\n")
    verb = extra[0] if extra and extra[0] == "plan" else "ingest"
    extra = extra[1:] if verb == "plan" else extra
    where = [] if verb == "plan" else ["--store", str(store)]
    args = [verb, "--config", str(config), "--stac-api", servers["api"],
            "--collection", COLLECTIONS["L1"], "--collection", COLLECTIONS["L2"],
            "--bbox", ",".join(map(str, bbox)), "--datetime", "2012-01-01/2021-12-31",
            "--max-cloud", "50", *where, *extra]
    return subprocess.run([sys.executable, "-m", "flows.cli.app", *args], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def first(servers: dict, world: Path, areas: dict) -> dict:
    store = world.parent / "streamed" / "scenes.zarr"
    store.parent.mkdir()
    run = ingest(servers, store, areas["small"])
    assert run.returncode == 0, run.stderr[-4000:]
    return {"store": store, "run": run, "requests": servers["assets"]["requests"]()}


def read_fraction(run: subprocess.CompletedProcess) -> float:
    match = re.search(r"read ([\d.]+) MB of the products' ([\d.]+) MB", run.stdout)
    assert match, run.stdout
    return float(match.group(1)) / float(match.group(2))


def test_a_search_ingests_each_acquisition_paired_through_the_faults(first: dict) -> None:
    index = read_index(first["store"])
    assert sorted(index["level"]) == ["L1TP", "L1TP", "L2SP", "L2SP"]
    assert (index["status"] == "ingested").all()
    assert (index["pan_partner"][index["level"] == "L2SP"] != "").all()  # paired with L1
    log = first["run"].stdout + first["run"].stderr
    assert re.search(r"HTTP (429|503); retry", log), log[-3000:]
    assert "RemoteProtocolError" in log  # a body cut short, read again
    assert "token refused (403); re-signed" in log
    statuses = [r["status"] for r in first["requests"]]
    assert 429 in statuses and 503 in statuses and 403 in statuses and -206 in statuses


def test_the_scenes_take_the_crs_of_their_files_not_the_catalogs(first: dict) -> None:
    index = read_index(first["store"])
    assert set(index["epsg"]) == {32649}  # the items say EPSG:32749


def test_a_small_area_reads_a_fraction_of_the_products(first: dict) -> None:
    fraction = read_fraction(first["run"])
    print(f"small area: read {fraction:.1%} of the products' bytes")
    assert fraction < 0.5
    index = read_index(first["store"])
    assert set(index["part"]) == {"0,0,512,512"}


def test_the_store_equals_a_local_ingest_of_the_same_products(first: dict, world: Path) -> None:
    from tests.world_chips import ingest_world

    local = ingest_world(world, world.parent / "local" / "scenes.zarr")
    for scene_id in read_index(first["store"])["scene_id"]:
        streamed = xr.open_zarr(first["store"], group=scene_id, consolidated=False)
        whole = xr.open_zarr(local, group=scene_id, consolidated=False)
        part = whole.sel(x=streamed["x"], y=streamed["y"])
        for name in ("multispectral", "qa_pixel"):
            np.testing.assert_array_equal(streamed[name].values, part[name].values)
        if "pan" in streamed:
            pan = whole["pan"].sel(x_pan=streamed["x_pan"], y_pan=streamed["y_pan"])
            np.testing.assert_array_equal(streamed["pan"].values, pan.values)


def test_a_rerun_reads_nothing(first: dict, servers: dict, areas: dict) -> None:
    before = len(servers["assets"]["requests"]())
    again = ingest(servers, first["store"], areas["small"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert "(0 ingested, 4 skipped, 0 failed)" in again.stdout
    requests = servers["assets"]["requests"]()[before:]
    assert [r for r in requests if not r["path"].startswith("/sas")] == []


def test_a_wider_area_adds_only_what_is_missing(first: dict, servers: dict, areas: dict
                                                ) -> None:
    small = {r["scene_id"]: r["part"] for r in read_index(first["store"]).to_dict("records")}
    wider = ingest(servers, first["store"], areas["wider"])
    assert wider.returncode == 0, wider.stderr[-4000:]
    index = read_index(first["store"])
    assert set(index["part"]) == {"0,0,800,800"} != set(small.values())
    fraction = read_fraction(wider)
    # The first run's 512 x 512 chunk of each 800 x 800 product is copied, not read again.
    print(f"wider area: read {fraction:.1%} of the products' bytes")
    assert fraction < 1 - 0.5 * (512 * 512) / (800 * 800)
    assert shapely.box(*areas["wider"]).within(index.geometry.union_all())


def test_plan_agrees_with_what_the_ingest_read(first: dict, servers: dict, areas: dict) -> None:
    import json

    plan = ingest(servers, first["store"], areas["small"], "plan", "--json")
    assert plan.returncode == 0, plan.stderr[-4000:]
    found = json.loads(plan.stdout)
    assert found["products"]["count"] == 4
    assert found["products"]["per_path_row_year"] == {"118/062 2017": 2, "118/062 2018": 2}
    share = found["bytes"]["to_read"] / found["bytes"]["full"]
    assert share == pytest.approx(read_fraction(first["run"]), abs=0.05)
