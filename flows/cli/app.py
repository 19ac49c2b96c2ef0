"""The ``forestnet`` command line: thin wrappers that load a config and run one flow.

The data commands live here; ``flows/cli/ops.py`` adds evaluate, deploy and pretrain, and
``flows/cli/support.py`` holds what they share.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.search_options import (
    AoiOpt,
    BboxOpt,
    CollectionOpt,
    DatetimeOpt,
    MaxCloudOpt,
    ProvinceOpt,
    StacApiOpt,
)
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
from flows.config.overrides import with_job_area, with_mapping, with_stac_search
from flows.config.schema import (
    ConfigError,
    PipelineConfig,
    parse_years,
    require_file,
)


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

        result = _run(cfg, generate)
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
    stac_api: StacApiOpt = None,
    collection: CollectionOpt = None,
    province: ProvinceOpt = None,
    aoi: AoiOpt = None,
    bbox: BboxOpt = None,
    datetime: DatetimeOpt = None,
    max_cloud: MaxCloudOpt = None,
    config: ConfigOpt = None,
    dask_address: AddressOpt = None,
) -> None:
    """Ingest Landsat 8/9 Collection 2 L1/L2 products into the Zarr scene store: local
    products, or those a STAC API search finds (only the part the area needs is read).

    Exits 1 when any scene failed (each failure is listed on stderr), 2 on bad input.
    """

    def body() -> None:
        from flows.ingest import check_inputs, ingest_flow

        cfg = with_job_area(_load(config, dask_address), province, aoi)
        cfg = with_stac_search(cfg, stac_api, collection, bbox, datetime, max_cloud)
        if sources:
            # Validate (not just copy): local paths become Paths, URLs stay strings.
            inputs = type(cfg.inputs).model_validate(
                {**cfg.inputs.model_dump(), "landsat": list(sources)}
            )
            cfg = cfg.model_copy(update={"inputs": inputs})
        elif stac_api:  # a search on the command line replaces the config's local products
            cfg = cfg.model_copy(update={"inputs": cfg.inputs.model_copy(
                update={"landsat": []})})
        if store:
            cfg = cfg.model_copy(update={"scenes": store})
        result = _run(cfg, ingest_flow, check_inputs)
        typer.echo(
            f"scene store: {result['store']} ({result['ingested']} ingested, "
            f"{result['skipped']} skipped, {result['failed']} failed)"
        )
        if result["bytes_full"]:
            typer.echo(f"read {result['bytes_read'] / 1e6:.1f} MB of the products' "
                       f"{result['bytes_full'] / 1e6:.1f} MB "
                       f"({result['bytes_read'] / result['bytes_full']:.1%})")
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
        from flows.training_set import check_inputs, training_set_flow

        result = _run(_load(config, dask_address), training_set_flow, check_inputs)
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
        from pipeline.training_set.release_reader import ReleaseReader

        cfg = _load(config, dask_address)
        target = out or cfg.chips_path
        with ReleaseReader(path):  # a wrong path fails here, before the cluster starts
            pass

        def run(c: PipelineConfig, address: str) -> dict:
            return import_forestnet_flow(c, address, str(path), target, batch_size)

        result = _run(cfg, run)
        typer.echo(f"chip store: {result['chips']}")
        if not result["skipped"]:
            typer.echo(f"{result['imported']} imported, {result['failed']} without images, "
                       f"{result['left_out']} left out (see the store's attributes)")

    _guard(body)


@app.command()
def train(config: ConfigOpt = None, dask_address: AddressOpt = None) -> None:
    """Train the ForestNet model; writes a model bundle."""

    def body() -> None:
        from flows.train import check_inputs, train_flow

        result = _run(_load(config, dask_address), train_flow, check_inputs)
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
        from flows.mapping import check_inputs, mapping_flow
        from flows.runtime.model_preload import preload_model

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
        result = _run(with_mapping(cfg, update), mapping_flow, check_inputs,
                      preload=lambda client, c: preload_model(client, c.bundle_path,
                                                              c.mapping.cpu_runtime))
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
        from flows.demo import check_inputs, demo_flow

        result = _run(_load(config, dask_address), demo_flow, check_inputs)
        for gpkg in result["geopackages"]:
            typer.echo(f"GeoPackage: {gpkg}")

    _guard(body)


# Registered after the data commands, so `forestnet --help` lists those first.
from flows.cli import area, ops, planning, sample_design, weights  # noqa: E402,F401


def main() -> None:  # pragma: no cover - console entry point
    app()
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    app()
