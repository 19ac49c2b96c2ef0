"""The ``forestnet`` command line: thin wrappers that load a config and run one flow."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flows.config import ConfigError, PipelineConfig, load_config, preflight

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
    from pipeline.provinces import UnknownProvinceError
    from pipeline.release_reader import ReleaseError
    from pipeline.reproject import RasterInputError
    from pipeline.splits import SplitError

    return (
        ConfigError,
        BundleError,
        EventInputError,
        SceneInputError,
        MTLError,
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


def _guard(body: Callable[[], None]) -> None:
    """Known input problems become one line on stderr and exit code 2, no traceback."""
    try:
        body()
    except _user_errors() as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[_StderrHandler()],
        force=True,  # a second in-process invocation (CliRunner) replaces the first's handler
    )
    _STATE["verbose"] = verbose


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
        for name in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)


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
    province: Annotated[list[str] | None, typer.Option(help="province name(s)")] = None,
    years: Annotated[str | None, typer.Option(help="loss years, e.g. 2013-2016")] = None,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Map loss drivers for provinces; writes one GeoPackage per province."""

    def body() -> None:
        from flows.mapping import mapping_flow

        cfg = _load(config, dask_address)
        update = {}
        if province:
            update["provinces"] = province
        if years:
            try:
                first, _, last = years.partition("-")
                update["years"] = (int(first), int(last or first))
            except ValueError:
                raise ConfigError(
                    f"--years {years!r}: expected FIRST-LAST, e.g. 2013-2016"
                ) from None
        if update:
            merged = {**cfg.mapping.model_dump(), **update}
            cfg = cfg.model_copy(update={"mapping": type(cfg.mapping).model_validate(merged)})
        result = _run(cfg, mapping_flow, "map")
        for gpkg in result["geopackages"]:
            typer.echo(f"GeoPackage: {gpkg}")

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


def main() -> None:  # pragma: no cover - console entry point
    app()
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    app()
