"""The ``forestnet`` command line: thin wrappers that load a config and run one flow."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from flows.config import (
    ConfigError,
    PipelineConfig,
    format_validation_error,
    load_config,
    parse_years,
    preflight,
    require_file,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="ForestNet pipeline: map the drivers of deforestation across Indonesia.",
)
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
AddressOpt = Annotated[
    str | None, typer.Option("--dask-address", help="attach to this Dask scheduler")
]
DEFAULT_DEMO_CONFIG = Path("configs/demo.yaml")


def _user_errors() -> tuple[type[BaseException], ...]:
    from forestnet_model.bundle import BundleError
    from pipeline.events import EventInputError
    from pipeline.ingest import SceneInputError
    from pipeline.landsat import MTLError
    from pipeline.map_parts import MapPartError
    from pipeline.provinces import UnknownProvinceError
    from pipeline.release_reader import ReleaseError
    from pipeline.reproject import RasterInputError
    from pipeline.run_lock import OutputLockedError
    from pipeline.splits import SplitError

    return (
        ConfigError,
        BundleError,
        EventInputError,
        SceneInputError,
        MTLError,
        MapPartError,
        OutputLockedError,
        UnknownProvinceError,
        RasterInputError,
        ReleaseError,
        SplitError,
        FileNotFoundError,
        PermissionError,
    )


def _load(config: Path | None, address: str | None) -> PipelineConfig:
    cfg = load_config(config)
    if address:
        cfg = cfg.model_copy(
            update={"cluster": cfg.cluster.model_copy(update={"address": address})}
        )
    return cfg


def _run(config: PipelineConfig, flow: Callable[[PipelineConfig, str], dict], verb: str) -> dict:
    """Check the verb's inputs, start (or attach to) the cluster and run one flow on it."""
    from flows.cluster import dask_client

    _quiet_cluster_logs()
    preflight(config, verb)
    echo = lambda m: console.print(m, highlight=False, soft_wrap=True)  # noqa: E731
    with dask_client(config.cluster, echo=echo) as client:
        return flow(config, client.scheduler.address)


#: A full disk, a quota or a read-only file system: the run stops, its finished work stays.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _guard(body: Callable[[], None]) -> None:
    """Known input problems become one line on stderr and exit code 2, no traceback; a
    full disk mid-run becomes one line and exit code 1 (the run could not finish)."""
    try:
        body()
    except _user_errors() as exc:
        _error_line(str(exc))
        raise typer.Exit(2) from None
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        # Every output is written to a temporary name and renamed, so nothing half
        # written is left in place; finished scenes, batches and tiles are reused.
        where = f"{exc.filename}: " if exc.filename else ""
        _error_line(f"{where}{exc.strerror or os.strerror(exc.errno)}; finished work is kept, "
                    "free some space and rerun to resume")
        raise typer.Exit(1) from None


def _error_line(message: str) -> None:
    # One line, verbatim: messages may quote multi-line library errors, and paths or
    # keys in brackets ("landsat[0]", "scenes[old]/") must not be read as markup.
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    console.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[_StderrHandler()],
        force=True,  # a second in-process invocation (CliRunner) replaces the first's handler
    )
    _STATE["verbose"] = verbose
    # Prefect waits 20 s for its temporary API server; a busy 2-core machine can need more
    # (seen in CI-sized runs), and a timeout there loses the whole run. Users may override.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Mapping machines are often offline: telemetry would only log a failure per run.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


