"""``forestnet sample-design``: a stratified reference sample over driver maps, to label in
QGIS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.support import _guard, app


@app.command("sample-design")
def sample_design(
    maps: Annotated[list[Path], typer.Option("--map", help="driver map GeoPackage (repeat "
                                             "for several)")],
    n: Annotated[int, typer.Option("--n", help="total sample size (points to label)")],
    out: Annotated[Path, typer.Option("--out", help="reference sample GeoPackage to write")],
    allocation: Annotated[str, typer.Option(help="min50, equal or proportional")] = "min50",
    strata: Annotated[str, typer.Option(help="driver, or driver,province")] = "driver",
    seed: Annotated[int, typer.Option(help="random seed: the same seed, the same sample")] = 0,
) -> None:
    """Draw a stratified random sample of loss pixels over driver maps (Olofsson et al.
    2014), written as a GeoPackage whose points open in QGIS with a labelling form."""

    def body() -> None:
        from pipeline.accuracy.reference_gpkg import write_sample_design

        design = write_sample_design(maps, out, n, strata=strata, allocation=allocation,
                                     seed=seed)
        typer.echo(f"reference sample: {design.path}")
        typer.echo(f"{design.n_points} points in {len(design.strata)} strata "
                   f"({strata}, {allocation} allocation, seed {seed})")
        for row in design.strata.itertuples(index=False):
            typer.echo(f"  {row.stratum}: {row.size_ha:,.1f} ha, n = {row.n}")

    _guard(body)
