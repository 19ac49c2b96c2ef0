"""Loss pixels of a GFC ``lossyear`` raster, planned into map tiles and cut into pieces.

Planning scans the raster in blocks and counts, per map tile, the loss pixels of the
requested years inside the area of interest, so that only tiles holding loss are mapped.
Per tile, the loss pixels it owns (see :mod:`pipeline.core.tile_lattice` for the ownership rules)
become *pieces*: connected regions (8-connectivity) of one year and one province. A
region crossing a tile edge yields one piece per tile; pieces carry ``touches_edge`` so
that the map writer can merge them back into one event (:mod:`pipeline.mapping.piece_merge`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from scipy import ndimage
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.core.grid import pixel_centre_axes, pixel_centres
from pipeline.core.tile_lattice import TILE_METRES, MapTile, tile_indices
from pipeline.training_set.events import (
    EIGHT_CONNECTED,
    check_lossyear,
    label_polygons,
    loss_regions,
    lossyear_window,
)

PIECE_COLUMNS = ["piece_id", "tile_id", "loss_year", "province", "n_pixels", "touches_edge",
                 "geometry"]
#: The bundled province boundaries are coarse (a few hundred vertices per province): loss
#: pixels just outside every province, within this many degrees (~10 km), take the nearest.
PROVINCE_SNAP_DEGREES = 0.09
#: Planning block edge in lossyear pixels (4096 px = ~1 degree, 16 MB of uint8).
PLAN_BLOCK = 4096
#: How far past its tile an edge piece's whole event is followed (one tile, ~5 km): the
#: event's window must fit the tile's halo, which stays below that.
EVENT_REACH_M = TILE_METRES


def plan_blocks(
    lossyear: Path, bounds: tuple[float, float, float, float], block: int = PLAN_BLOCK
) -> list[tuple[int, int, int, int]]:
    """Blocks ``(row_off, col_off, height, width)`` of the raster covering lon/lat ``bounds``."""
    with rasterio.open(lossyear) as src:
        check_lossyear(src, Path(lossyear))
        window = lossyear_window(src, bounds)
    if window is None:
        return []
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    return [(r, c, min(block, r1 - r), min(block, c1 - c))
            for r in range(r0, r1, block) for c in range(c0, c1, block)]


def tiles_in_block(
    lossyear: Path, block: tuple[int, int, int, int], years: Iterable[int],
    area: BaseGeometry | None,
) -> pd.DataFrame:
    """Loss pixels of ``years`` per map tile in one block, inside ``area`` (lon/lat).

    Returns columns zone, row, col, n_loss (pixels of this block only; sum over blocks)
    and loss_years (bit ``year - 2000`` set for each year present: :func:`years_of_mask`).
    """
    row_off, col_off, height, width = block
    window = rasterio.windows.Window(col_off, row_off, width, height)
    with rasterio.open(lossyear) as src:
        data = src.read(1, window=window)
        transform = src.window_transform(window)
        nodata = src.nodata
    loss = year_mask(data, years, nodata)
    if area is not None and loss.any():
        loss &= rasterio.features.rasterize(
            [(area, 1)], out_shape=loss.shape, transform=transform, fill=0, dtype="uint8"
        ).astype(bool)
    rows, cols = np.nonzero(loss)
    if rows.size == 0:
        return pd.DataFrame({"zone": [], "row": [], "col": [], "n_loss": [], "loss_years": []},
                            dtype=np.int64)
    lon = transform.c + (cols + 0.5) * transform.a
    lat = transform.f + (rows + 0.5) * transform.e
    zone, trow, tcol = tile_indices(lon, lat)
    bits = np.left_shift(np.int64(1), data[rows, cols].astype(np.int64))
    frame = pd.DataFrame({"zone": zone, "row": trow, "col": tcol, "loss_years": bits})
    grouped = frame.groupby(["zone", "row", "col"])
    return pd.concat([grouped.size().rename("n_loss"),
                      grouped["loss_years"].agg(np.bitwise_or.reduce)], axis=1).reset_index()


def years_of_mask(mask: int) -> list[int]:
    """The loss years whose bits (``year - 2000``) are set in a plan's ``loss_years``."""
    return [2000 + code for code in range(64) if int(mask) >> code & 1]


def year_mask(data: np.ndarray, years: Iterable[int], nodata: float | None) -> np.ndarray:
    """Pixels whose GFC code (year - 2000) is one of ``years``; nodata never counts."""
    codes = [int(y) - 2000 for y in years]
    mask = np.isin(data, codes)
    if nodata is not None and not math.isnan(nodata):
        mask &= data != nodata
    return mask