_STATE = {"verbose": False}


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is now, not to the stream it was created with.

    An in-process caller (CliRunner in tests) swaps stderr for each invocation and closes
    it after; a handler holding the old stream fails on every later record (Prefect logs
    its server's shutdown at exit).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _quiet_cluster_logs() -> None:
    """Cluster start/stop chatter hides the pipeline's own log lines (unless --verbose).

    Called after distributed is imported: its import sets its loggers to INFO.
    """
    if not _STATE["verbose"]:
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # The dashboard's "host wildcard" warning is about bokeh's defaults, not the run.
        logging.getLogger("bokeh").setLevel(logging.ERROR)


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Option("--out", help="folder to write the world to")] = Path(
        "outputs/sample-world"
    ),
    preset: Annotated[str, typer.Option(help="demo or tiny")] = "demo",
    seed: Annotated[int, typer.Option(help="random seed")] = 42,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Write the deterministic sample world (Landsat, GFC, aux, labelled events)."""

    def body() -> None:
        from dataclasses import replace

        from pipeline.sample_world import WorldSpec, generate_world

        cfg = _load(config, dask_address)
        if preset not in ("demo", "tiny"):
            raise ConfigError(f"--preset must be demo or tiny, not {preset!r}")
        spec = replace(WorldSpec.tiny() if preset == "tiny" else WorldSpec.demo(), seed=seed)

        def generate(_: PipelineConfig, address: str) -> dict:
            # One coarse Dask task: the world is written by a worker, like every stage.
            from distributed import Client

            with Client(address, set_as_default=False) as client:
                return {"manifest": client.submit(generate_world, out, spec).result()}

        result = _run(cfg, generate, "sample-data")
        typer.echo(f"sample world: {result['manifest']}")
    _guard(body)


@app.command()
def ingest(
    sources: Annotated[
        list[str] | None,
        typer.Argument(help="product folders (or folders of them), USGS .tar bundles, STAC "
                       "Item JSON files"),
    ] = None,
    store: Annotated[Path | None, typer.Option(help="scene store (default: workdir)")] = None,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Ingest Landsat 8/9 Collection 2 L1/L2 products into the Zarr scene store.

    Exits 1 when any scene failed (each failure is listed on stderr), 2 on bad input.
    """

    def body() -> None:
        from flows.ingest import ingest_flow

        cfg = _load(config, dask_address)
        if sources:
            # Validate (not just copy): local paths become Paths, URLs stay strings.
            inputs = type(cfg.inputs).model_validate(
                {**cfg.inputs.model_dump(), "landsat": list(sources)}
            )
            cfg = cfg.model_copy(update={"inputs": inputs})
        if store:
            cfg = cfg.model_copy(update={"scenes": store})
        result = _run(cfg, ingest_flow, "ingest")
        typer.echo(
            f"scene store: {result['store']} ({result['ingested']} ingested, "
            f"{result['skipped']} skipped, {result['failed']} failed)"
        )
        for failure in result.get("failures", []):
            console.print(f"[red]failed:[/red] {failure['scene_id']}: {failure['error']}",
                          highlight=False, soft_wrap=True)
        if result["failed"]:
            raise typer.Exit(1)

    _guard(body)


@app.command("build-training-set")
def build_training_set(config: ConfigOpt = None, dask_address: AddressOpt = None) -> None:
    """Events + chips + auxiliary predictors -> chips.zarr."""

    def body() -> None:
        from flows.training_set import training_set_flow

        result = _run(_load(config, dask_address), training_set_flow, "build-training-set")
        typer.echo(f"chip store: {result['chips']}")

    _guard(body)


