"""Forest-loss events: from a GFC ``lossyear`` raster or a ForestNet-schema CSV.

An event is one connected loss region of one year (8-connectivity), as a polygon in
EPSG:4326; or, with ``group="tile"``, all loss of one year inside one tile of
:data:`TILE_GRID` (ForestNet grouped a 5 km tile's loss into one example). Areas are
measured in ``EQUAL_AREA_CRS``. ``events.parquet`` (GeoParquet) has the columns of
:data:`EVENT_COLUMNS`. Vector-file events live in ``pipeline.training_set.event_vectors``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from odc.geo import CRS, XY
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox
from odc.geo.gridspec import GridSpec
from scipy import ndimage
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import merge_label
from pipeline.core.errors import ForestNetError
from pipeline.core.grid import EQUAL_AREA_CRS, pixel_centre_axes, utm_crs

EVENT_COLUMNS = [
    "event_id", "loss_year", "label", "merged_label", "split", "source", "n_pixels", "area_ha",
    "geometry",
]
FORESTNET_CSV_COLUMNS = ["label", "merged_label", "latitude", "longitude", "year", "example_path"]
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

#: Tile grouping: fixed 0.045 degree lon/lat tiles (about 5 km at the equator) with origin
#: (0, 0). Tile (ix, iy) covers lon [ix, ix + 1) * 0.045 and lat [iy, iy + 1) * 0.045; a
#: pixel belongs to the tile holding its centre. 0.045 degrees is exactly 180 GFC pixels, so
#: tile edges fall on GFC pixel edges and no GFC pixel straddles two tiles.
TILE_DEGREES = 0.045
TILE_GRID = GridSpec("EPSG:4326", tile_shape=(180, 180), resolution=TILE_DEGREES / 180,
                     origin=XY(0.0, 0.0))
Grouping = Literal["component", "tile"]


class EventInputError(ForestNetError, ValueError):
    """Event input that cannot be used; the message names the file and the reason."""


def event_id(lat: float, lon: float, year: int) -> str:
    """Stable id from the event's anchor point and loss year."""
    return f"{year}_{lat:+.5f}_{lon:+.5f}"


def read_forestnet_csvs(
    csvs: Mapping[str, Path | tuple[str, IO[bytes]]],
) -> pd.DataFrame:
    """Read release-schema CSVs keyed by split; validate columns and labels.

    A value is a path, or ``(name, binary file)`` for CSVs read from an archive.
    """
    frames = []
    for split, source in csvs.items():
        path, handle = source if isinstance(source, tuple) else (source, source)
        try:
            df = pd.read_csv(handle)
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


def check_lossyear(src: rasterio.DatasetReader, path: Path) -> None:
    if src.dtypes[0] != "uint8":
        raise EventInputError(f"{path}: lossyear dtype {src.dtypes[0]}, expected uint8 (GFC)")
    if src.crs is None:
        raise EventInputError(f"{path}: lossyear raster has no CRS")


def loss_regions(
    lossyear: Path,
    bounds: tuple[float, float, float, float],
    years: Iterable[int],
    min_pixels: int = 6,
    min_ha: float = 0.0,
    group: Grouping = "component",
) -> gpd.GeoDataFrame:
    """Loss events per year inside ``bounds`` (lon/lat) as polygons.

    Connected components smaller than ``min_pixels`` (GFC speckle) are dropped first; the
    rest become one event each (``group="component"``) or one event per tile and year
    (``group="tile"``, the window then grows to whole tiles). Events under ``min_ha``
    hectares (equal-area CRS) are dropped last. The window is clipped to the raster.
    """
    if group not in ("component", "tile"):
        raise ValueError(f"group must be 'component' or 'tile', not {group!r}")
    lossyear = Path(lossyear)
    years = sorted(set(int(y) for y in years))
    if group == "tile":
        bounds = snap_to_tiles(bounds)
    records: list[dict] = []
    with rasterio.open(lossyear) as src:
        check_lossyear(src, lossyear)
        window = lossyear_window(src, bounds)
        if window is None:
            return empty_events()
        data = src.read(1, window=window)
        grid = GeoBox(data.shape, src.window_transform(window), CRS(src.crs))
    for year in years:
        labels, n = ndimage.label(data == year - 2000, structure=EIGHT_CONNECTED)
        if n == 0:
            continue
        counts = np.bincount(labels.ravel(), minlength=n + 1)
        keep = np.flatnonzero(counts >= min_pixels)
        keep = keep[keep > 0]
        if keep.size == 0:
            continue
        kept = np.isin(labels, keep)
        groups = _tile_labels(kept, grid) if group == "tile" else np.where(kept, labels, 0)
        groups = groups.astype(np.int32)
        sizes = np.bincount(groups.ravel())
        for value, geom in label_polygons(groups, grid).items():
            anchor = geom.representative_point()
            records.append({
                "event_id": event_id(anchor.y, anchor.x, year), "loss_year": year,
                "label": "", "merged_label": "", "split": "", "source": "gfc",
                "n_pixels": int(sizes[value]), "geometry": geom,
            })
    return finish_events(records, min_ha)


def label_polygons(groups: np.ndarray, grid: GeoBox) -> dict[int, BaseGeometry]:
    """One (multi)polygon per non-zero value of ``groups`` (on ``grid``), in its CRS."""
    parts: dict[int, list] = {}
    for geom, value in rasterio.features.shapes(
        groups, mask=groups > 0, transform=grid.affine, connectivity=8
    ):
        parts.setdefault(int(value), []).append(shape(geom))
    # Snap away the float noise of the window's transform (and order the parts), so the
    # same pixels read through any window give the same geometry, anchor and id.
    return {
        value: shapely.normalize(shapely.set_precision(unary_union(p).buffer(0), 1e-9))
        for value, p in parts.items()
    }


