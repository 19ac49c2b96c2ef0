"""A mapping run in numbers: events and loss area per driver, province and year, tiles, time.

The summary is a plain JSON-safe dict, so the flow can write it next to the maps, return it
from a Prefect task and render it as a markdown artifact without any conversion step.
Areas come from ``area_ha`` (equal-area, see :func:`pipeline.export.geopackage.add_area_ha`); events
without imagery (``driver_code == 0``) are counted but kept out of the driver areas,
exactly as they are kept out of the GeoPackage.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.core.drivers import DRIVER_CLASSES, has_driver
from pipeline.export.geopackage import add_area_ha, driver_area_by_year

#: Version tag of the summary layout; bump it when a key changes meaning.
SUMMARY_SCHEMA = "forestnet-run-summary/1"

_REQUIRED = ("province", "loss_year", "driver", "driver_code", "geometry")


def summarise_run(
    features: gpd.GeoDataFrame,
    tiles_done: int,
    tiles_skipped: int,
    tiles_failed: int,
    seconds: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarise one mapping run as a JSON-safe dict.

    Keys: ``events`` (total, mapped, no_imagery), ``area_ha`` (mapped total and the area of
    events without imagery), ``drivers`` (per class, in model order: code, n_events,
    area_ha, share of the mapped area), ``by_province_year`` (the GeoPackage's
    ``driver_area_by_year`` rows), ``tiles``, ``seconds`` and ``extra`` (caller's own
    fields, e.g. run_id; numpy scalars, paths and dates are converted).
    """
    missing = [c for c in _REQUIRED if c not in features.columns]
    if missing:
        raise ValueError(f"features lack columns needed for the summary: {', '.join(missing)}")
    tiles = {"done": tiles_done, "skipped": tiles_skipped, "failed": tiles_failed}
    for name, count in tiles.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ValueError(f"tiles_{name} must be a non-negative integer, not {count!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a finite, non-negative number, not {seconds!r}")

    frame = _with_area(features)
    mapped_mask = has_driver(frame["driver_code"])
    mapped, no_imagery = frame.loc[mapped_mask], frame.loc[~mapped_mask]
    mapped_total = float(mapped["area_ha"].sum())
    by_driver = mapped.groupby("driver")["area_ha"].agg(["sum", "size"])
    drivers = {}
    for code, name in enumerate(DRIVER_CLASSES, start=1):
        area = float(by_driver["sum"].get(name, 0.0))
        drivers[name] = {
            "code": code,
            "n_events": int(by_driver["size"].get(name, 0)),
            "area_ha": area,
            "share": area / mapped_total if mapped_total > 0 else 0.0,
        }
    table = driver_area_by_year(mapped)
    return {
        "schema": SUMMARY_SCHEMA,
        "events": {"total": len(frame), "mapped": len(mapped), "no_imagery": len(no_imagery)},
        "area_ha": {"mapped": mapped_total, "no_imagery": float(no_imagery["area_ha"].sum())},
        "drivers": drivers,
        "by_province_year": [
            {
                "province": str(row.province),
                "year": int(row.year),
                "driver": str(row.driver),
                "area_ha": float(row.area_ha),
                "n_events": int(row.n_events),
            }
            for row in table.itertuples(index=False)
        ],
        "tiles": {**{k: int(v) for k, v in tiles.items()}, "total": int(sum(tiles.values()))},
        "seconds": float(seconds),
        "extra": _json_safe(dict(extra or {})),
    }



def render_summary_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown for a Prefect artifact: headline facts, a driver table, a province x year table."""
    events, tiles, area = summary["events"], summary["tiles"], summary["area_ha"]
    lines = [
        "### Forest loss driver mapping run",
        "",
        "| | |",
        "|---|---|",
        f"| Events mapped | {events['mapped']:,} of {events['total']:,} "
        f"({events['no_imagery']:,} without imagery, {area['no_imagery']:,.1f} ha) |",
        f"| Loss area mapped | {area['mapped']:,.1f} ha |",
        f"| Tiles | {tiles['done']:,} done, {tiles['skipped']:,} skipped (reused), "
        f"{tiles['failed']:,} failed |",
        f"| Time | {_duration(summary['seconds'])} |",
    ]
    lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in summary["extra"].items()]
    lines += ["", "#### Area by driver", "", "| Driver | Events | Area (ha) | Share |",
              "|---|--:|--:|--:|"]
    for name, row in summary["drivers"].items():
        lines.append(
            f"| {_cell(name)} | {row['n_events']:,} | {row['area_ha']:,.1f} "
            f"| {100 * row['share']:.1f} % |"
        )
    rows = summary["by_province_year"]
    if rows:
        names = list(summary["drivers"])
        pivot = (
            pd.DataFrame(rows)
            .pivot_table(index=["province", "year"], columns="driver", values="area_ha",
                         aggfunc="sum", fill_value=0.0)
            .reindex(columns=names, fill_value=0.0)
        )
        lines += ["", "#### Area by province and year (ha)", "",
                  "| Province | Year | " + " | ".join(map(_cell, names)) + " | Total |",
                  "|---|---|" + "--:|" * (len(names) + 1)]
        for (province, year), values in pivot.iterrows():
            cells = " | ".join(f"{v:,.1f}" for v in values)
            lines.append(f"| {_cell(province)} | {year} | {cells} | {values.sum():,.1f} |")
    return "\n".join(lines) + "\n"


def _with_area(features: gpd.GeoDataFrame) -> pd.DataFrame:
    """``features`` with ``area_ha`` filled in (equal-area) wherever it is missing."""
    if "area_ha" not in features.columns:
        return add_area_ha(features)
    missing = features["area_ha"].isna()
    if not missing.any():
        return features
    # Parts from the map batches carry no area; measure only those rows, keep the rest.
    out = features.copy()
    out.loc[missing, "area_ha"] = add_area_ha(features.loc[missing])["area_ha"]
    return out


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON types, so the summary equals its own JSON round trip."""
    return json.loads(json.dumps(value, default=_json_default, allow_nan=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(
        f"extra holds a {type(value).__name__}, which is not JSON; pass str, numbers, "
        "lists or dicts"
    )


def _cell(value: Any) -> str:
    """Text safe inside a markdown table cell (pipes escaped, no line breaks)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
