"""The options that name a job's area and its STAC search, shared by ``ingest`` and ``plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StacApiOpt = Annotated[str | None, typer.Option("--stac-api", help="search this STAC API")]
CollectionOpt = Annotated[list[str] | None, typer.Option(
    "--collection", help="STAC collection, repeatable (Level-1 and Level-2 pair up)")]
ProvinceOpt = Annotated[list[str] | None, typer.Option(help="province name(s), repeatable")]
AoiOpt = Annotated[Path | None, typer.Option(help="vector file of the area instead")]
BboxOpt = Annotated[str | None, typer.Option(help="W,S,E,N in degrees instead")]
DatetimeOpt = Annotated[str | None, typer.Option(
    "--datetime", help="START/END; default: the mapping years +/- chips.years_window")]
MaxCloudOpt = Annotated[float | None, typer.Option(help="largest scene cloud cover, %")]
YearsOpt = Annotated[str | None, typer.Option(help="loss years, e.g. 2013-2016")]
