"""Synthetic map parts, as many as a national map has, without imagery or a model run.

Each tile of a few provinces' regions (one of them across a UTM zone border) holds a grid
of pixel-staircase pieces, built vectorised in the tile's UTM zone and written as the
GeoParquet parts ``pipeline.mapping.parts`` reads. Seams give the merge real work:

- *east pairs*: the last piece of a row reaches the tile's east edge, and the first piece
  of the same row in the next tile starts there (same year);
- *chains*: row 4 of a tile is, now and then, one piece across the whole tile; runs of
  such tiles along a row are one event across several tiles (and batches);
- *north pairs*: column 6 links a tile to the tile above it;
- *zone pairs*: rectangles on the zone border, cut at its meridian between the tiles of
  the two zones;
- a few pieces flagged ``touches_edge`` without a partner, as at a real edge.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS, Transformer

from pipeline.core.grid import zone_crs
from pipeline.core.tile_lattice import TILE_METRES, MapTile, tile_indices
from pipeline.mapping.parts import PART_COLUMNS, part_path
from pipeline.mapping.piece_merge import LOGIT_COLUMNS
from pipeline.mapping.seam_stream import tile_boxes

#: Province regions: name and centre (lon, lat); Riau and Kalimantan Tengah straddle the
#: zone borders at 102 and 114 degrees east.
REGIONS = (("Riau", 102.0, 0.5), ("Jambi", 104.0, -2.5), ("Kalimantan Barat", 110.5, 0.3),
           ("Kalimantan Tengah", 114.0, -2.2), ("Kalimantan Timur", 116.8, 1.0))
YEARS = np.arange(2015, 2021)
#: GFC pixel area near the equator (m²), for the pieces' pixel counts.
_PIXEL_M2 = 27.8 ** 2
_STEPS = 6
_CHAIN_ROW, _NORTH_COL = 4, 6


@dataclass(frozen=True)
class SyntheticParts:
    """What was written: the part files, and the pieces and tiles they hold."""

    paths: list[Path]
    n_pieces: int
    n_tiles: int
    provinces: list[str]


def region_tiles(n_tiles: int, regions=REGIONS) -> list[tuple[str, MapTile]]:
    """``n_tiles`` tiles, split between the regions: those nearest each region's centre."""
    quota = np.full(len(regions), n_tiles // len(regions))
    quota[: n_tiles % len(regions)] += 1
    out = []
    for (name, lon, lat), want in zip(regions, quota, strict=True):
        side = 1.2 * math.sqrt(want) * TILE_METRES / 111_000.0
        axis = np.arange(-side / 2, side / 2, TILE_METRES / 111_000.0 / 3)
        glon, glat = (g.ravel() for g in np.meshgrid(lon + axis, lat + axis))
        zone, row, col = tile_indices(glon, glat)
        points = pd.DataFrame({"zone": zone, "row": row, "col": col,
                               "d": np.hypot(glon - lon, glat - lat)})
        nearest = points.groupby(["zone", "row", "col"])["d"].mean().nsmallest(int(want))
        out += [(name, MapTile(int(z), int(r), int(c))) for z, r, c in sorted(nearest.index)]
    return out


def write_synthetic_parts(folder: Path, n_tiles: int, n_pieces: int, seed: int = 0,
                          regions=REGIONS) -> SyntheticParts:
    """Write parts of about ``n_tiles`` tiles holding ``n_pieces`` pieces under ``folder``
    (``part_path`` layout); returns their paths."""
    rng = np.random.default_rng(seed)
    tiles = region_tiles(n_tiles, regions)
    slots = max(2, math.ceil(math.sqrt(1.1 * n_pieces / max(len(tiles), 1))))
    pieces = [_zone_pieces(rng, [(p, t) for p, t in tiles if t.zone == zone], slots)
              for zone in sorted({t.zone for _, t in tiles})]
    pieces.append(_zone_border_pieces(rng, tiles))
    table = _trim(rng, _concat(pieces), n_pieces)
    paths = _write(folder, table)
    return SyntheticParts(paths, table.num_rows, len(paths),
                          sorted({p for p, _ in tiles}))


def _zone_pieces(rng, tiles: list[tuple[str, MapTile]], s: int) -> dict:
    """Pieces of the tiles of one zone: an ``s`` x ``s`` grid of slots per tile."""
    zone = tiles[0][1].zone
    n_t = len(tiles)
    chain_row, ncol = min(_CHAIN_ROW, s - 1), min(_NORTH_COL, s - 1)
    row = np.array([t.row for _, t in tiles])
    col = np.array([t.col for _, t in tiles])
    province = np.array([p for p, _ in tiles], dtype=object)
    where = {(r, c): k for k, (r, c) in enumerate(zip(row.tolist(), col.tolist(), strict=True))}
    east = np.array([where.get((r, c + 1), -1) for r, c in zip(row, col, strict=True)])
    north = np.array([where.get((r + 1, c), -1) for r, c in zip(row, col, strict=True)])
    east[east >= 0] = np.where(province[east[east >= 0]] == province[east >= 0],
                               east[east >= 0], -1)
    north[north >= 0] = np.where(province[north[north >= 0]] == province[north >= 0],
                                 north[north >= 0], -1)
    # Slot (tile, i = column, j = row) -> flat index.
    tile_of = np.repeat(np.arange(n_t), s * s)
    i = np.tile(np.repeat(np.arange(s), s), n_t)
    j = np.tile(np.arange(s), s * n_t)
    year = rng.choice(YEARS, n_t * s * s)
    size = TILE_METRES / s
    x0 = col[tile_of] * TILE_METRES + i * size + 0.12 * size
    x1 = col[tile_of] * TILE_METRES + (i + 1) * size - 0.12 * size
    y0 = row[tile_of] * TILE_METRES + j * size + 0.12 * size
    top = row[tile_of] * TILE_METRES + (j + 1) * size - 0.12 * size
    edge = rng.random(len(i)) < 0.03  # edge pieces with no partner
    flat = np.zeros(len(i), bool)
    keep = np.ones(len(i), bool)
    flat_index = lambda t, ii, jj: (t * s + ii) * s + jj  # noqa: E731
    # East pairs: (s-1, j) of a tile with (0, j) of its east neighbour, j off the chain row.
    t_e = np.flatnonzero(east >= 0)
    for jj in [jj for jj in range(s) if jj != chain_row]:
        linked = t_e[rng.random(len(t_e)) < 0.4]
        west_piece, east_piece = flat_index(linked, s - 1, jj), flat_index(east[linked], 0, jj)
        x1[west_piece] = (col[linked] + 1) * TILE_METRES
        x0[east_piece] = col[east[linked]] * TILE_METRES
        year[east_piece] = year[west_piece]
        edge[west_piece] = edge[east_piece] = True
    # Chains: the chain row as one piece across the tile; neighbours that are too touch.
    chain = rng.random(n_t) < 0.4
    chain_year = rng.choice(YEARS, max(row.max() - row.min() + 1, 1))[row - row.min()]
    first = flat_index(np.flatnonzero(chain), 0, chain_row)
    x0[first] = col[chain] * TILE_METRES
    x1[first] = (col[chain] + 1) * TILE_METRES
    year[first] = chain_year[chain]
    flat[first] = True
    for ii in range(1, s):
        keep[flat_index(np.flatnonzero(chain), ii, chain_row)] = False
    has_east = chain & (east >= 0) & chain[np.maximum(east, 0)]
    has_west = np.zeros(n_t, bool)
    has_west[east[has_east]] = True
    edge[flat_index(np.flatnonzero(has_east | has_west), 0, chain_row)] = True
    # North pairs: (col 6, top row) of a tile with (col 6, row 0) of the tile above.
    t_n = np.flatnonzero(north >= 0)
    linked = t_n[rng.random(len(t_n)) < 0.3]
    low, high = flat_index(linked, ncol, s - 1), flat_index(north[linked], ncol, 0)
    top[low] = (row[linked] + 1) * TILE_METRES
    flat[low] = True
    y0[high] = row[north[linked]] * TILE_METRES
    year[high] = year[low]
    edge[low] = edge[high] = True
    x0[high], x1[high] = x0[low], x1[low]
    geoms = _staircases(rng, x0, x1, y0, top, flat)[keep]
    lonlat = _to_lonlat(geoms, zone)
    # Pieces past the zone's meridians belong to the other zone's tiles: leave them out.
    lon = shapely.get_x(shapely.centroid(lonlat))
    inside = (lon >= (zone - 1) * 6 - 180) & (lon < zone * 6 - 180)
    tile_keep = tile_of[keep][inside]
    return _rows(rng, tiles, tile_keep, year[keep][inside],
                 edge[keep][inside], lonlat[inside], shapely.area(geoms[inside]))


def _zone_border_pieces(rng, tiles: list[tuple[str, MapTile]]) -> dict:
    """Rectangles on the zone borders the regions cross, cut at the border meridian."""
    rows = []
    for province in sorted({p for p, _ in tiles}):
        zones = sorted({t.zone for p, t in tiles if p == province})
        if len(zones) < 2:
            continue
        mine = [t for p, t in tiles if p == province]
        lats = tile_boxes([t.tile_id for t in mine])[:, 1]
        for zone in zones[1:]:
            border = (zone - 1) * 6 - 180.0
            lat = rng.uniform(lats.min() + 0.05, lats.max() - 0.05, max(10, len(mine) // 10))
            half_h, west_w, east_w = (rng.uniform(0.0005, 0.002, len(lat)) for _ in range(3))
            rows.append((province, border, lat, half_h, west_w, east_w,
                         rng.choice(YEARS, len(lat))))
    wanted = {(t.zone, t.row, t.col): (p, t) for p, t in tiles}
    geoms, owners, years = [], [], []
    for _, border, lat, half_h, west_w, east_w, year in rows:
        for lo, hi in ((border - west_w, np.full(len(lat), border)),
                       (np.full(len(lat), border), border + east_w)):
            zone, trow, tcol = tile_indices((lo + hi) / 2, lat)
            for k in range(len(lat)):
                key = (int(zone[k]), int(trow[k]), int(tcol[k]))
                if key in wanted:  # a half outside the region's tiles is left out
                    owners.append(wanted[key])
                    geoms.append(shapely.box(lo[k], lat[k] - half_h[k], hi[k],
                                             lat[k] + half_h[k]))
                    years.append(year[k])
    if not geoms:
        return _rows(rng, [], np.zeros(0, int), np.zeros(0, int), np.zeros(0, bool),
                     np.zeros(0, object), np.zeros(0))
    geoms = np.asarray(geoms, dtype=object)
    year = np.asarray(years)
    area = shapely.area(geoms) * 111_000.0 ** 2
    return _rows(rng, owners, np.arange(len(owners)), year, np.ones(len(owners), bool), geoms,
                 area)


def _staircases(rng, x0, x1, y0, top, flat) -> np.ndarray:
    """Pixel-staircase polygons: flat bottom and sides, a top of :data:`_STEPS` steps
    (flat where ``flat``)."""
    n = len(x0)
    low = np.minimum(y0 + 0.3 * (top - y0), top)
    heights = rng.uniform(low[:, None], top[:, None], (n, _STEPS))
    heights[flat] = top[flat, None]
    dx = (x1 - x0)[:, None] / _STEPS
    k = np.arange(_STEPS)
    xs = np.empty((n, 2 * _STEPS + 3))
    ys = np.empty_like(xs)
    xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1] = x0, y0, x1, y0
    xs[:, 2:-1:2] = x1[:, None] - k * dx
    xs[:, 3:-1:2] = x1[:, None] - (k + 1) * dx
    ys[:, 2:-1:2] = heights
    ys[:, 3:-1:2] = heights
    xs[:, -1], ys[:, -1] = x0, y0
    xs[:, -2] = x0  # the last step ends on the west side exactly
    return shapely.polygons(np.stack([xs, ys], axis=-1))


def _to_lonlat(geoms: np.ndarray, zone: int) -> np.ndarray:
    to_lonlat = Transformer.from_crs(zone_crs(zone).to_wkt(), "EPSG:4326", always_xy=True)
    # Rounded as the map's pieces are snapped (to 1e-9 degrees), and far faster than
    # set_precision; a vertex shared by two pieces rounds the same in both.
    return shapely.transform(
        geoms, lambda xy: np.round(np.column_stack(to_lonlat.transform(*xy.T)), 9))


def _rows(rng, tiles, tile_of, year, edge, geoms, area_m2) -> dict:
    n = len(tile_of)
    tile_ids = np.array([t.tile_id for _, t in tiles] or [""], dtype=object)
    provinces = np.array([p for p, _ in tiles] or [""], dtype=object)
    logits = rng.normal(0.0, 2.0, (n, len(LOGIT_COLUMNS)))
    blind = rng.random(n) < 0.01
    logits[blind] = np.nan
    pixels = np.maximum(np.rint(np.asarray(area_m2, float) / _PIXEL_M2), 1).astype(np.int64)
    return {
        "tile_id": tile_ids[tile_of], "province": provinces[tile_of],
        "loss_year": np.asarray(year, np.int64), "touches_edge": np.asarray(edge, bool),
        "n_pixels": pixels, "logits": logits,
        "logit_weight": np.where(blind, 0.0, pixels.astype(float)),
        "band_mean": rng.normal(0.0, 1.0, (n, 6)), "band_var": rng.uniform(0.5, 1.5, (n, 6)),
        "geometry": np.asarray(geoms, dtype=object),
    }


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _trim(rng, rows: dict, n_pieces: int) -> pa.Table:
    """The rows as one Arrow table in ``PART_COLUMNS`` order, cut to ``n_pieces`` by
    dropping pieces off the seams, sorted by tile; piece ids as the map gives them."""
    n = len(rows["tile_id"])
    drop = n - n_pieces
    if drop > 0:
        loose = np.flatnonzero(~rows["touches_edge"])
        gone = rng.choice(loose, min(drop, len(loose)), replace=False)
        keep = np.ones(n, bool)
        keep[gone] = False
        rows = {k: v[keep] for k, v in rows.items()}
    order = np.lexsort((rows["loss_year"], rows["tile_id"].astype(str)))
    rows = {k: v[order] for k, v in rows.items()}
    tile = rows["tile_id"].astype(str)
    start = np.r_[0, np.flatnonzero(tile[1:] != tile[:-1]) + 1]
    counter = np.arange(len(tile)) - np.repeat(start, np.diff(np.r_[start, len(tile)]))
    piece_id = [f"{t}_{y}_{k:04d}" for t, y, k in
                zip(tile, rows["loss_year"], counter, strict=True)]
    n = len(tile)
    empty = pa.ListArray.from_arrays(np.zeros(n + 1, np.int32), pa.array([], pa.float64()))
    columns = {
        "piece_id": pa.array(piece_id, pa.string()), "tile_id": pa.array(tile, pa.string()),
        "loss_year": rows["loss_year"], "province": pa.array(rows["province"], pa.string()),
        "n_pixels": rows["n_pixels"], "touches_edge": rows["touches_edge"],
        **{c: rows["logits"][:, k] for k, c in enumerate(LOGIT_COLUMNS)},
        "logit_weight": rows["logit_weight"],
        "band_mean": _lists(rows["band_mean"]), "band_var": _lists(rows["band_var"]),
        "aux_values": empty,
        "scene_ids": pa.array(np.where(np.isfinite(rows["logits"][:, 0]), "LC08_SYN", ""),
                              pa.string()),
        "scene_dates": pa.array(np.where(np.isfinite(rows["logits"][:, 0]), "2018-06-01", ""),
                                pa.string()),
        "model_id": pa.array(np.full(n, "synthetic"), pa.string()),
        "geometry": pa.array(shapely.to_wkb(rows["geometry"]), pa.binary()),
    }
    table = pa.table({c: columns[c] for c in PART_COLUMNS})
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                    "crs": CRS.from_epsg(4326).to_json_dict()}}}
    return table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})


def _lists(values: np.ndarray) -> pa.ListArray:
    n, width = values.shape
    return pa.ListArray.from_arrays(np.arange(0, (n + 1) * width, width, dtype=np.int32),
                                    pa.array(values.ravel(), pa.float64()))


def _write(folder: Path, table: pa.Table) -> list[Path]:
    """One part per tile, under the ``part_path`` layout (threads: Parquet releases the GIL)."""
    tile = np.asarray(table.column("tile_id").to_numpy(zero_copy_only=False), dtype=str)
    start = np.r_[0, np.flatnonzero(tile[1:] != tile[:-1]) + 1]
    stop = np.r_[start[1:], len(tile)]
    paths = [part_path(folder, MapTile.from_id(tile[a])) for a in start]
    for parent in {p.parent for p in paths}:
        parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: pq.write_table(table.slice(start[k], stop[k] - start[k]),
                                               paths[k]), range(len(paths))))
    return paths