def tile_pieces(
    lossyear: Path, tile: MapTile, years: Iterable[int], provinces: gpd.GeoDataFrame,
) -> gpd.GeoDataFrame:
    """The loss pieces one tile owns: one polygon per (year, province, connected region)."""
    lossyear = Path(lossyear)
    with rasterio.open(lossyear) as src:
        check_lossyear(src, lossyear)
        res = abs(src.transform.a)
        # One pixel more than the core on each side: enough to see neighbours across edges.
        window = lossyear_window(src, _grow(tile.lonlat_bounds(), 2 * res))
        if window is None:
            return empty_pieces()
        data = src.read(1, window=window)
        grid = GeoBox(data.shape, src.window_transform(window), CRS(src.crs))
        nodata = src.nodata
    lon, lat = pixel_centres(grid)
    zone, trow, tcol = tile_indices(lon.ravel(), lat.ravel())
    owned = ((zone == tile.zone) & (trow == tile.row) & (tcol == tile.col)).reshape(data.shape)
    loss = year_mask(data, years, nodata)
    province_ids, names = province_raster(provinces, grid, loss & owned)
    records = []
    for code in np.unique(data[loss & owned]):
        year, year_px = 2000 + int(code), loss & (data == code)
        # A piece touches the edge when a same-year loss pixel of another tile (or zone)
        # is among its 8 neighbours: then the writer may merge it with that tile's piece.
        foreign = ndimage.binary_dilation(year_px & ~owned, structure=EIGHT_CONNECTED)
        for p in np.unique(province_ids[year_px & owned]):
            if p == 0:
                continue  # outside every province (beyond the snapping distance)
            mine = year_px & owned & (province_ids == p)
            labels, n = ndimage.label(mine, structure=EIGHT_CONNECTED)
            at_edge = set(np.unique(labels[foreign & mine]).tolist())
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            for k, geom in sorted(label_polygons(labels.astype(np.int32), grid).items()):
                records.append({
                    "piece_id": f"{tile.tile_id}_{year}_{len(records):04d}",
                    "tile_id": tile.tile_id, "loss_year": year, "province": names[p - 1],
                    "n_pixels": int(sizes[k]), "touches_edge": k in at_edge, "geometry": geom,
                })
    if not records:
        return empty_pieces()
    return gpd.GeoDataFrame(records, geometry="geometry", crs="EPSG:4326")[PIECE_COLUMNS]


def whole_events(lossyear: Path, tile: MapTile, pieces: gpd.GeoDataFrame
                 ) -> dict[int, BaseGeometry]:
    """The whole loss event of each piece touching the tile's edge, by piece position.

    An event is the 8-connected loss region of its year, across tiles and provinces, as
    an event chip sees it (``training_set.events.loss_regions``, EPSG:4326). It is followed
    up to :data:`EVENT_REACH_M` past the tile; a piece whose event reaches further is left
    out (it is then seen on its own).
    """
    edge = np.flatnonzero(pieces["touches_edge"].to_numpy()) if len(pieces) else []
    if not len(edge):
        return {}
    bounds = tile.lonlat_bounds(margin_m=EVENT_REACH_M)
    with rasterio.open(lossyear) as src:
        pixel = abs(src.transform.a)
    inside = box(*bounds).buffer(-2 * pixel)  # a region reaching the window's edge is cut
    years = pieces["loss_year"].iloc[edge]
    regions = loss_regions(lossyear, bounds, sorted(set(years)), min_pixels=1)
    out = {}
    for k in edge:
        point = pieces.geometry.iloc[k].representative_point()
        hit = regions[(regions["loss_year"] == pieces["loss_year"].iloc[k])
                      & regions.intersects(point)]
        if len(hit) == 1 and hit.geometry.iloc[0].within(inside):
            out[int(k)] = hit.geometry.iloc[0]
    return out


def province_raster(
    provinces: gpd.GeoDataFrame, grid: GeoBox, wanted: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Province index (1-based, 0 = none) of each pixel centre, and the names by index.

    Where borders overlap the first province by name wins. ``wanted`` pixels outside every
    province take the nearest province within :data:`PROVINCE_SNAP_DEGREES`.
    """
    shape, transform = tuple(grid.shape), grid.affine
    frame = provinces.sort_values("province")
    near = frame[frame.intersects(box(*grid.boundingbox).buffer(PROVINCE_SNAP_DEGREES))]
    names = near["province"].tolist()
    if not names:
        return np.zeros(shape, np.int32), []
    # Burn in reverse name order so that the first name is burnt last and wins overlaps.
    burn = [(geom, i + 1) for i, geom in reversed(list(enumerate(near.geometry)))]
    ids = rasterio.features.rasterize(burn, out_shape=shape, transform=transform, fill=0,
                                      dtype="int32")
    lost = wanted & (ids == 0)
    if lost.any():
        r, c = np.nonzero(lost)
        xs, ys = pixel_centre_axes(grid)
        points = shapely.points(xs[c], ys[r])
        dist = np.stack([shapely.distance(geom, points) for geom in near.geometry])
        best = dist.argmin(axis=0)
        ok = dist[best, np.arange(len(points))] <= PROVINCE_SNAP_DEGREES
        ids[r[ok], c[ok]] = best[ok] + 1
    return ids, names


def empty_pieces() -> gpd.GeoDataFrame:
    """A pieces table with every column and no rows."""
    frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
        ("piece_id", str), ("tile_id", str), ("loss_year", np.int64), ("province", str),
        ("n_pixels", np.int64), ("touches_edge", bool))})
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")


def _grow(bounds: tuple[float, float, float, float], d: float) -> tuple[float, ...]:
    west, south, east, north = bounds
    return west - d, south - d, east + d, north + d
