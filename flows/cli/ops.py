"""``forestnet`` commands for operating the pipeline: evaluate, deploy, pretrain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.support import (
    DEFAULT_DEMO_CONFIG,
    AddressOpt,
    ConfigOpt,
    _guard,
    _load,
    _run,
    app,
    console,
)
from flows.config.schema import ConfigError, PipelineConfig


@app.command()
def evaluate(
    bundle: Annotated[Path | None, typer.Option(help="model bundle (default: workdir)")] = None,
    chips: Annotated[Path | None, typer.Option(help="chip store (default: workdir)")] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    out: Annotated[Path | None, typer.Option(help="report folder (default: "
                                             "<workdir>/evaluation)")] = None,
    baseline: Annotated[bool, typer.Option(help="also fit the random-forest baselines")] = True,
    seed: Annotated[int, typer.Option(help="random seed of the baselines")] = 0,
    maps: Annotated[list[Path] | None, typer.Option(
        "--map", help="a driver map GeoPackage of the same area (repeatable): the report sets "
        "its accuracy on the split's events beside evaluation's")] = None,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Evaluate a model bundle on a split, with random-forest baselines; writes report.md."""

    def body() -> None:
        from flows.evaluate import check_evaluation_inputs, evaluate_flow

        cfg = _load(config, dask_address)
        bundle_path, chips_path = bundle or cfg.bundle_path, chips or cfg.chips_path
        out_dir = out or cfg.workdir / "evaluation"
        map_paths = tuple(str(m) for m in maps or ())
        check_evaluation_inputs(bundle_path, chips_path, split, baseline,
                                map_paths)  # before the cluster

        def run(_: PipelineConfig, address: str) -> dict:
            return evaluate_flow(address, str(bundle_path), str(chips_path), split,
                                 str(out_dir), baseline, seed, map_paths)

        result = _run(cfg, run)
        typer.echo(f"accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f} "
                   f"on {result['n']} {split} events")
        if "map" in result:
            m = result["map"]
            typer.echo(f"map accuracy {m['map_accuracy']:.3f} on the same events; drivers "
                       f"agree with evaluation on {m['agreement']:.3f}")
        typer.echo(f"report: {result['report']}")

    _guard(body)


@app.command()
def deploy(
    config: ConfigOpt = DEFAULT_DEMO_CONFIG,
    serve: Annotated[
        bool, typer.Option("--serve", help="serve the deployments from here (blocks)")
    ] = False,
    cron: Annotated[
        str, typer.Option(help="schedule of the map deployment (cron, Asia/Jakarta time)")
    ] = "0 3 1 * *",
    work_pool: Annotated[
        str | None,
        typer.Option("--work-pool", help="register them for this process work pool "
                     "(created when missing)"),
    ] = None,
    province: Annotated[
        str | None, typer.Option(help="province of the monthly map (default: the config's)")
    ] = None,
) -> None:
    """Prefect deployments of the ingest, train and map jobs: print, serve or register them.

    Without --serve or --work-pool, prints them as prefect.yaml entries.
    """

    def body() -> None:
        import yaml

        from flows.cli import deployments as plans

        if serve and work_pool:
            raise ConfigError("--serve and --work-pool exclude each other: --serve runs the "
                              "jobs here, a work pool runs them on its workers")
        _load(config, None)  # a bad config fails here, in one line, before anything registers
        # Absolute: served and pooled runs may start in another working directory.
        plan = plans.deployment_plan(str(Path(config).resolve()), province, cron)
        api = plans.api_url()
        if work_pool:
            if not api:
                raise ConfigError("--work-pool needs a Prefect server: start one with "
                                  "`prefect server start` and set PREFECT_API_URL")
            plans.deploy_plan(plan, work_pool)
            for job in plan:
                typer.echo(f"deployment: {job.full_name} (work pool {work_pool})")
            console.print(f"start a worker: prefect worker start --pool {work_pool}",
                          highlight=False, soft_wrap=True)
        elif serve:
            if not api:
                console.print("PREFECT_API_URL is not set: serving against Prefect's temporary "
                              "local API (no UI); see README, Operating it", highlight=False,
                              soft_wrap=True)
            plans.serve_plan(plan)
        else:
            entries = plans.as_prefect_yaml(plan, plans.DEFAULT_WORK_POOL)
            typer.echo(yaml.safe_dump({"deployments": entries}, sort_keys=False).rstrip())
            console.print("run them here: forestnet deploy --serve; on a worker: forestnet "
                          "deploy --work-pool NAME", highlight=False, soft_wrap=True)

    _guard(body)


@app.command()
def pretrain(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option(
        help="encoder weights (default <workdir>/model/pretrained-encoder.safetensors)")] = None,
) -> None:
    """Pre-train the encoder on land cover (aux.bands must include 'landcover').

    Uses the model and train sections; point model.encoder_weights at the file it writes.
    """

    def body() -> None:
        from flows.train import check_inputs
        from forestnet_model.pretrain import pretrain_encoder

        cfg = _load(config, None)
        check_inputs(cfg)
        target = out or cfg.model_dir / "pretrained-encoder.safetensors"
        try:
            path = pretrain_encoder(cfg.chips_path, target, cfg.model, cfg.train)
        except ValueError as exc:  # no land-cover band, no training events: one line
            raise ConfigError(str(exc)) from None
        typer.echo(f"encoder weights: {path}")

    _guard(body)
