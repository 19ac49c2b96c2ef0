"""Forest-loss events: from a GFC ``lossyear`` raster or a ForestNet-schema CSV.

An event is one connected loss region of one year (8-connectivity), as a polygon in
EPSG:4326. ``events.parquet`` (GeoParquet) has the columns of :data:`EVENT_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from scipy import ndimage
from shapely.geometry import Point, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.atomic import atomic_output
from pipeline.drivers import merge_label
from pipeline.grid import utm_epsg

EVENT_COLUMNS = [
    "event_id", "loss_year", "label", "merged_label", "split", "source", "n_pixels", "geometry",
]
FORESTNET_CSV_COLUMNS = ["label", "merged_label", "latitude", "longitude", "year", "example_path"]
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class EventInputError(ValueError):
    """Event input that cannot be used; the message names the file and the reason."""


def event_id(lat: float, lon: float, year: int) -> str:
    """Stable id from the event's anchor point and loss year."""
    return f"{year}_{lat:+.5f}_{lon:+.5f}"


def read_forestnet_csvs(csvs: Mapping[str, Path]) -> pd.DataFrame:
    """Read release-schema CSVs keyed by split; validate columns and labels."""
    frames = []
    for split, path in csvs.items():
        try:
            df = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise EventInputError(f"{path}: cannot read CSV ({exc})") from exc
        missing = [c for c in FORESTNET_CSV_COLUMNS if c not in df.columns]
        if missing:
            raise EventInputError(f"{path}: missing columns {missing}")
        for i, (label, merged) in enumerate(zip(df["label"], df["merged_label"], strict=True)):
            try:
                if merge_label(str(label)) != merge_label(str(merged)):
                    raise ValueError(f"label {label!r} does not merge into {merged!r}")
            except ValueError as exc:
                raise EventInputError(f"{path}, row {i + 2}: {exc}") from None
        df = df.assign(split=split, merged_label=[merge_label(str(m)) for m in df["merged_label"]])
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _check_lossyear(src: rasterio.DatasetReader, path: Path) -> None:
    if src.dtypes[0] != "uint8":
        raise EventInputError(f"{path}: lossyear dtype {src.dtypes[0]}, expected uint8 (GFC)")
    if src.crs is None:
        raise EventInputError(f"{path}: lossyear raster has no CRS")


def loss_regions(
    lossyear: Path,
    bounds: tuple[float, float, float, float],
    years: Iterable[int],
    min_pixels: int = 6,
) -> gpd.GeoDataFrame:
    """Connected loss regions per year inside ``bounds`` (lon/lat) as polygons.

    Components smaller than ``min_pixels`` (GFC speckle) are dropped. The window is
    clipped to the raster; callers tile large areas.
    """
    lossyear = Path(lossyear)
    years = sorted(set(int(y) for y in years))
    records: list[dict] = []
    with rasterio.open(lossyear) as src:
        _check_lossyear(src, lossyear)
        window = _window(src, bounds)
        if window is None:
            return _empty()
        data = src.read(1, window=window)
        transform = src.window_transform(window)
    for year in years:
        code = year - 2000
        labels, n = ndimage.label(data == code, structure=EIGHT_CONNECTED)
        if n == 0:
            continue
        counts = np.bincount(labels.ravel(), minlength=n + 1)
        keep = np.flatnonzero(counts >= min_pixels)
        keep = keep[keep > 0]
        if keep.size == 0:
            continue
        kept = np.where(np.isin(labels, keep), labels, 0).astype(np.int32)
        polygons: dict[int, list] = {}
        for geom, value in rasterio.features.shapes(
            kept, mask=kept > 0, transform=transform, connectivity=8
        ):
            polygons.setdefault(int(value), []).append(shape(geom))
        for value, parts in polygons.items():
            # Snap away the float noise of the window's transform (and order the parts), so
            # the same pixels read through any window give the same geometry, anchor and id.
            geom = shapely.normalize(shapely.set_precision(unary_union(parts).buffer(0), 1e-9))
            anchor = geom.representative_point()
            records.append({
                "event_id": event_id(anchor.y, anchor.x, year), "loss_year": year,
                "label": "", "merged_label": "", "split": "", "source": "gfc",
                "n_pixels": int(counts[value]), "geometry": geom,
            })
    if not records:
        return _empty()
    out = gpd.GeoDataFrame(records, geometry="geometry", crs="EPSG:4326")
    return out.sort_values("event_id").reset_index(drop=True)


def events_from_forestnet_csvs(
    csvs: Mapping[str, Path], lossyear: Path, search_m: float = 2500.0, min_pixels: int = 6
) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Labelled events: each CSV point gets the loss region of its year that holds it.

    Returns the events and a list of problems (one per point with no loss region of its
    year within ``search_m``), so that nothing is dropped silently.
    """
    table = read_forestnet_csvs(csvs)
    records: list[dict] = []
    problems: list[str] = []
    deg = search_m / 111_000.0
    for row in table.itertuples(index=False):
        lat, lon, year = float(row.latitude), float(row.longitude), int(row.year)
        regions = loss_regions(
            lossyear, (lon - deg, lat - deg, lon + deg, lat + deg), [year], min_pixels
        )
        point = Point(lon, lat)
        if regions.empty:
            problems.append(f"{row.example_path}: no {year} loss within {search_m:.0f} m")
            continue
        # The region holding the point, else the nearest one (measured in metres).
        utm = f"EPSG:{utm_epsg(lon, lat)}"
        metres = regions.to_crs(utm).distance(gpd.GeoSeries([point], crs=4326).to_crs(utm).iloc[0])
        best = regions.loc[metres.idxmin()]
        records.append({
            "event_id": event_id(lat, lon, year), "loss_year": year, "label": str(row.label),
            "merged_label": str(row.merged_label), "split": row.split, "source": "forestnet_csv",
            "n_pixels": int(best["n_pixels"]), "geometry": best.geometry,
        })
    if not records:
        return _empty(), problems
    events = gpd.GeoDataFrame(records, geometry="geometry", crs="EPSG:4326")
    return events.sort_values("event_id").reset_index(drop=True), problems


def _window(src: rasterio.DatasetReader, bounds) -> rasterio.windows.Window | None:
    left, bottom, right, top = bounds
    sb = src.bounds
    clipped = (max(left, sb.left), max(bottom, sb.bottom), min(right, sb.right), min(top, sb.top))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        return None
    window = rasterio.windows.from_bounds(*clipped, transform=src.transform)
    window = window.round_offsets().round_lengths()
    return window.intersection(rasterio.windows.Window(0, 0, src.width, src.height))


def _empty() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {c: [] for c in EVENT_COLUMNS if c != "geometry"}, geometry=[], crs="EPSG:4326"
    )


def clip_to_area(events: gpd.GeoDataFrame, area: BaseGeometry) -> gpd.GeoDataFrame:
    """Events whose anchor (representative point) lies inside ``area``: one owner per event."""
    anchors = events.geometry.representative_point()
    return events[anchors.within(area)].reset_index(drop=True)


def write_events(events: gpd.GeoDataFrame, path: Path) -> Path:
    """Write ``events.parquet`` atomically."""
    with atomic_output(Path(path)) as tmp:
        events.to_parquet(tmp, index=False)
    return Path(path)


def read_events(path: Path) -> gpd.GeoDataFrame:
    """Read ``events.parquet``."""
    return gpd.read_parquet(path)


def bbox_polygon(bounds: tuple[float, float, float, float]) -> BaseGeometry:
    """A lon/lat bounding box as a polygon."""
    return box(*bounds)
