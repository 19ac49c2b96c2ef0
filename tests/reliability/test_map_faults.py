"""R1 and R2 for `forestnet map`: a Dask worker SIGKILLed mid-run, and the whole run
SIGKILLed mid-run then rerun. Both end with maps identical, feature by feature, to a clean
run's; the rerun reuses every tile finished before the kill.

Mapping tasks are plain Dask functions whose results are files named by their inputs, so a
task re-run after a worker dies rewrites the same part, and a rerun skips finished parts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.map_job import BORDER_PROVINCES, clone_map_job, forestnet, geopackages, read_map

# Every CLI run here talks to the session's Prefect server, not a temporary API.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cli_on_shared_prefect")]

PROVINCES = BORDER_PROVINCES


@pytest.fixture(scope="module")
def job(border_map_inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    # One tile per task and one task in flight: the run advances tile by tile, so a kill
    # lands between finished and unfinished tiles.
    return clone_map_job(border_map_inputs, tmp_path_factory.mktemp("faults"), {
        "provinces": PROVINCES, "years": [2013, 2016], "tiles_per_task": 1,
        "max_in_flight": 1, "min_event_pixels": 1})


def parts(job: dict) -> list[Path]:
    return sorted((job["work"] / "map-parts").rglob("*.parquet"))


def reset(job: dict) -> None:
    for name in ("map-parts", "map-runs", "maps"):
        shutil.rmtree(job["work"] / name, ignore_errors=True)


def start_map(job: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli.app", "map", "--config",
                             str(job["config"])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_parts(job: dict, run: subprocess.Popen, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(parts(job)) < n:
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.2)


def dask_workers(pid: int) -> list[psutil.Process]:
    """Worker processes of the LocalCluster started by ``pid`` (spawned by its nannies)."""
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())]


def finished_maps(result: subprocess.CompletedProcess | tuple) -> dict[str, pd.DataFrame]:
    return {p.name: read_map(p) for p in geopackages(result)}


@pytest.fixture(scope="module")
def clean_maps(border_map_run: dict) -> dict[str, pd.DataFrame]:
    """The clean run of the same world and model, batched differently (two tiles a task,
    tasks in parallel): a map must not depend on how its tiles were scheduled."""
    tiles = list((border_map_run["work"] / "map-parts").rglob("*.parquet"))
    assert len(tiles) >= 4, "the job needs several tiles for the kills to land mid-run"
    return border_map_run["maps"]


def assert_same_maps(maps: dict[str, pd.DataFrame], clean: dict[str, pd.DataFrame]) -> None:
    assert sorted(maps) == sorted(clean)
    for name, frame in maps.items():
        # run_id names the job's settings (here its batching), not what was mapped.
        pd.testing.assert_frame_equal(frame.drop(columns="run_id"),
                                      clean[name].drop(columns="run_id"),
                                      check_exact=False, rtol=1e-6)


def test_r1_a_killed_worker_does_not_change_the_map(job: dict, clean_maps: dict) -> None:
    reset(job)
    run = start_map(job)
    try:
        wait_for_parts(job, run, 1)
        workers = dask_workers(run.pid)
        assert workers, "no Dask worker process found"
        workers[0].send_signal(signal.SIGKILL)
        out, err = run.communicate(timeout=420)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, err[-4000:]
    result = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    assert_same_maps(finished_maps(result), clean_maps)


def test_r2_a_killed_run_resumes_reusing_finished_tiles(job: dict, clean_maps: dict,
                                                       shared_cluster: str) -> None:
    reset(job)
    run = start_map(job)
    wait_for_parts(job, run, 2)
    os.killpg(run.pid, signal.SIGKILL)  # the CLI, its Prefect server and its workers
    run.wait()
    done_before = {p.name for p in parts(job)}
    assert not (job["work"] / "maps").exists() or not list((job["work"] / "maps").glob("*.gpkg"))
    # Resumed on the session's cluster: a rerun need not be on the cluster that was killed.
    again = forestnet("map", "--config", str(job["config"]), "--dask-address", shared_cluster)
    assert again.returncode == 0, again.stderr[-4000:]
    line = next(s for s in again.stdout.splitlines() if s.startswith("tiles: "))
    skipped = int(line.split("predicted, ")[1].split(" skipped")[0])
    reuse = skipped / len(done_before)
    print(f"R2 map: {skipped} of {len(done_before)} tiles finished before the kill were "
          f"reused ({reuse:.0%})")
    assert reuse >= 0.9
    assert_same_maps(finished_maps(again), clean_maps)
