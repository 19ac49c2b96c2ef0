"""Shared pytest fixtures, and the accuracy tests' background training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.accuracy_job import ACCURACY_JOB, ACCURACY_TESTS

#: Dask's housekeeping cadence for every cluster the suite starts (the session's, and those
#: of CLI runs, which inherit the environment). At Dask's defaults (a 20 ms event-loop tick,
#: a 10 ms stack profiler, memory checks every 100 ms, system stats every 500 ms) an idle
#: two-worker LocalCluster used a tenth of a core; at these, a sixtieth. The suite is
#: CPU-bound on 2 cores. Users' clusters keep Dask's defaults.
LEAN_DASK = {
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "500ms",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
}
for _name, _value in LEAN_DASK.items():
    os.environ.setdefault(_name, _value)
if "dask" in sys.modules:  # read at dask's import: refresh if a plugin imported it first
    import dask.config

    dask.config.refresh()


def pytest_configure(config: pytest.Config) -> None:
    """Start the accuracy tests' training before collection (which takes a quarter of a
    minute) when the run will surely hold them: the training is the suite's critical
    path. Otherwise :func:`pytest_collection_modifyitems` decides once tests are chosen."""
    option = config.option
    filtered = option.keyword or option.markexpr or option.collectonly or option.help
    if not filtered and _args_cover(config, ACCURACY_TESTS):
        _start_accuracy_job(config)


@pytest.hookimpl(trylast=True)  # after ``-m``/``-k`` deselection: only for tests that run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the accuracy tests last; their models train in a niced process group of its
    own that soaks up the cores the other tests leave idle."""
    accuracy = [item for item in items if item.nodeid.startswith(ACCURACY_TESTS)]
    if not accuracy:
        _stop_accuracy_job(config)
        return
    items[:] = [item for item in items if item not in accuracy] + accuracy
    if config.stash.get(ACCURACY_JOB, None) is None:
        _start_accuracy_job(config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _stop_accuracy_job(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_accuracy_job(config)  # a run that ended before its session (a usage error)


def _args_cover(config: pytest.Config, test_file: str) -> bool:
    """Whether a command-line path (or, with none, a configured test path) is the file or
    a folder above it; node ids (``file::test``) select single tests: never."""
    target = (config.rootpath / test_file).resolve()
    for arg in config.args:
        if "::" in arg:
            continue
        path = (config.invocation_params.dir / arg).resolve()
        if target == path or path in target.parents:
            return True
    return False


def _start_accuracy_job(config: pytest.Config) -> None:
    folder = Path(tempfile.mkdtemp(prefix="forestnet-accuracy-"))
    # Passive OpenMP waits: idle torch threads must not spin on cores the tests need.
    # Its exported ONNX graphs stay in its folder (``graph_cache`` is not set up yet).
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "FORESTNET_CACHE_DIR": str(folder / "graph-cache")}
    with (folder / "job.log").open("wb") as log:
        # A process group, not a session: where the kernel groups tasks by session
        # (autogroup), a new session would get an equal share of the cores whatever its
        # nice value, and the training would halve the speed of every test it overlaps.
        proc = subprocess.Popen([sys.executable, "-m", "tests.accuracy_job", str(folder)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parents[1],
                                preexec_fn=lambda: os.nice(19), process_group=0)
    config.stash[ACCURACY_JOB] = (proc, folder)


def _stop_accuracy_job(config: pytest.Config) -> None:
    """Stop the job if it still runs (a run cut short, or one without its tests) and
    remove its folder."""
    job = config.stash.get(ACCURACY_JOB, None)
    if job is None:
        return
    del config.stash[ACCURACY_JOB]
    proc, folder = job
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_for_group_exit(proc.pid)
    shutil.rmtree(folder, ignore_errors=True)


def _wait_for_group_exit(pgid: int, timeout: float = 30.0) -> None:
    """Until no process of the group is left, so that none writes into a removed folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of ``WorldSpec.tiny()``, generated once per test session."""
    from pipeline.sample_world import WorldSpec, generate_world

    return generate_world(tmp_path_factory.mktemp("sample_world") / "tiny", WorldSpec.tiny())


@pytest.fixture(scope="session")
def tiny_scene_store(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world's scenes ingested into a scene store with its index, once per session.

    Read-only for tests: a test that changes a store builds its own.
    """
    from tests.world_chips import ingest_world

    return ingest_world(tiny_world.parent, tmp_path_factory.mktemp("scenes") / "scenes.zarr")


@pytest.fixture(scope="session")
def tiny_events(tiny_world: Path):
    """The tiny world's labelled events, with their loss polygons from lossyear."""
    from pipeline.training_set.events import events_from_forestnet_csvs

    world = tiny_world.parent
    csvs = {s: world / "events" / f"{s}.csv" for s in ("train", "val", "test")}
    events, problems = events_from_forestnet_csvs(csvs, world / "gfc" / "lossyear.tif")
    assert not problems
    return events


@pytest.fixture(scope="session", autouse=True)
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exported ONNX graphs (``forestnet_model.fast_forward``) go to the session's temporary
    folder, not the user's cache; subprocesses (CLI runs, Dask workers) inherit it."""
    folder = tmp_path_factory.mktemp("graph-cache")
    before = os.environ.get("FORESTNET_CACHE_DIR")
    os.environ["FORESTNET_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("FORESTNET_CACHE_DIR", None)
    else:
        os.environ["FORESTNET_CACHE_DIR"] = before


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a busy 2-core machine two OpenMP threads stall whenever a core
    is taken by another process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One self-hosted Prefect server for the session's CLI-heavy slow tests."""
    from tests.prefect_server import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-shared")) as running:
        yield running


@pytest.fixture(scope="session")
def prefect_harness(shared_prefect_server: dict) -> Iterator[None]:
    """Flows run in this process talk to the session's Prefect server (one server start
    for every flow test), and read their runs and artifacts back from it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: shared_prefect_server["api"]}):
        yield


@pytest.fixture(scope="module")
def cli_on_shared_prefect(shared_prefect_server: dict) -> Iterator[None]:
    """CLI subprocesses started by this module talk to ``shared_prefect_server``.

    Each `forestnet` run otherwise starts Prefect's temporary API (10-15 s on 2 cores);
    `tests/test_demo_flow.py` keeps that default path covered.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", shared_prefect_server["api"])
        yield


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[str]:
    """A two-worker process LocalCluster that CLI runs attach to (``--dask-address``), as
    users attach to a running cluster: its workers load the model stack and compile their
    kernels once per session instead of once per run. Runs that kill workers or the CLI
    keep clusters of their own, and the demo test keeps the default LocalCluster."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="3GiB",
                      processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session")
def border_map_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny world on the Kalimantan Tengah / Selatan border, ingested, with an untrained
    bundle: the mapping-flow, fault and deployment tests each clone it (``clone_map_job``)."""
    from tests.map_job import make_map_job

    return make_map_job(tmp_path_factory.mktemp("border-world"), {})


@pytest.fixture(scope="session")
def border_map_run(border_map_inputs: dict, shared_prefect_server: dict, shared_cluster: str,
                   tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`forestnet map` over both border provinces, run once: the mapping-flow tests read it
    and the fault tests compare their killed-and-resumed maps with it."""
    from tests.map_job import BORDER_PROVINCES, clone_map_job, forestnet, geopackages, read_map

    job = clone_map_job(border_map_inputs, tmp_path_factory.mktemp("border"), {
        "provinces": BORDER_PROVINCES, "years": [2013, 2016], "tiles_per_task": 2,
        "min_event_pixels": 1})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", shared_prefect_server["api"])
        first = forestnet("map", "--config", str(job["config"]), "--dask-address", shared_cluster)
    assert first.returncode == 0, first.stderr[-4000:]
    maps = {p.name: read_map(p) for p in geopackages(first)}
    return {**job, "first": first, "maps": maps, "cluster": shared_cluster}
