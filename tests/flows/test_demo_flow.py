"""End to end: the demo flow on the tiny sample world, through the real CLI.

Real Prefect (ephemeral API), a real two-worker Dask LocalCluster, real Zarr stores and a
real GeoPackage read back through GDAL (pyogrio).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from pipeline.core.provinces import select_provinces
from pipeline.export.geopackage import AREA_TABLE, DRIVER_MAP_FIELDS, DRIVER_MAP_LAYER
from tests.tiny_config import write_tiny_config

pytestmark = pytest.mark.slow


def forestnet(*args: str, timeout: int = 420, api: str | None = None
              ) -> subprocess.CompletedProcess:
    """A CLI run: on Prefect's temporary API (a user's default), or on the server ``api``."""
    env = {**os.environ, "PREFECT_API_URL": api} if api else None
    return subprocess.run([sys.executable, "-m", "flows.cli.app", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("demo")
    config = write_tiny_config(folder, folder / "world")
    first = forestnet("demo", "--config", str(config))
    assert first.returncode == 0, first.stderr[-4000:]
    gpkg = Path(next(line.split(": ", 1)[1] for line in first.stdout.splitlines()
                     if line.startswith("GeoPackage: ")))
    return {"folder": folder, "config": config, "gpkg": gpkg, "first": first}


def expected_events(world: Path) -> gpd.GeoDataFrame:
    """The generator's loss regions whose anchor lies in the AOI (independent of the flow)."""
    truth = gpd.read_file(world / "events" / "loss_regions.gpkg")
    aoi = select_provinces(["Kalimantan Tengah"]).union_all()
    inside = truth.geometry.representative_point().within(aoi)
    years = truth["year"].between(2013, 2016)
    return truth[inside & years]


def test_cli_prints_the_dask_dashboard_link(demo_run: dict) -> None:
    assert "Dask: LocalCluster with 2 workers" in demo_run["first"].stderr
    assert "dashboard http://127.0.0.1:" in demo_run["first"].stderr


def test_no_library_warning_reaches_the_users_terminal(demo_run: dict) -> None:
    shown = demo_run["first"].stderr + demo_run["first"].stdout
    assert not re.findall(r"\w+Warning: .*", shown), shown[-3000:]


def test_geopackage_opens_with_gdal_and_has_the_contract(demo_run: dict) -> None:
    gpkg = demo_run["gpkg"]
    assert gpkg.exists() and gpkg.suffix == ".gpkg"
    layers = dict(pyogrio.list_layers(gpkg))
    assert layers[DRIVER_MAP_LAYER] == "MultiPolygon"
    assert AREA_TABLE in layers
    info = pyogrio.read_info(gpkg, layer=DRIVER_MAP_LAYER)
    assert list(info["fields"]) == list(DRIVER_MAP_FIELDS)
    assert info["crs"] == "EPSG:4326"
    assert info["layer_metadata"]["province"] == "Kalimantan Tengah"


def test_feature_count_matches_events_in_the_aoi(demo_run: dict) -> None:
    world = demo_run["folder"] / "world"
    expected = expected_events(world)
    features = gpd.read_file(demo_run["gpkg"], layer=DRIVER_MAP_LAYER)
    assert len(expected) > 0
    assert len(features) == len(expected)
    # Every true loss region is mapped once: its anchor falls in exactly one feature.
    anchors = expected.geometry.representative_point()
    hits = [int(features.contains(point).sum()) for point in anchors]
    assert hits == [1] * len(expected)


def test_features_carry_probabilities_areas_and_provenance(demo_run: dict) -> None:
    features = gpd.read_file(demo_run["gpkg"], layer=DRIVER_MAP_LAYER)
    probs = features[[c for c in features.columns if c.startswith("p_")]]
    assert probs.sum(axis=1).between(0.999, 1.001).all()
    assert (features["confidence"] == probs.max(axis=1)).all()
    assert (features["area_ha"] > 0).all()
    assert features["model_id"].str.startswith("forestnet-").all()
    assert features["scene_ids"].str.contains("LC08_L2SP_").all()  # surface reflectance
    table = pyogrio.read_dataframe(demo_run["gpkg"], layer=AREA_TABLE)
    assert table["area_ha"].sum() == pytest.approx(features["area_ha"].sum())
    assert table["n_events"].sum() == len(features)


def test_intermediate_stores_are_real(demo_run: dict) -> None:
    import xarray as xr

    work = demo_run["folder"] / "work"
    index = gpd.read_parquet(work / "scenes.zarr" / "index.parquet")
    assert (index["status"] == "ingested").all() and len(index) >= 3
    scene = xr.open_zarr(work / "scenes.zarr", group=index["scene_id"].iloc[0],
                         consolidated=False)
    assert {"multispectral", "pan", "qa_pixel"} <= set(scene.data_vars)
    chips = xr.open_zarr(work / "chips.zarr")
    assert chips["image"].dims == ("event", "view", "band", "y", "x")
    assert chips.sizes["y"] == 332 and int(chips["chip_ok"].sum()) == chips.sizes["event"]
    bundle = json.loads((work / "model" / "bundle" / "bundle.json").read_text())
    assert bundle["model"]["architecture"] == "fpn"
    assert bundle["model"]["encoder"] == "efficientnet-b2"


def test_rerun_resumes_and_gives_the_same_map(demo_run: dict, shared_prefect_server: dict,
                                              shared_cluster: str) -> None:
    before = gpd.read_file(demo_run["gpkg"], layer=DRIVER_MAP_LAYER)
    # The first run covered the temporary API and its own LocalCluster; the rerun attaches
    # to the session's Prefect server and Dask cluster.
    again = forestnet("demo", "--config", str(demo_run["config"]), "--dask-address",
                      shared_cluster, api=shared_prefect_server["api"])
    assert again.returncode == 0, again.stderr[-4000:]
    log = again.stderr + again.stdout
    # Every map tile is skipped: its part exists from the first run.
    assert re.search(r"map: (\d+) tiles \(\1 skipped, 0 failed\)", log), log[-3000:]
    assert "'ingested': 0" in log and "chips.zarr exists; nothing to do" in log
    after = gpd.read_file(demo_run["gpkg"], layer=DRIVER_MAP_LAYER)
    cols = ["event_id", "driver", "p_plantation", "area_ha"]
    assert before[cols].equals(after[cols])
