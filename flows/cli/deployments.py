"""The deployments of the jobs in ``flows/deploy.py``: one plan that ``prefect.yaml``,
``forestnet deploy --serve`` and ``forestnet deploy --work-pool`` share (a test keeps
``prefect.yaml`` in step with :func:`deployment_plan`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Flow
from pydantic import ValidationError

from flows.config.schema import ConfigError, load_config
from flows.deploy import DEFAULT_CONFIG, JOBS

ROOT = Path(__file__).resolve().parents[2]
#: Deployment entrypoints are given relative to ROOT (a work pool's working directory).
MODULE_FILE = "flows/deploy.py"
#: The example schedule: 03:00 on the first of every month, Jakarta time.
MONTHLY_CRON = "0 3 1 * *"
TIMEZONE = "Asia/Jakarta"
DEFAULT_WORK_POOL = "forestnet-process"


@dataclass(frozen=True)
class JobDeployment:
    """One deployment of a job: what prefect.yaml, ``serve`` and ``deploy`` share."""

    name: str
    function: str  # key of JOBS
    parameters: dict[str, Any]
    description: str
    cron: str | None = None
    tags: tuple[str, ...] = field(default=("forestnet",))

    @property
    def flow(self) -> Flow:
        return JOBS[self.function]

    @property
    def entrypoint(self) -> str:
        return f"{MODULE_FILE}:{self.function}"

    @property
    def full_name(self) -> str:
        """``<flow name>/<deployment name>``, as ``run_deployment`` wants it."""
        return f"{self.flow.name}/{self.name}"

    def schedules(self) -> list:
        from prefect.schedules import Cron

        return [Cron(self.cron, timezone=TIMEZONE)] if self.cron else []


def deployment_plan(
    config: str = DEFAULT_CONFIG, province: str | None = None, cron: str = MONTHLY_CRON
) -> list[JobDeployment]:
    """The three deployments: ingest and train on demand, map one province monthly."""
    from pipeline.core.provinces import select_provinces

    check_cron(cron)
    if province is None:
        province = load_config(Path(config)).mapping.provinces[0]
    select_provinces([province])  # an unknown name fails here, listing the valid ones
    return [
        JobDeployment("default", "ingest_job", {"config": config},
                      "Ingest the config's Landsat inputs into the scene store."),
        JobDeployment("default", "train_job", {"config": config},
                      "Build the training set and train a model bundle."),
        JobDeployment("monthly", "map_job",
                      {"config": config, "provinces": [province], "years": None},
                      f"Map loss drivers in {province}, monthly.", cron=cron),
    ]


def check_cron(cron: str) -> None:
    """A ConfigError unless ``cron`` is a valid 5-field cron string."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=TIMEZONE)
    except ValidationError as exc:
        reason = "; ".join(e["msg"] for e in exc.errors())
        raise ConfigError(f"--cron {cron!r}: not a valid cron schedule ({reason})") from None


def as_prefect_yaml(plan: list[JobDeployment], work_pool: str = DEFAULT_WORK_POOL) -> list[dict]:
    """The plan as the ``deployments:`` entries of a prefect.yaml."""
    entries = []
    for job in plan:
        entry: dict[str, Any] = {
            "name": job.name, "entrypoint": job.entrypoint, "description": job.description,
            "tags": list(job.tags), "parameters": dict(job.parameters),
            "work_pool": {"name": work_pool},
        }
        if job.cron:
            entry["schedules"] = [{"cron": job.cron, "timezone": TIMEZONE}]
        entries.append(entry)
    return entries


def serve_plan(plan: list[JobDeployment], limit: int | None = None) -> None:
    """Serve the deployments from this process (blocks): runs start as local subprocesses."""
    from prefect import serve

    deployments = [
        job.flow.to_deployment(job.name, parameters=job.parameters, schedules=job.schedules(),
                               description=job.description, tags=list(job.tags))
        for job in plan
    ]
    serve(*deployments, limit=limit)


def deploy_plan(plan: list[JobDeployment], work_pool: str) -> list[str]:
    """Register the deployments for a process work pool, with this checkout as the source.

    Creates the pool (type ``process``) when it does not exist. A worker started with
    ``prefect worker start --pool NAME`` on a machine holding this checkout runs them.
    """
    from prefect import deploy

    ensure_process_pool(work_pool)
    deployments = [
        job.flow.from_source(source=str(ROOT), entrypoint=job.entrypoint).to_deployment(
            job.name, parameters=job.parameters, schedules=job.schedules(),
            description=job.description, tags=list(job.tags), work_pool_name=work_pool)
        for job in plan
    ]
    ids = deploy(*deployments, work_pool_name=work_pool, build=False, push=False,
                 print_next_steps_message=False, ignore_warnings=True)
    return [str(i) for i in ids]


def ensure_process_pool(name: str) -> bool:
    """Create a ``process`` work pool unless it exists; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True


def api_url() -> str | None:
    """The Prefect API this process talks to; None: Prefect's temporary local one."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
