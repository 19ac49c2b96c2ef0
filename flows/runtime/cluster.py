"""Dask wiring: a LocalCluster by default, an existing scheduler by its address, or a
SLURM / Kubernetes cluster started for the run (``cluster.kind``).

Prefect tasks in this project run in the flow process and submit plain functions to
this cluster; Dask workers never import Prefect, so they never start their own API.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from distributed import Client, LocalCluster
from distributed.deploy import Cluster
from distributed.diagnostics.plugin import WorkerPlugin

from flows.config.cluster import ClusterConfig, KubernetesConfig, SlurmConfig
from flows.config.schema import ConfigError
from pipeline.core.progress_bar import progress_bar
from pipeline.core.runtime import tune_malloc_for_tensors

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    """CUDA devices visible to this process (0 without torch CUDA)."""
    # On Linux, CUDA needs the NVIDIA kernel driver: without it there is no device to
    # count, and the process that only starts the cluster skips importing torch (~3 s).
    if sys.platform.startswith("linux") and not any(
            Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl")):
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


class MallocTuning(WorkerPlugin):
    """Raise glibc's mmap/trim thresholds in every worker as it starts (and in those
    already running): the nanny's ``MALLOC_TRIM_THRESHOLD_`` otherwise makes each large
    array a fresh mmap, which halved torch, warp and ingest speed in workers."""

    name = "forestnet-malloc-tuning"

    def setup(self, worker: object) -> None:
        tune_malloc_for_tensors()


def tune_workers(client: Client) -> None:
    """Register :class:`MallocTuning` on the client's cluster, once per process setup."""
    client.register_plugin(MallocTuning(), name=MallocTuning.name)


@contextmanager
def dask_client(cfg: ClusterConfig, echo: Callable[[str], object] = print) -> Iterator[Client]:
    """Yield a client for the configured cluster and print its dashboard link.

    An address always wins (``--dask-address`` replaces any ``kind``); otherwise ``kind``
    picks a LocalCluster, SLURM jobs (dask-jobqueue) or a Kubernetes cluster
    (dask-kubernetes). The cluster this opens is closed on exit; an attached one is not.
    """
    if cfg.address:
        client = Client(cfg.address, set_as_default=False)
        echo(f"Dask: attached to {cfg.address}; dashboard {client.dashboard_link}")
        try:
            tune_workers(client)
            yield client
        finally:
            client.close()
        return
    if cfg.kind in ("slurm", "kubernetes"):
        cluster, expected = batch_cluster(cfg)
        try:
            client = Client(cluster, set_as_default=False)
            try:
                _wait_for_workers(client, cfg, expected)
                echo(f"Dask: {type(cluster).__name__} ({cfg.kind}) with {expected} workers "
                     f"requested; dashboard {cluster.dashboard_link}")
                tune_workers(client)
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
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
        tune_workers(client)
        yield client
    finally:
        client.close()
        with _quiet_nanny_kills():
            cluster.close()


@contextmanager
def _quiet_nanny_kills() -> Iterator[None]:
    """While our own LocalCluster closes, its nannies' "worker process still alive after
    4.0 seconds, killing" is not shown: the run's outputs are written by then, and a
    worker that held a trained model can take that long to exit on a busy machine."""
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    nanny.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nanny.setLevel(level)


#: cluster.kind -> (module to import, package that provides it)
BACKENDS = {
    "slurm": ("dask_jobqueue", "dask-jobqueue"),
    "kubernetes": ("dask_kubernetes.operator", "dask-kubernetes"),
}


def import_backend(kind: str) -> ModuleType:
    """The cluster manager's module, imported only when a config asks for it.

    Neither package is a dependency of the pipeline: most runs never need them.
    """
    module, package = BACKENDS[kind]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"cluster.kind {kind!r} needs the {package} package, which is not installed; "
            f"install it into this environment: uv pip install {package} "
            f"(or pip install {package})"
        ) from None


