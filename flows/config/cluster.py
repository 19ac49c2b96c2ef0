"""The ``cluster`` section of the config: where Dask runs (typed, unknown keys are errors).

Recipes for each kind live in ``configs/clusters/``; ``flows/runtime/cluster.py`` turns this
section into a running cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ClusterConfig", "KubeWorkerGroup", "KubernetesConfig", "SlurmConfig"]


class _Strict(BaseModel):
    # Same contract as flows.config.schema: frozen, unknown keys are errors.
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlurmConfig(_Strict):
    """Options of a dask-jobqueue ``SLURMCluster``: one SLURM job runs ``processes`` workers."""

    queue: str | None = Field(None, description="partition (#SBATCH -p); None: the default")
    account: str | None = Field(None, description="account charged (#SBATCH -A)")
    cores: int = Field(8, ge=1, description="cores per job, shared by its worker processes")
    memory: str = Field("32GiB", description="memory per job, shared by its worker processes")
    processes: int = Field(1, ge=1, description="worker processes per job (1 for a GPU job)")
    walltime: str = Field("04:00:00", description="job time limit (HH:MM:SS)")
    jobs: int = Field(1, ge=0, description="jobs submitted when the cluster starts")
    maximum_jobs: int | None = Field(
        None, ge=1, description="adapt between `jobs` and this many jobs; None: fixed size"
    )
    job_extra_directives: list[str] = Field(
        default_factory=list, description="extra #SBATCH lines, e.g. --gres=gpu:1"
    )
    worker_extra_args: list[str] = Field(
        default_factory=list, description="extra `dask worker` arguments, e.g. --resources GPU=1"
    )
    job_script_prologue: list[str] = Field(
        default_factory=list, description="shell lines run before the worker starts (modules, "
        "activating the environment)"
    )
    local_directory: str | None = Field(None, description="node-local scratch for spilling")
    log_directory: str | None = Field(None, description="where SLURM writes job logs")
    interface: str | None = Field(None, description="network interface workers listen on")


class KubeWorkerGroup(_Strict):
    """An extra worker group of a Dask Kubernetes cluster (e.g. GPU nodes)."""

    name: str = Field("gpu", description="group name (pods are <cluster>-<name>-...)")
    n_workers: int = Field(1, ge=0, description="worker pods in the group")
    resources: dict[str, dict[str, str | int]] = Field(
        default_factory=dict, description="pod requests/limits, e.g. limits: {nvidia.com/gpu: 1}"
    )
    worker_command: list[str] = Field(
        default_factory=lambda: ["dask", "worker"],
        description="worker command and arguments, e.g. [dask, worker, --resources, GPU=1]",
    )
    image: str | None = Field(None, description="container image; None: the cluster's")


class KubernetesConfig(_Strict):
    """Options of a dask-kubernetes (operator) ``KubeCluster``."""

    name: str = Field("forestnet", description="DaskCluster resource name")
    namespace: str | None = Field(None, description="Kubernetes namespace; None: the current")
    image: str = Field(
        "forestnet-pipeline:latest",
        description="container image holding this project (workers import its stages)",
    )
    n_workers: int = Field(2, ge=0, description="pods in the default (CPU) worker group")
    resources: dict[str, dict[str, str | int]] = Field(
        default_factory=dict, description="default group pod requests/limits"
    )
    env: dict[str, str] = Field(default_factory=dict, description="environment of every pod")
    worker_command: list[str] = Field(
        default_factory=lambda: ["dask", "worker"], description="default group worker command"
    )
    worker_groups: list[KubeWorkerGroup] = Field(
        default_factory=list, description="extra worker groups, e.g. GPU workers"
    )
    custom_cluster_spec: Path | None = Field(
        None, description="a DaskCluster manifest (YAML) used instead of the options above"
    )
    resource_timeout: int = Field(300, ge=1, description="seconds to wait for the scheduler pod")


ClusterKind = Literal["local", "address", "slurm", "kubernetes"]


class ClusterConfig(_Strict):
    """Where Dask runs. ``kind`` defaults to ``address`` when ``address`` is given."""

    kind: ClusterKind = Field(
        "local", description="local: a LocalCluster; address: an existing scheduler; slurm: "
        "dask-jobqueue SLURM jobs; kubernetes: a dask-kubernetes cluster"
    )
    address: str | None = Field(None, description="existing Dask scheduler; None: LocalCluster")
    n_workers: int = Field(2, ge=1, description="LocalCluster worker processes")
    threads_per_worker: int = Field(1, ge=1, description="threads per LocalCluster worker")
    memory_limit: str = Field("6GiB", description="memory limit per LocalCluster worker")
    gpu: Literal["auto", "off"] = Field(
        "auto", description="auto: give LocalCluster workers GPU resources when CUDA is visible"
    )
    slurm: SlurmConfig | None = Field(None, description="kind slurm: SLURMCluster options")
    kubernetes: KubernetesConfig | None = Field(
        None, description="kind kubernetes: KubeCluster options"
    )
    startup_timeout_s: float = Field(
        900.0, gt=0, description="slurm/kubernetes: seconds to wait for the first worker"
    )

    @model_validator(mode="before")
    @classmethod
    def _address_implies_kind(cls, data: object) -> object:
        # Configs written before `kind` existed say only `address:`; keep them meaning that.
        if isinstance(data, dict) and data.get("address") and "kind" not in data:
            return {**data, "kind": "address"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("cluster.kind 'address' needs cluster.address (host:port)")
        if self.kind != "address" and self.address:
            raise ValueError(f"cluster.address is set but cluster.kind is {self.kind!r}")
        for key in ("slurm", "kubernetes"):
            if getattr(self, key) is not None and self.kind != key:
                raise ValueError(f"cluster.{key} is set but cluster.kind is {self.kind!r}")
        return self
