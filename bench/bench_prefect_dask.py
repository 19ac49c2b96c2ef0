"""Why Prefect tasks stay in the flow process and submit plain Dask work.

    uv run python bench/bench_prefect_dask.py

Runs the same trivial job (N small functions on a 2-worker process LocalCluster) two
ways, side by side in one process, and prints JSON with the ratio:
- ``prefect_dask``: one Prefect task per item on prefect-dask's DaskTaskRunner. Without
  PREFECT_API_URL, each worker process that runs a Prefect task starts its own temporary
  Prefect server (counted here from the workers' child processes);
- ``coarse_task``: one Prefect task in the flow process that maps the plain function over
  the same cluster with a ``distributed.Client`` (the project's pattern).
"""

from __future__ import annotations

import json
import time

import psutil
from distributed import Client, LocalCluster
from prefect import flow, task
from prefect_dask import DaskTaskRunner


def square(x: int) -> int:
    return x * x


@task
def square_task(x: int) -> int:
    return square(x)


def servers_started(cluster: LocalCluster) -> int:
    """Prefect/uvicorn server processes spawned under the cluster's worker processes."""
    count = 0
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "uvicorn" in cmd or "prefect.server" in cmd or "prefect server" in cmd:
            count += 1
    return count


def run_prefect_dask(n: int) -> tuple[float, int]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def job() -> int:
            return sum(f.result() for f in square_task.map(list(range(n))))

        start = time.perf_counter()
        total = job()
        seconds = time.perf_counter() - start
        servers = servers_started(cluster)
    assert total == sum(i * i for i in range(n))
    return seconds, servers


def run_coarse_task(n: int) -> float:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:

        @task
        def fan_out(items: list[int]) -> int:
            with Client(cluster.scheduler_address, set_as_default=False) as client:
                return sum(client.gather(client.map(square, items)))

        @flow
        def job() -> int:
            return fan_out(list(range(n)))

        start = time.perf_counter()
        total = job()
        seconds = time.perf_counter() - start
    assert total == sum(i * i for i in range(n))
    return seconds


def main(n: int = 8) -> None:
    coarse_warm = run_coarse_task(n)  # also starts this process's ephemeral API once
    coarse = run_coarse_task(n)
    per_task, servers = run_prefect_dask(n)
    print(json.dumps({
        "items": n,
        "coarse_task_seconds": round(coarse, 2),
        "coarse_task_first_run_seconds": round(coarse_warm, 2),
        "prefect_dask_seconds": round(per_task, 2),
        "prefect_dask_over_coarse_task": round(per_task / coarse, 1),
        # The flow process runs one temporary API itself; the rest were started by workers.
        "prefect_servers_running": servers,
    }, indent=2))


if __name__ == "__main__":
    main()
