"""Map parts merged into events batch by batch, so that a national map never sits in memory.

Parts are read in a sweep: tiles sorted by zone, column and row (west to east, zone after
zone), cut into batches of about :data:`BATCH_PIECES` pieces. Only pieces at a tile's edge
merge, with touching pieces of neighbouring tiles (``piece_merge``), and a piece lies
inside its tile's lon/lat box grown by :data:`REACH_DEGREES`. So once every batch holding
a tile whose box meets the box of an edge piece's tile has been read (the piece's
*reach*), nothing unread can join the piece's event.

After each batch, the pieces in hand are grouped into events (``seam_groups``). An event
whose pieces' reach is behind the sweep is complete: it is merged and yielded. The others
are carried to the next batch, whole. An event is thus merged once, with all its pieces,
as the whole-frame ``merge_pieces`` merges it, even across batch and zone borders.

Memory is one batch plus the open events, which lie along the sweep's front (a column of
tiles, or a zone border): it grows with the map's height, not with its events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from pipeline.core.grid import zone_crs
from pipeline.core.tile_lattice import MapTile, zone_gridspec
from pipeline.mapping.parts import MapPartError, read_pieces
from pipeline.mapping.piece_merge import merge_groups, seam_groups

#: Pieces read per batch: with the next batch read ahead and the merge's copies, about
#: 300 MB (bench/bench_publish.py); larger batches save little time.
BATCH_PIECES = 25_000
#: How far a piece may lie outside its tile's lon/lat box. A piece owns the lossyear pixels
#: whose centres are in the tile, so it reaches half a pixel (GFC: 0.000125 degrees) out;
#: a wider margin only keeps events open for longer, never merges anything.
REACH_DEGREES = 0.005
#: Points per tile edge projected to find its lon/lat box (UTM edges are near-straight).
_EDGE_POINTS = 5


def tile_boxes(tile_ids: Sequence[str]) -> np.ndarray:
    """``(n, 4)`` lon/lat boxes (west, south, east, north) of the tiles' cores, grown by
    :data:`REACH_DEGREES`; one projection per zone, not per tile."""
    tiles = [MapTile.from_id(t) for t in tile_ids]
    out = np.empty((len(tiles), 4))
    zones = np.array([t.zone for t in tiles], dtype=np.int64)
    rows = np.array([t.row for t in tiles], dtype=np.int64)
    cols = np.array([t.col for t in tiles], dtype=np.int64)
    step = np.linspace(0.0, 1.0, _EDGE_POINTS)
    # The boundary of the unit square, as fractions of a tile.
    u = np.concatenate([step, np.ones_like(step), step, np.zeros_like(step)])
    v = np.concatenate([np.zeros_like(step), step, np.ones_like(step), step])
    for zone in np.unique(zones):
        sel = np.flatnonzero(zones == zone)
        spec = zone_gridspec(int(zone))
        (x0, y0), (w, h) = spec.origin.xy, spec.tile_size.xy
        lon, lat = _to_lonlat(int(zone)).transform(x0 + (cols[sel, None] + u) * w,
                                                   y0 + (rows[sel, None] + v) * h)
        out[sel] = np.stack([lon.min(axis=1), lat.min(axis=1), lon.max(axis=1),
                             lat.max(axis=1)], axis=1)
    return out + np.array([-REACH_DEGREES, -REACH_DEGREES, REACH_DEGREES, REACH_DEGREES])


def sweep_plan(index: pd.DataFrame, batch_pieces: int | None = None) -> pd.DataFrame:
    """The parts of ``index`` (``parts.part_index`` rows of one province) in sweep order,
    with their ``batch`` and ``reach`` (the last batch holding a neighbouring tile).
    Batches hold about ``batch_pieces`` pieces (default :data:`BATCH_PIECES`), whole parts."""
    if index.empty:
        return index.assign(batch=pd.Series(dtype=np.int64), reach=pd.Series(dtype=np.int64))
    tiles = index.groupby("path", sort=False).agg(tile_id=("tile_id", "min"),
                                                  n_pieces=("n_pieces", "sum")).reset_index()
    try:
        keys = [(t.zone, t.col, t.row) for t in map(MapTile.from_id, tiles["tile_id"])]
    except (ValueError, IndexError) as exc:
        raise MapPartError(f"map parts hold a tile id that is not a map tile's ({exc})") from exc
    tiles = tiles.iloc[sorted(range(len(tiles)), key=lambda i: (keys[i], str(tiles["path"][i])))]
    tiles = tiles.reset_index(drop=True)
    before = tiles["n_pieces"].cumsum().to_numpy() - tiles["n_pieces"].to_numpy()
    batch = before // max(int(batch_pieces or BATCH_PIECES), 1)
    tiles["batch"] = batch
    # A part holds one tile; a (foreign) part with several reaches from all of them.
    boxes = shapely.box(*tile_boxes(list(index["tile_id"])).T)
    row_of = pd.Series(np.arange(len(tiles)), index=tiles["path"].to_numpy())
    owner = row_of[index["path"].to_numpy()].to_numpy()
    near, far = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    reach = batch.copy()
    np.maximum.at(reach, owner[near], batch[owner[far]])
    tiles["reach"] = reach
    return tiles


def stream_events(index: pd.DataFrame, province: str, scalars: Sequence[str] = (),
                  area: BaseGeometry | None = None,
                  batch_pieces: int | None = None) -> Iterator[gpd.GeoDataFrame]:
    """The merged events (``merge_pieces`` rows) of ``province`` in the parts of ``index``,
    a batch at a time; every event comes once, whole. ``area`` clips the pieces first.

    The next batch's parts are read on a thread while this one merges (Parquet and WKB
    decoding release the GIL): at most two batches are in memory."""
    mine = index[index["province"] == province]
    plan = sweep_plan(mine, batch_pieces)
    reach_of = dict(zip(mine["tile_id"], mine["path"].map(
        dict(zip(plan["path"], plan["reach"], strict=True))), strict=True))
    batches = [list(paths) for _, paths in plan.groupby("batch", sort=True)["path"]]
    carried = None
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(read_pieces, batches[0], province) if batches else None
        for batch in range(len(batches)):
            pieces = ahead.result()
            if batch + 1 < len(batches):
                ahead = reader.submit(read_pieces, batches[batch + 1], province)
            if area is not None and len(pieces):
                pieces = gpd.clip(pieces, area, keep_geom_type=True)
            # Only a piece at its tile's edge can join a piece of another tile; the others
            # are whole events now.
            pieces["_reach"] = np.where(pieces["touches_edge"].to_numpy(bool),
                                        pieces["tile_id"].map(reach_of).to_numpy(np.int64),
                                        batch)
            if carried is not None and len(carried):
                pieces = pd.concat([carried, pieces], ignore_index=True)
            pieces = pieces.sort_values("piece_id").reset_index(drop=True)
            group = seam_groups(pieces)
            reach = pd.Series(pieces["_reach"].to_numpy()).groupby(group).transform("max")
            done = reach.to_numpy() <= batch
            if done.any():
                yield merge_groups(pieces[done].drop(columns="_reach"), group[done], scalars)
            carried = pieces[~done]
    if carried is not None and len(carried):  # a bug: reach never passes the last batch
        raise RuntimeError(f"{len(carried)} pieces of {province} were left unmerged")


@lru_cache(maxsize=64)
def _to_lonlat(zone: int) -> Transformer:
    return Transformer.from_crs(zone_crs(zone).to_wkt(), "EPSG:4326", always_xy=True)
