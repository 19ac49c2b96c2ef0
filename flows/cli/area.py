"""``forestnet area``: area by class and accuracy, with confidence intervals, from a labelled
reference sample."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.support import _guard, app
from flows.config.schema import ConfigError


@app.command("area")
def area(
    sample: Annotated[Path, typer.Option(
        "--sample", help="labelled sample: the GeoPackage of forestnet sample-design, or a "
        "CSV with columns stratum,map_class,reference_class")],
    out: Annotated[Path, typer.Option("--out", help="folder for the tables, chart and "
                                      "report.md")],
    strata: Annotated[Path | None, typer.Option(
        "--strata", help="strata table of a CSV sample: CSV with columns stratum,size "
        "(size in area units, e.g. ha; or size_ha)")] = None,
    map_: Annotated[list[Path] | None, typer.Option(
        "--map", help="driver-map GeoPackage to add the tables driver_area_estimates and "
        "driver_accuracy to (repeatable)")] = None,
    drop_unlabelled: Annotated[bool, typer.Option(
        "--drop-unlabelled", help="leave out points without a reference_class (the report "
        "says how many) instead of stopping")] = False,
) -> None:
    """Area by class and user's, producer's and overall accuracy, with standard errors and
    95% confidence intervals, from a labelled stratified reference sample (Olofsson et al.
    2014; Stehman 2014: strata may differ from the map classes).

    Writes area_estimates.csv, accuracy.csv, error_matrix.csv, area_estimates.png, report.md.

    Every input is checked before anything is written; bad input writes nothing.
    """

    def body() -> None:
        from pipeline.accuracy.area_estimates import Z95, estimate
        from pipeline.accuracy.area_outputs import (
            add_tables_to_geopackage,
            check_geopackage,
            class_sentences,
            write_area_outputs,
        )
        from pipeline.accuracy.labelled_sample import read_labelled_sample

        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder for the outputs")
        labelled = read_labelled_sample(sample, strata, drop_unlabelled=drop_unlabelled)
        maps = list(dict.fromkeys(map_ or []))
        for gpkg in maps:
            check_geopackage(gpkg)
        result = estimate(labelled.sample, labelled.strata)
        paths = write_area_outputs(result, labelled, out)
        for gpkg in maps:
            add_tables_to_geopackage(gpkg, result)
            typer.echo(f"tables added: {gpkg}")
        typer.echo(f"outputs in {out}: {', '.join(paths)}")
        if labelled.dropped_unlabelled:
            typer.echo(f"{labelled.dropped_unlabelled} unlabelled points left out")
        for line in class_sentences(result, labelled.unit):
            typer.echo(f"  {line}")
        overall, se = result.overall
        typer.echo(f"  overall accuracy: {overall:.3f} ± {Z95 * se:.3f} (95% CI)")

    _guard(body)
