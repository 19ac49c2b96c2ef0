"""Deployments against a real, self-hosted Prefect server.

The session's `prefect server start` subprocess (its own PREFECT_HOME), `forestnet deploy
--serve` in a second one, a tiny world ready to map (scenes ingested, an untrained bundle:
the model's quality is not what is tested here), then one run of the served map deployment
through `run_deployment`: the server must record it COMPLETED and the run must have written
its GeoPackage. Every subprocess runs in its own session and is killed with its children
(runner flow runs, Dask workers) at teardown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyogrio
import pytest

from pipeline.export.geopackage import DRIVER_MAP_LAYER
from tests.map_job import clone_map_job
from tests.prefect_server import PREFECT, REPO, session_process, tail

# Under load a served run has taken minutes on 2 shared cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

MAP_DEPLOYMENT = "map-job/monthly"
TIMINGS: dict[str, float] = {}


def _deployments(api: str) -> list[dict]:
    response = httpx.post(f"{api}/deployments/filter", json={}, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def server(shared_prefect_server: dict) -> Iterator[dict]:
    """The session's self-hosted Prefect server: deployments, runners and work pools are
    this module's alone (no other test makes any)."""
    TIMINGS["server_start_s"] = shared_prefect_server["start_s"]
    yield shared_prefect_server
    _report()


@pytest.fixture(scope="module")
def map_job(border_map_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The inputs of the map deployment: scenes ingested, a bundle, a config (years
    2014-2016), and the tile parts the session's border run predicted for 2013-2016. The
    served run asks for 2013-2016, so it plans, reuses those parts and writes the map:
    predicting tiles is the mapping-flow tests' subject, serving it this module's. The
    config attaches to the session's cluster by its address, as a deployment on a shared
    cluster would."""
    job = clone_map_job(border_map_run, tmp_path_factory.mktemp("deployed"), {
        "provinces": ["Kalimantan Tengah"], "years": [2014, 2016], "tiles_per_task": 2},
        cluster={"address": border_map_run["cluster"]})
    shutil.copytree(border_map_run["work"] / "map-parts", job["work"] / "map-parts")
    return job


@pytest.fixture(scope="module")
def tiny_config(map_job: dict) -> Path:
    return map_job["config"]


@pytest.fixture(scope="module")
def served(server: dict, tiny_config: Path) -> Iterator[Path]:
    """`forestnet deploy --serve` in the background; returns at once, so that its start
    overlaps the setup (tests wait for its deployments with ``_wait_for_deployments``)."""
    log = server["home"] / "serve.log"
    args = [sys.executable, "-m", "flows.cli.app", "deploy", "--serve",
            "--config", str(tiny_config)]
    with session_process(args, log, server["env"]):
        yield log


def _wait_for_deployments(api: str, serve_log: Path, timeout: float = 180) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = _deployments(api)
        if len(found) >= 3:  # the runner registers all three before it starts polling
            return {d["name"]: d for d in found}
        assert time.monotonic() < deadline, f"no deployments after {timeout} s:\n" \
                                            f"{tail(serve_log)}"
        time.sleep(1)


def test_served_map_deployment_runs_to_completion(
    server: dict, served: Path, map_job: dict, tiny_config: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = server["api"]
    clock = time.perf_counter()
    deployments = _wait_for_deployments(api, served)
    TIMINGS["deployments_wait_s"] = time.perf_counter() - clock
    monthly = deployments["monthly"]
    assert monthly["entrypoint"].endswith("flows/deploy.py:map_job")
    assert monthly["parameters"]["config"] == str(tiny_config.resolve())
    assert [s["schedule"]["cron"] for s in monthly["schedules"]] == ["0 3 1 * *"]

    maps = map_job["work"] / "maps"
    assert not list(maps.glob("*.gpkg"))  # the run must write it
    started = time.time()
    clock = time.perf_counter()
    with temporary_settings(updates={PREFECT_API_URL: api}):
        run = run_deployment(MAP_DEPLOYMENT, parameters={"years": "2013-2016"}, timeout=600,
                             poll_interval=2, as_subflow=False)
    TIMINGS["map_run_s"] = time.perf_counter() - clock

    record = httpx.get(f"{api}/flow_runs/{run.id}", timeout=10).json()
    assert record["state"]["type"] == "COMPLETED", (record["state"], tail(served, 6000))
    assert record["deployment_id"] == monthly["id"]
    assert record["parameters"]["years"] == "2013-2016"
    (summary,) = (map_job["work"] / "maps").glob("run.json")
    tiles = json.loads(summary.read_text())["counts"]
    assert tiles["skipped"] > 0 and tiles["failed"] == 0  # the parameter reached the flow
    assert record["parameters"]["provinces"] == ["Kalimantan Tengah"]
    (gpkg,) = maps.glob("*.gpkg")
    assert gpkg.stem == "kalimantan-tengah" and gpkg.stat().st_mtime >= started - 1
    assert DRIVER_MAP_LAYER in dict(pyogrio.list_layers(gpkg))


def test_prefect_yaml_deploys_to_a_process_work_pool(server: dict) -> None:
    """`prefect deploy --all` accepts prefect.yaml and records the schedule and the pool.

    Runs after the served test (file order): it replaces the served deployments' pool.
    """
    env = server["env"]
    started = time.perf_counter()
    pool = subprocess.run([PREFECT, "work-pool", "create", "forestnet-process", "--type",
                           "process"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert pool.returncode == 0, pool.stdout[-2000:] + pool.stderr[-2000:]
    done = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=180)
    TIMINGS["prefect_deploy_s"] = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pooled = [d for d in _deployments(server["api"])
              if d.get("work_pool_name") == "forestnet-process"]
    assert sorted(d["entrypoint"] for d in pooled) == [
        "flows/deploy.py:ingest_job", "flows/deploy.py:map_job", "flows/deploy.py:train_job"]
    (monthly,) = [d for d in pooled if d["name"] == "monthly"]
    assert monthly["schedules"][0]["schedule"]["cron"] == "0 3 1 * *"
    assert monthly["schedules"][0]["schedule"]["timezone"] == "Asia/Jakarta"
    workdir = monthly["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    assert Path(workdir["directory"]) == REPO


def _report() -> None:
    """Timings on stdout (pytest -s, or -rP) for the README and reviews."""
    print("\ndeployment test timings: " + ", ".join(f"{k} {v:.1f}"
                                                   for k, v in TIMINGS.items()))
