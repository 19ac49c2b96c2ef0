"""``forestnet plan``: what a map job would read and compute, printed before anything runs."""

from __future__ import annotations

import json
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
    YearsOpt,
)
from flows.cli.support import ConfigOpt, _guard, _load, app
from flows.config.overrides import with_job_area, with_stac_search
from flows.config.schema import parse_years


@app.command()
def plan(
    province: ProvinceOpt = None,
    aoi: AoiOpt = None,
    years: YearsOpt = None,
    stac_api: StacApiOpt = None,
    collection: CollectionOpt = None,
    bbox: BboxOpt = None,
    datetime: DatetimeOpt = None,
    max_cloud: MaxCloudOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print what `map` over the area and years would do: the products (per path/row and
    year), the bytes to read, the tiles with loss, CPU core-hours and GPU-minutes."""

    def body() -> None:
        from flows.plan import plan_job, plan_text

        cfg = with_job_area(_load(config, None), province, aoi,
                            parse_years(years) if years else None)
        cfg = with_stac_search(cfg, stac_api, collection, bbox, datetime, max_cloud)
        result = plan_job(cfg)
        typer.echo(json.dumps(result, indent=2) if as_json else plan_text(result))

    _guard(body)
