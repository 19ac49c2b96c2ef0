"""The cluster recipes in configs/clusters/ and the cluster kinds of flows/runtime/cluster.py.

The local and existing-scheduler recipes run real Dask clusters. dask-jobqueue and
dask-kubernetes are not dependencies: their recipes must fail in one line naming the
package, and their wiring is checked against stand-in modules that record the calls.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from distributed import LocalCluster

from flows.config.cluster import ClusterConfig
from flows.config.schema import ConfigError, load_config
from flows.runtime.cluster import dask_client

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "clusters"
KINDS = {"local": "local", "existing-scheduler": "address", "slurm-gpu": "slurm",
         "kubernetes-gpu": "kubernetes"}


def _write(folder: Path, data: dict, name: str = "run.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_recipe_validates(name: str) -> None:
    cfg = load_config(RECIPES / f"{name}.yaml")
    assert cfg.cluster.kind == KINDS[name]


def test_no_recipe_is_left_untested() -> None:
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(KINDS)


def test_gpu_recipes_ask_for_gpu_workers() -> None:
    slurm = load_config(RECIPES / "slurm-gpu.yaml").cluster.slurm
    assert "--gres=gpu:1" in slurm.job_extra_directives
    assert " ".join(slurm.worker_extra_args) == "--resources GPU=1"
    assert slurm.processes == 1
    kube = load_config(RECIPES / "kubernetes-gpu.yaml").cluster.kubernetes
    (gpu,) = kube.worker_groups
    assert gpu.resources["limits"]["nvidia.com/gpu"] == 1
    assert " ".join(gpu.worker_command).endswith("--resources GPU=1")


def test_a_config_can_name_a_recipe(tmp_path: Path) -> None:
    path = _write(tmp_path, {"workdir": "out", "cluster": str(RECIPES / "slurm-gpu.yaml")})
    cfg = load_config(path)
    assert cfg.cluster == load_config(RECIPES / "slurm-gpu.yaml").cluster


def test_recipe_errors_name_the_recipe(tmp_path: Path) -> None:
    missing = _write(tmp_path, {"cluster": str(tmp_path / "nope.yaml")})
    with pytest.raises(ConfigError, match="recipe file not found") as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    recipe = _write(tmp_path, {"cluster": {"kind": "slurm", "slurm": {"gres": 1}}}, "bad.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'slurm\.gres'") as info:
        load_config(_write(tmp_path, {"cluster": str(recipe)}))
    assert str(recipe) in str(info.value) and "\n" not in str(info.value)


def test_old_configs_keep_their_meaning(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, {"cluster": {"n_workers": 3}})).cluster.kind == "local"
    attached = load_config(_write(tmp_path, {"cluster": {"address": "tcp://h:8786"}}))
    assert attached.cluster.kind == "address"


@pytest.mark.parametrize("section, message", [
    ({"kind": "address"}, "needs cluster.address"),
    ({"kind": "local", "address": "tcp://h:1"}, "cluster.address is set"),
    ({"slurm": {"cores": 4}}, "cluster.slurm is set but cluster.kind is 'local'"),
    ({"kind": "kubernetes", "kubernetes": {"replicas": 2}}, "unknown key"),
    ({"kind": "pbs"}, "cluster.kind"),
])
def test_inconsistent_cluster_sections_fail_in_one_line(
    tmp_path: Path, section: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(_write(tmp_path, {"cluster": section}))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, package", [("slurm-gpu", "dask-jobqueue"),
                                           ("kubernetes-gpu", "dask-kubernetes")])
def test_missing_cluster_manager_is_one_clear_line(name: str, package: str) -> None:
    module = package.replace("-", "_")
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{package} is installed here")
    cfg = load_config(RECIPES / f"{name}.yaml").cluster
    with pytest.raises(ConfigError) as info, dask_client(cfg, echo=lambda _: None):
        pass
    message = str(info.value)
    assert package in message and f"pip install {package}" in message and "\n" not in message


def test_local_recipe_starts_a_local_cluster() -> None:
    cfg = load_config(RECIPES / "local.yaml").cluster.model_copy(update={"gpu": "off"})
    said: list[str] = []
    with dask_client(cfg, echo=said.append) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == cfg.n_workers
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert said and said[0].startswith(f"Dask: LocalCluster with {cfg.n_workers} workers")


def test_existing_scheduler_recipe_attaches_and_leaves_it_running(tmp_path: Path) -> None:
    recipe = yaml.safe_load((RECIPES / "existing-scheduler.yaml").read_text())
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        recipe["cluster"]["address"] = cluster.scheduler_address
        cfg = load_config(_write(tmp_path, recipe)).cluster
        said: list[str] = []
        with dask_client(cfg, echo=said.append) as client:
            assert client.submit(pow, 2, 10).result() == 1024
        assert said[0].startswith(f"Dask: attached to {cluster.scheduler_address}")
        assert cluster.status.name == "running"  # attached, so not ours to close
        assert len(cluster.scheduler_info["workers"]) == 1


class _RecordingCluster:
    """Stands in for SLURMCluster / KubeCluster: records its calls and hands out the
    address of one shared in-process cluster (starting one per test is slow to close)."""

    calls: list[tuple[str, tuple, dict]] = []
    backing: LocalCluster

    def __init__(self, **kwargs) -> None:
        self.calls.append(("init", (), kwargs))
        self.scheduler_address = self.backing.scheduler_address
        self.dashboard_link = self.backing.dashboard_link

    @property
    def status(self):  # Client checks that the cluster is running
        return self.backing.status

    def scale(self, n: int | None = None, jobs: int = 0) -> None:
        self.calls.append(("scale", (), {"n": n, "jobs": jobs}))

    def adapt(self, **kwargs) -> None:
        self.calls.append(("adapt", (), kwargs))

    def add_worker_group(self, name: str, **kwargs) -> None:
        self.calls.append(("add_worker_group", (name,), kwargs))

    def close(self) -> None:
        self.calls.append(("close", (), {}))


@pytest.fixture(scope="module")
def backing_cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch, backing_cluster: LocalCluster) -> list:
    monkeypatch.setattr(_RecordingCluster, "calls", [])
    monkeypatch.setattr(_RecordingCluster, "backing", backing_cluster, raising=False)
    jobqueue = ModuleType("dask_jobqueue")
    jobqueue.SLURMCluster = _RecordingCluster
    operator = ModuleType("dask_kubernetes.operator")
    operator.KubeCluster = _RecordingCluster
    monkeypatch.setitem(sys.modules, "dask_jobqueue", jobqueue)
    monkeypatch.setitem(sys.modules, "dask_kubernetes", ModuleType("dask_kubernetes"))
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", operator)
    return _RecordingCluster.calls


def _short_wait(cfg: ClusterConfig) -> ClusterConfig:
    # The stand-in has one worker, the recipes ask for more: don't wait long for them.
    return cfg.model_copy(update={"startup_timeout_s": 1.0})


def test_slurm_recipe_becomes_slurmcluster_arguments(stand_ins: list) -> None:
    cfg = _short_wait(load_config(RECIPES / "slurm-gpu.yaml").cluster)
    with dask_client(cfg, echo=lambda _: None) as client:
        assert client.submit(abs, -3).result() == 3
    (_, _, kwargs), (verb, _, sized) = stand_ins[:2]
    assert kwargs["job_extra_directives"] == ["--gres=gpu:1"]
    assert kwargs["worker_extra_args"] == ["--resources", "GPU=1"]
    assert kwargs["processes"] == 1 and kwargs["queue"] == "gpu"
    assert kwargs["walltime"] == "08:00:00" and kwargs["memory"] == "64GiB"
    assert "account" not in kwargs  # unset: the site's jobqueue config decides
    assert "jobs" not in kwargs and "maximum_jobs" not in kwargs
    assert verb == "adapt" and sized == {"minimum_jobs": 2, "maximum_jobs": 8}
    assert stand_ins[-1][0] == "close"  # the run's cluster is shut down at the end


def test_kubernetes_recipe_adds_the_gpu_worker_group(stand_ins: list) -> None:
    cfg = _short_wait(load_config(RECIPES / "kubernetes-gpu.yaml").cluster)
    with dask_client(cfg, echo=lambda _: None) as client:
        assert client.submit(abs, -4).result() == 4
    (_, _, kwargs), (verb, (name,), group) = stand_ins[:2]
    assert kwargs["name"] == "forestnet" and kwargs["n_workers"] == 4
    assert kwargs["worker_command"][:2] == ["dask", "worker"]
    assert verb == "add_worker_group" and name == "gpu"
    assert group["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert group["worker_command"][-2:] == ["--resources", "GPU=1"]
    assert stand_ins[-1][0] == "close"


def test_every_worker_of_a_local_cluster_gets_the_malloc_tuning() -> None:
    from flows.runtime.cluster import MallocTuning

    cfg = ClusterConfig(n_workers=1, threads_per_worker=1, gpu="off")
    with dask_client(cfg, echo=lambda _: None) as client:
        held = client.run(lambda dask_worker: MallocTuning.name in dask_worker.plugins)
    assert list(held.values()) == [True]