def _tile_labels(mask: np.ndarray, grid: GeoBox) -> np.ndarray:
    """Label each ``mask`` pixel with its :data:`TILE_GRID` tile (1-based within the
    window), 0 elsewhere."""
    lon, lat = pixel_centre_axes(grid)
    tx = np.floor(lon / TILE_DEGREES).astype(np.int64)  # TILE_GRID's origin is (0, 0)
    ty = np.floor(lat / TILE_DEGREES).astype(np.int64)
    tx, ty = tx - tx.min(), ty - ty.min()
    ids = ty[:, None] * (int(tx.max()) + 1) + tx[None, :] + 1
    return np.where(mask, ids, 0)



def snap_to_tiles(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Grow lon/lat ``bounds`` to whole :data:`TILE_GRID` tiles."""
    boxes = [gb.boundingbox for _, gb in TILE_GRID.tiles(BoundingBox(*bounds, "EPSG:4326"))]
    return (min(b.left for b in boxes), min(b.bottom for b in boxes),
            max(b.right for b in boxes), max(b.top for b in boxes))


def area_ha(geometries: gpd.GeoSeries) -> np.ndarray:
    """Areas in hectares, measured in the project's equal-area CRS."""
    if geometries.empty:
        return np.zeros(0)
    return geometries.to_crs(f"EPSG:{EQUAL_AREA_CRS.epsg}").area.to_numpy() / 10_000.0


def finish_events(records: list[dict], min_ha: float = 0.0) -> gpd.GeoDataFrame:
    """Events from row dicts: ``area_ha`` added, those under ``min_ha`` dropped, sorted."""
    if not records:
        return empty_events()
    out = gpd.GeoDataFrame(records, geometry="geometry", crs="EPSG:4326")
    out["area_ha"] = area_ha(out.geometry)
    out = out[out["area_ha"] >= min_ha]
    if out.empty:
        return empty_events()
    extra = [c for c in out.columns if c not in EVENT_COLUMNS]
    return out[EVENT_COLUMNS + extra].sort_values("event_id").reset_index(drop=True)


def events_from_forestnet_csvs(
    csvs: Mapping[str, Path],
    lossyear: Path,
    search_m: float = 2500.0,
    min_pixels: int = 6,
    min_ha: float = 0.0,
    group: Grouping = "component",
) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Labelled events: each CSV point gets the loss event of its year that holds it.

    Returns the events and a list of problems (one per point with no loss event of its
    year within ``search_m``), so that nothing is dropped silently.
    """
    table = read_forestnet_csvs(csvs)
    records: list[dict] = []
    problems: list[str] = []
    deg = search_m / 111_000.0
    for row in table.itertuples(index=False):
        lat, lon, year = float(row.latitude), float(row.longitude), int(row.year)
        regions = loss_regions(
            lossyear, (lon - deg, lat - deg, lon + deg, lat + deg), [year], min_pixels, min_ha,
            group,
        )
        point = Point(lon, lat)
        if regions.empty:
            problems.append(f"{row.example_path}: no {year} loss within {search_m:.0f} m")
            continue
        # The region holding the point, else the nearest one (measured in metres).
        utm = utm_crs(lon).epsg
        metres = regions.to_crs(utm).distance(gpd.GeoSeries([point], crs=4326).to_crs(utm).iloc[0])
        best = regions.loc[metres.idxmin()]
        records.append({
            "event_id": event_id(lat, lon, year), "loss_year": year, "label": str(row.label),
            "merged_label": str(row.merged_label), "split": row.split, "source": "forestnet_csv",
            "n_pixels": int(best["n_pixels"]), "geometry": best.geometry,
        })
    return finish_events(records), problems


def lossyear_window(src: rasterio.DatasetReader, bounds) -> rasterio.windows.Window | None:
    left, bottom, right, top = bounds
    sb = src.bounds
    clipped = (max(left, sb.left), max(bottom, sb.bottom), min(right, sb.right), min(top, sb.top))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        return None
    window = rasterio.windows.from_bounds(*clipped, transform=src.transform)
    # Every pixel the bounds touch: floor the start and ceil the end (rounding offsets and
    # lengths separately can drop the last row or column).
    eps = 1e-6
    r0, c0 = math.floor(window.row_off + eps), math.floor(window.col_off + eps)
    r1 = math.ceil(window.row_off + window.height - eps)
    c1 = math.ceil(window.col_off + window.width - eps)
    window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
    return window.intersection(rasterio.windows.Window(0, 0, src.width, src.height))


def empty_events() -> gpd.GeoDataFrame:
    """An events table with every column and no rows."""
    return gpd.GeoDataFrame(
        {c: [] for c in EVENT_COLUMNS if c != "geometry"}, geometry=[], crs="EPSG:4326"
    )



def write_events(events: gpd.GeoDataFrame, path: Path) -> Path:
    """Write ``events.parquet`` atomically."""
    with atomic_output(Path(path)) as tmp:
        events.to_parquet(tmp, index=False)
    return Path(path)


def read_events(path: Path) -> gpd.GeoDataFrame:
    """Read ``events.parquet``."""
    return gpd.read_parquet(path)


