"""Tests for the deployable jobs (flows/deploy.py), prefect.yaml and `forestnet deploy`.

No Prefect server here: tests/reliability/test_deployment.py runs a real one.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows import deploy as jobs
from flows.cli import deployments as plans
from flows.cli.app import app
from flows.config.schema import ConfigError, load_config
from pipeline.core.provinces import UnknownProvinceError

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"
DEMO = "configs/demo.yaml"


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def test_prefect_yaml_entrypoints_import_as_the_job_flows(prefect_yaml: dict) -> None:
    from prefect.flows import load_flow_from_entrypoint

    entries = prefect_yaml["deployments"]
    assert [e["entrypoint"] for e in entries] == [
        "flows/deploy.py:ingest_job", "flows/deploy.py:train_job", "flows/deploy.py:map_job"
    ]
    for entry in entries:
        path, function = entry["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        loaded = load_flow_from_entrypoint(str(ROOT / path) + ":" + function)
        assert loaded.name == jobs.JOBS[function].name


def test_prefect_yaml_parameters_match_the_flow_signatures(prefect_yaml: dict) -> None:
    for entry in prefect_yaml["deployments"]:
        job = jobs.JOBS[entry["entrypoint"].split(":")[1]]
        accepted = set(inspect.signature(job.fn).parameters)
        assert set(entry["parameters"]) <= accepted, entry["name"]
        # Prefect validates run parameters against the signature the same way.
        job.validate_parameters(entry["parameters"])
        config = ROOT / entry["parameters"]["config"]
        assert load_config(config)  # the config it names exists and validates


def test_prefect_yaml_is_the_deployment_plan(prefect_yaml: dict) -> None:
    """prefect.yaml and `forestnet deploy` describe the same three deployments."""
    plan = plans.deployment_plan(DEMO)
    assert prefect_yaml["deployments"] == plans.as_prefect_yaml(plan)
    (monthly,) = [e for e in prefect_yaml["deployments"] if "schedules" in e]
    assert monthly["entrypoint"].endswith(":map_job")
    assert monthly["schedules"] == [{"cron": "0 3 1 * *", "timezone": "Asia/Jakarta"}]
    assert len(monthly["parameters"]["provinces"]) == 1
    assert {e["work_pool"]["name"] for e in prefect_yaml["deployments"]} == {"forestnet-process"}


def test_prefect_yaml_passes_prefects_own_schema(prefect_yaml: dict) -> None:
    models = pytest.importorskip("prefect.cli.deploy._models")  # private: skip if it moves
    parsed = models.PrefectYamlModel.model_validate(prefect_yaml)
    assert [d.name for d in parsed.deployments] == ["default", "default", "monthly"]
    schedule = parsed.deployments[2].schedules[0]
    assert schedule.cron == "0 3 1 * *"


def test_parse_years() -> None:
    assert jobs.parse_years("2015-2020") == (2015, 2020)
    assert jobs.parse_years(" 2016 ") == (2016, 2016)
    with pytest.raises(ConfigError, match="FIRST-LAST"):
        jobs.parse_years("fifteen")


def test_job_config_applies_overrides(tmp_path: Path) -> None:
    cfg = jobs.job_config(DEMO, "tcp://10.0.0.5:8786", ["Riau", "Jambi"], "2014-2015")
    assert cfg.mapping.provinces == ["Riau", "Jambi"]
    assert cfg.mapping.years == (2014, 2015)
    assert cfg.cluster.address == "tcp://10.0.0.5:8786"
    untouched = jobs.job_config(DEMO)
    assert untouched == load_config(Path(DEMO))


def test_job_config_rejects_bad_overrides_in_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        jobs.job_config(DEMO, years="2016-2013")
    assert "years" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        jobs.job_config("configs/nope.yaml")


def test_plan_checks_cron_and_province() -> None:
    with pytest.raises(ConfigError, match="cron"):
        plans.deployment_plan(DEMO, cron="every month")
    with pytest.raises(UnknownProvinceError, match="Atlantis"):
        plans.deployment_plan(DEMO, province="Atlantis")
    plan = plans.deployment_plan(DEMO, province="Riau", cron="0 4 * * 1")
    assert [j.full_name for j in plan] == ["ingest-job/default", "train-job/default",
                                           "map-job/monthly"]
    assert plan[2].parameters["provinces"] == ["Riau"] and plan[2].cron == "0 4 * * 1"


def test_cli_deploy_prints_the_deployments() -> None:
    result = CliRunner().invoke(app, ["deploy", "--config", DEMO, "--province", "Riau"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)["deployments"]
    assert [e["entrypoint"].split(":")[1] for e in printed] == list(jobs.JOBS)
    # The config is recorded absolute: served and pooled runs start elsewhere.
    assert printed[2]["parameters"]["config"] == str((ROOT / DEMO).resolve())
    assert printed[2]["parameters"]["provinces"] == ["Riau"]


def test_cli_deploy_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    both = runner.invoke(app, ["deploy", "--config", DEMO, "--serve", "--work-pool", "p"])
    assert both.exit_code == 2 and "exclude each other" in both.output
    cron = runner.invoke(app, ["deploy", "--config", DEMO, "--cron", "daily"])
    assert cron.exit_code == 2 and "cron" in cron.output
    monkeypatch.setattr(plans, "api_url", lambda: None)
    pool = runner.invoke(app, ["deploy", "--config", DEMO, "--work-pool", "p"])
    assert pool.exit_code == 2 and "PREFECT_API_URL" in pool.output
