"""Dask wiring: a LocalCluster by default, or any existing scheduler by its address.

Prefect tasks in this project run in the flow process and submit plain functions to
this cluster; Dask workers never import Prefect, so they never start their own API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from flows.config import ClusterConfig

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    """CUDA devices visible to this process (0 without torch CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


@contextmanager
def dask_client(cfg: ClusterConfig, echo=print) -> Iterator[Client]:
    """Yield a client for the configured cluster and print its dashboard link."""
    if cfg.address:
        client = Client(cfg.address, set_as_default=False)
        echo(f"Dask: attached to {cfg.address}; dashboard {client.dashboard_link}")
        try:
            yield client
        finally:
            client.close()
        return
    resources = None
    gpus = visible_gpus() if cfg.gpu == "auto" else 0
    if gpus:
        # One GPU token per worker that may hold a model; training asks for GPU=1.
        resources = {"GPU": 1}
    else:
        log.info("no CUDA device visible: training and inference run on CPU workers")
    cluster = LocalCluster(
        n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
        memory_limit=cfg.memory_limit, resources=resources, dashboard_address=":0",
        processes=True,
    )
    client = Client(cluster, set_as_default=False)
    link = cluster.dashboard_link or "unavailable (bokeh is not installed)"
    echo(f"Dask: LocalCluster with {cfg.n_workers} workers"
         f"{' (GPU)' if gpus else ' (CPU only)'}; dashboard {link}")
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def gpu_resources(client: Client) -> dict[str, float] | None:
    """``{"GPU": 1}`` when some worker holds a GPU resource, else None (CPU fallback)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _accepts_n(client) \
        else client.scheduler_info().get("workers", {})
    if any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
        return {"GPU": 1}
    return None


def _accepts_n(client: Client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def gather_with_progress(
    client: Client, futures: list, description: str, on_result: Callable | None = None
) -> list:
    """Gather futures in order while a rich progress bar counts them as they finish.

    ``on_result`` sees each result as it arrives (in completion order), e.g. to record
    progress on disk, so a killed run keeps what finished.
    """
    from distributed import as_completed
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(description, total=len(futures))
        # The client is not the default one (set_as_default=False): hand its loop over.
        for future in as_completed(futures, loop=client.loop):
            if on_result is not None and future.status == "finished":
                on_result(future.result())
            progress.advance(bar)
    return client.gather(futures)