@app.command("import-forestnet")
def import_forestnet(
    path: Annotated[Path, typer.Argument(help="the ForestNetDataset folder or its zip")],
    out: Annotated[Path | None, typer.Option(help="chip store (default: workdir)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="examples per task")] = 64,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Import the published ForestNet dataset into a chips.zarr store."""

    def body() -> None:
        from flows.forestnet_import import import_forestnet_flow
        from pipeline.release_reader import ReleaseReader

        cfg = _load(config, dask_address)
        target = out or cfg.chips_path
        with ReleaseReader(path):  # a wrong path fails here, before the cluster starts
            pass

        def run(c: PipelineConfig, address: str) -> dict:
            return import_forestnet_flow(c, address, str(path), target, batch_size)

        result = _run(cfg, run, "import-forestnet")
        typer.echo(f"chip store: {result['chips']}")
        if not result["skipped"]:
            typer.echo(f"{result['imported']} imported, {result['failed']} without images, "
                       f"{result['left_out']} left out (see the store's attributes)")

    _guard(body)


@app.command()
def train(config: ConfigOpt = None, dask_address: AddressOpt = None) -> None:
    """Train the ForestNet model; writes a model bundle."""

    def body() -> None:
        from flows.train import train_flow

        result = _run(_load(config, dask_address), train_flow, "train")
        typer.echo(f"model bundle: {result['bundle']}")

    _guard(body)


@app.command("map")
def map_(
    province: Annotated[list[str] | None, typer.Option(help="province name(s), repeatable")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every province + indonesia.gpkg")] = False,
    aoi: Annotated[Path | None, typer.Option(help="vector file: map this area instead")] = None,
    years: Annotated[str | None, typer.Option(help="loss years, e.g. 2015-2020")] = None,
    out: Annotated[Path | None, typer.Option(help="GeoPackage folder")] = None,
    driver_raster: Annotated[bool, typer.Option(help="also write a driver COG")] = False,
    dominant_grid: Annotated[bool, typer.Option(help="also write the 1 km grid")] = False,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Map loss drivers by province (or --all, or --aoi); one GeoPackage per province."""

    def body() -> None:
        from flows.mapping import mapping_flow

        cfg = _load(config, dask_address)
        if sum([bool(province), all_, aoi is not None]) > 1:
            raise ConfigError("choose one of --province, --all and --aoi")
        update: dict = {}
        if province:
            update["provinces"] = province
        if all_:
            update["all"] = True
        if aoi is not None:
            update["aoi"] = require_file(aoi, "--aoi", "map").resolve()
        if years:
            update["years"] = parse_years(years)
        if out is not None:
            update["out"] = out
        if driver_raster:
            update["driver_raster"] = True
        if dominant_grid:
            update["dominant_grid"] = True
        if update:
            merged = {**cfg.mapping.model_dump(), **update}
            try:
                mapping = type(cfg.mapping).model_validate(merged)
            except ValidationError as exc:
                raise ConfigError(f"map options: {format_validation_error(exc)}") from None
            cfg = cfg.model_copy(update={"mapping": mapping})
        result = _run(cfg, mapping_flow, "map")
        for gpkg in result["geopackages"]:
            typer.echo(f"GeoPackage: {gpkg}")
        tiles, summary = result["tiles"], result["summary"]
        typer.echo(f"tiles: {tiles['tiles']} ({tiles['done']} predicted, {tiles['skipped']} "
                   f"skipped, {len(tiles['failed'])} failed) in {result['seconds']:.0f} s")
        events = summary["events"]
        typer.echo(f"events: {events['mapped']} mapped, {events['no_imagery']} without imagery")
        for name, row in summary["drivers"].items():
            typer.echo(f"  {name}: {row['n_events']} events, {row['area_ha']:.1f} ha "
                       f"({100 * row['share']:.0f}%)")
        if result["tiles"]["failed"]:
            raise typer.Exit(1)

    _guard(body)


@app.command()
def demo(config: ConfigOpt = DEFAULT_DEMO_CONFIG, dask_address: AddressOpt = None) -> None:
    """Run the whole chain on the sample world and print where the GeoPackage is."""

    def body() -> None:
        from flows.demo import demo_flow

        result = _run(_load(config, dask_address), demo_flow, "demo")
        for gpkg in result["geopackages"]:
            typer.echo(f"GeoPackage: {gpkg}")

    _guard(body)


@app.command()
def evaluate(
    bundle: Annotated[Path | None, typer.Option(help="model bundle (default: workdir)")] = None,
    chips: Annotated[Path | None, typer.Option(help="chip store (default: workdir)")] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    out: Annotated[Path | None, typer.Option(help="report folder (default: "
                                             "<workdir>/evaluation)")] = None,
    baseline: Annotated[bool, typer.Option(help="also fit the random-forest baselines")] = True,
    seed: Annotated[int, typer.Option(help="random seed of the baselines")] = 0,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Evaluate a model bundle on a split, with random-forest baselines; writes report.md."""

    def body() -> None:
        from flows.evaluate import check_evaluation_inputs, evaluate_flow

        cfg = _load(config, dask_address)
        bundle_path, chips_path = bundle or cfg.bundle_path, chips or cfg.chips_path
        out_dir = out or cfg.workdir / "evaluation"
        check_evaluation_inputs(bundle_path, chips_path, split, baseline)  # before the cluster

        def run(_: PipelineConfig, address: str) -> dict:
            return evaluate_flow(address, str(bundle_path), str(chips_path), split,
                                 str(out_dir), baseline, seed)

        result = _run(cfg, run, "evaluate")
        typer.echo(f"accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f} "
                   f"on {result['n']} {split} events")
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

        from flows import deploy as jobs

        if serve and work_pool:
            raise ConfigError("--serve and --work-pool exclude each other: --serve runs the "
                              "jobs here, a work pool runs them on its workers")
        _load(config, None)  # a bad config fails here, in one line, before anything registers
        # Absolute: served and pooled runs may start in another working directory.
        plan = jobs.deployment_plan(str(Path(config).resolve()), province, cron)
        api = jobs.api_url()
        if work_pool:
            if not api:
                raise ConfigError("--work-pool needs a Prefect server: start one with "
                                  "`prefect server start` and set PREFECT_API_URL")
            jobs.deploy_plan(plan, work_pool)
            for job in plan:
                typer.echo(f"deployment: {job.full_name} (work pool {work_pool})")
            console.print(f"start a worker: prefect worker start --pool {work_pool}",
                          highlight=False, soft_wrap=True)
        elif serve:
            if not api:
                console.print("PREFECT_API_URL is not set: serving against Prefect's temporary "
                              "local API (no UI); see README, Operating it", highlight=False,
                              soft_wrap=True)
            jobs.serve_plan(plan)
        else:
            entries = jobs.as_prefect_yaml(plan, jobs.DEFAULT_WORK_POOL)
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
        from forestnet_model.pretrain import pretrain_encoder

        cfg = _load(config, None)
        preflight(cfg, "train")
        target = out or cfg.model_dir / "pretrained-encoder.safetensors"
        try:
            path = pretrain_encoder(cfg.chips_path, target, cfg.model, cfg.train)
        except ValueError as exc:  # no land-cover band, no training events: one line
            raise ConfigError(str(exc)) from None
        typer.echo(f"encoder weights: {path}")

    _guard(body)


def main() -> None:  # pragma: no cover - console entry point
    app()
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    app()
