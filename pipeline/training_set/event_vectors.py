"""Events from a user's vector file (GeoPackage, GeoParquet or Shapefile).

Each polygon feature is one event. The loss year, and optionally the fine label and the
split, come from columns the config names. A feature that cannot be an event (no or empty
geometry, not a polygon, invalid geometry, bad year/label/split, too small) is refused
with a reason naming the file and the feature; the other features are kept.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.core.drivers import merge_label
from pipeline.training_set.events import EventInputError, area_ha, event_id, finish_events

PARQUET_SUFFIXES = (".parquet", ".geoparquet")
SPLIT_NAMES = ("train", "val", "test")
YEAR_RANGE = (2001, 2035)


def read_vector(path: Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read a vector file indexed by feature id (FID; row number for GeoParquet)."""
    path = Path(path)
    if not path.exists():
        raise EventInputError(f"{path}: vector file not found")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = gpd.read_parquet(path).reset_index(drop=True)
        else:
            frame = gpd.read_file(path, layer=layer, fid_as_index=True)
    except Exception as exc:  # pyogrio and pyarrow raise many types for unreadable files
        raise EventInputError(f"{path}: cannot read vector file ({exc})") from exc
    if frame.crs is None:
        raise EventInputError(f"{path}: vector file has no CRS; set one (e.g. EPSG:4326)")
    return frame


def events_from_vector(
    path: Path,
    year_column: str = "loss_year",
    label_column: str | None = None,
    split_column: str | None = None,
    layer: str | None = None,
    min_ha: float = 0.0,
) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Events (``events.parquet`` columns, source ``vector``) and the refused features."""
    path = Path(path)
    frame = read_vector(path, layer)
    wanted = [c for c in (year_column, label_column, split_column) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        have = ", ".join(c for c in frame.columns if c != frame.geometry.name)
        raise EventInputError(f"{path}: no column {missing}; columns are: {have}")
    what = "row" if path.suffix.lower() in PARQUET_SUFFIXES else "feature"
    # Reasons are checked in the file's own CRS, before any reprojection can hide them.
    reasons = {fid: _geometry_problem(g) for fid, g in frame.geometry.items()}
    good = frame[[r is None for r in reasons.values()]]
    lonlat = good.geometry.to_crs("EPSG:4326") if not good.empty else good.geometry
    hectares = dict(zip(good.index, area_ha(good.geometry), strict=True))
    records, problems, seen = [], [], {}
    for fid, row in frame.iterrows():
        name = f"{path}, {what} {fid}"
        reason = reasons[fid] or _attribute_problem(row, year_column, label_column, split_column)
        if reason is None and hectares[fid] < min_ha:
            reason = f"area {hectares[fid]:.3f} ha is below min_event_ha {min_ha}"
        if reason is not None:
            problems.append(f"{name}: {reason}")
            continue
        geom = lonlat.loc[fid]
        year = int(row[year_column])
        anchor = geom.representative_point()
        eid = event_id(anchor.y, anchor.x, year)
        if eid in seen:
            problems.append(f"{name}: same polygon and year as {what} {seen[eid]}")
            continue
        seen[eid] = fid
        label = str(row[label_column]).strip() if label_column else ""
        records.append({
            "event_id": eid, "loss_year": year, "label": label,
            "merged_label": merge_label(label) if label else "",
            "split": str(row[split_column]).strip().lower() if split_column else "",
            "source": "vector", "n_pixels": 0, "geometry": geom,
        })
    return finish_events(records), problems


def _geometry_problem(geom: BaseGeometry | None) -> str | None:
    if geom is None:
        return "no geometry"
    if geom.is_empty:
        return "empty geometry"
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        return f"{geom.geom_type} geometry; events need polygons"
    if not geom.is_valid:
        return f"invalid geometry ({shapely.is_valid_reason(geom)})"
    return None


def _attribute_problem(
    row: pd.Series, year_column: str, label_column: str | None, split_column: str | None
) -> str | None:
    year = row[year_column]
    try:
        ok = float(year).is_integer() and YEAR_RANGE[0] <= int(year) <= YEAR_RANGE[1]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return f"{year_column} {year!r} is not a loss year in {YEAR_RANGE[0]}-{YEAR_RANGE[1]}"
    if label_column:
        label = row[label_column]
        if pd.isna(label) or not str(label).strip():
            return f"no label in column {label_column!r}"
        try:
            merge_label(str(label).strip())
        except ValueError as exc:
            return str(exc)
    if split_column:
        split = row[split_column]
        if pd.isna(split) or str(split).strip().lower() not in SPLIT_NAMES:
            return f"{split_column} {split!r} is not one of {', '.join(SPLIT_NAMES)}"
    return None