def batch_cluster(cfg: ClusterConfig) -> tuple[Cluster, int]:
    """Start a SLURM or Kubernetes cluster; also return how many workers it asked for."""
    backend = import_backend(cfg.kind)
    if cfg.kind == "slurm":
        opts = cfg.slurm or SlurmConfig()
        kwargs = opts.model_dump(exclude={"jobs", "maximum_jobs"})
        # Unset (None or []) means "the site's dask-jobqueue config decides": keep it.
        cluster = backend.SLURMCluster(**{k: v for k, v in kwargs.items() if v not in (None, [])})
        if opts.maximum_jobs:
            cluster.adapt(minimum_jobs=opts.jobs, maximum_jobs=opts.maximum_jobs)
        else:
            cluster.scale(jobs=opts.jobs)
        return cluster, max(opts.jobs, 1) * opts.processes
    opts = cfg.kubernetes or KubernetesConfig()
    common = {"namespace": opts.namespace, "resource_timeout": opts.resource_timeout}
    if opts.custom_cluster_spec is not None:
        cluster = backend.KubeCluster(custom_cluster_spec=str(opts.custom_cluster_spec),
                                      **common)
        return cluster, 1
    cluster = backend.KubeCluster(
        name=opts.name, image=opts.image, n_workers=opts.n_workers,
        resources=opts.resources or None, env=opts.env or None,
        worker_command=list(opts.worker_command), **common,
    )
    for group in opts.worker_groups:
        cluster.add_worker_group(
            group.name, n_workers=group.n_workers, image=group.image,
            resources=group.resources or None, worker_command=list(group.worker_command),
        )
    return cluster, max(opts.n_workers + sum(g.n_workers for g in opts.worker_groups), 1)


def _wait_for_workers(client: Client, cfg: ClusterConfig, expected: int) -> None:
    """Wait for the requested workers, so GPU placement sees the GPU workers.

    Queued jobs may never start: after ``startup_timeout_s`` go on with the workers that
    joined, or fail in one line when none did.
    """
    try:
        client.wait_for_workers(expected, timeout=cfg.startup_timeout_s)
    except TimeoutError:
        joined = len(client.scheduler_info().get("workers", {}))
        if not joined:
            raise ConfigError(
                f"no Dask worker joined the {cfg.kind} cluster within "
                f"{cfg.startup_timeout_s:.0f} s (cluster.startup_timeout_s); "
                "are its jobs or pods still pending?"
            ) from None
        log.warning("%d of %d workers joined within %.0f s; going on with them",
                    joined, expected, cfg.startup_timeout_s)


#: What GPU work asks for when a worker holds it (DESIGN: a Dask worker with resource GPU).
GPU = {"GPU": 1.0}


def matching_resources(client: Client, wanted: dict[str, float]) -> dict[str, float] | None:
    """``wanted`` when some worker holds every resource in it (e.g. ``{"GPU": 1}``), else
    None: the task then runs on any worker, which is a CPU one (the CPU fallback)."""
    if not wanted:
        return None
    try:
        info = client.scheduler_info(n_workers=-1)  # all workers, not the first few
    except TypeError:  # distributed before n_workers existed lists them all anyway
        info = client.scheduler_info()
    for worker in info.get("workers", {}).values():
        held = worker.get("resources", {})
        if all(held.get(name, 0) >= amount for name, amount in wanted.items()):
            return dict(wanted)
    return None


def gpu_resources(client: Client) -> dict[str, float] | None:
    """``{"GPU": 1}`` when some worker holds a GPU resource, else None (CPU fallback)."""
    return matching_resources(client, GPU)


def gather_with_progress(
    client: Client, futures: list, description: str, on_result: Callable | None = None
) -> list:
    """Gather futures in order while a rich progress bar counts them as they finish.

    ``on_result`` sees each result as it arrives (in completion order), e.g. to record
    progress on disk, so a killed run keeps what finished.
    """
    from distributed import as_completed

    with progress_bar() as progress:
        bar = progress.add_task(description, total=len(futures))
        # The client is not the default one (set_as_default=False): hand its loop over.
        for future in as_completed(futures, loop=client.loop):
            if on_result is not None and future.status == "finished":
                on_result(future.result())
            progress.advance(bar)
    return client.gather(futures)
