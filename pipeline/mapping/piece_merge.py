"""Merge tile pieces back into events, and turn event logits into the driver-map fields.

The seam rule: pieces of the same loss year and province that touch across a tile edge
(8-connectivity, so corners count) are one event. Its geometry is the union of the
pieces, its logits the pixel-weighted mean of the pieces' region-mean logits (which equals
the region mean over the whole event, as if it had been predicted in one piece), its
fusion inputs merged the same way (``fusion_inputs``), and its ``event_id`` the smallest
piece id, so ids are stable from run to run. Pieces that did not have imagery do not vote;
an event none of whose pieces had imagery keeps its polygon with the driver "No imagery"
(code 0) rather than a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS
from pipeline.mapping.fusion_inputs import FUSION_COLUMNS, merge_fusion_groups

LOGIT_COLUMNS = [f"logit_{key}" for key in DRIVER_KEYS]
NO_IMAGERY = "No imagery"
#: Pieces are unions of GFC pixels snapped to 1e-9 degrees: touching pieces share exact
#: edges or corners; the tolerance only absorbs float noise.
TOUCH_DEGREES = 1e-7


def merge_pieces(pieces: gpd.GeoDataFrame, scalars: Sequence[str] = ()) -> gpd.GeoDataFrame:
    """One row per event: edge pieces touching across tiles are merged (see module doc).

    ``scalars`` name the pieces' ``aux_values`` (``fusion_inputs.scalar_names``)."""
    pieces = pieces.sort_values("piece_id").reset_index(drop=True)
    return merge_groups(pieces, seam_groups(pieces), scalars)


def seam_groups(pieces: gpd.GeoDataFrame) -> np.ndarray:
    """The event number of each piece: pieces at a tile edge that touch (within
    :data:`TOUCH_DEGREES`) with the same loss year and province share one."""
    n = len(pieces)
    edge = np.flatnonzero(pieces["touches_edge"].to_numpy(bool))
    if len(edge) < 2:
        return np.arange(n)
    geoms = pieces.geometry.to_numpy()[edge]
    a, b = shapely.STRtree(geoms).query(geoms, predicate="dwithin", distance=TOUCH_DEGREES)
    a, b = edge[a], edge[b]
    same = ((pieces["loss_year"].to_numpy()[a] == pieces["loss_year"].to_numpy()[b])
            & (pieces["province"].to_numpy()[a] == pieces["province"].to_numpy()[b])
            & (a != b))
    graph = coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def merge_groups(pieces: gpd.GeoDataFrame, group: np.ndarray,
                 scalars: Sequence[str] = ()) -> gpd.GeoDataFrame:
    """One row per ``group`` of ``pieces`` (sorted by ``piece_id``), sorted by event id.

    The groups must be whole events (``seam_groups`` over every piece that can touch
    them): a streamed writer merges a subset of complete groups, and gets the rows the
    whole frame would give."""
    pieces = pieces.assign(_event=np.asarray(group))
    single = pieces.groupby("_event")["piece_id"].transform("size").to_numpy() == 1
    events = [_from_single(pieces[single])]
    if (~single).any():
        events.append(_from_group(pieces[~single], scalars))
    out = pd.concat(events, ignore_index=True)
    out = gpd.GeoDataFrame(out, geometry="geometry", crs=pieces.crs)
    return out.sort_values("event_id").reset_index(drop=True)


def _from_single(pieces: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = pieces.drop(columns=["_event", "touches_edge"]).rename(columns={"piece_id": "event_id"})
    out["n_pieces"] = 1
    return out


def _from_group(pieces: gpd.GeoDataFrame, scalars: Sequence[str]) -> gpd.GeoDataFrame:
    """Events of several pieces, all at once: rows are sorted by event (pieces keep their
    order within it) so that each event's sums are one segment of ``np.add.reduceat``."""
    pieces = pieces.iloc[np.argsort(pieces["_event"].to_numpy(), kind="stable")]
    code = pd.factorize(pieces["_event"].to_numpy())[0]
    starts = _run_starts(code)
    weight = pieces["logit_weight"].to_numpy(np.float64)
    logits = pieces[LOGIT_COLUMNS].to_numpy(np.float64)
    voting = np.isfinite(logits).all(axis=1) & (weight > 0)
    w = np.where(voting, weight, 0.0)
    votes = np.add.reduceat(w, starts)
    with np.errstate(invalid="ignore", divide="ignore"):  # no voting piece: NaN logits
        mean = np.add.reduceat(np.where(voting[:, None], logits * w[:, None], 0.0),
                               starts) / votes[:, None]
    first = pieces.iloc[starts]
    out = {
        "event_id": first["piece_id"].to_numpy(),
        "tile_id": pieces["tile_id"].groupby(code).min().to_numpy(),
        "loss_year": first["loss_year"].to_numpy().astype(np.int64),
        "province": first["province"].to_numpy(),
        "n_pixels": np.add.reduceat(pieces["n_pixels"].to_numpy(np.int64), starts),
        **{column: mean[:, k] for k, column in enumerate(LOGIT_COLUMNS)},
        "logit_weight": votes,
        "scene_ids": _join_sets(pieces["scene_ids"], starts),
        "scene_dates": _join_sets(pieces["scene_dates"], starts),
        "n_pieces": np.diff(np.r_[starts, len(pieces)]),
    }
    if set(FUSION_COLUMNS) <= set(pieces.columns):
        out |= _fusion(pieces, code, voting, votes, scalars)
    geometry = shapely.normalize(shapely.set_precision(
        _unions(pieces.geometry.to_numpy(), starts), 1e-9))
    return gpd.GeoDataFrame(out, geometry=geometry, crs=pieces.crs)


def _fusion(pieces: gpd.GeoDataFrame, code: np.ndarray, voting: np.ndarray,
            votes: np.ndarray, scalars: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Fusion inputs of each event from its voting pieces; an event without any keeps
    empty arrays (its driver is "No imagery" whatever they hold)."""
    n_events = len(votes)
    out = {column: [np.zeros(0)] * n_events for column in FUSION_COLUMNS}
    if not voting.any():
        return out
    rows = pieces[voting]
    vcode = code[voting]
    vstarts = _run_starts(vcode)
    stats = (np.stack(rows[c].to_numpy()) for c in FUSION_COLUMNS)
    merged = merge_fusion_groups(vstarts, rows["logit_weight"].to_numpy(np.float64), *stats,
                                 scalars)
    for column, values in zip(FUSION_COLUMNS, merged, strict=True):
        for event, value in zip(vcode[vstarts], values, strict=True):
            out[column][event] = value
    return out


def _run_starts(code: np.ndarray) -> np.ndarray:
    """The first row of each run of equal values of ``code`` (rows sorted by event)."""
    return np.flatnonzero(np.r_[True, code[1:] != code[:-1]])


def _unions(geoms: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The union of each segment of ``geoms``: one vectorised GEOS call per segment size
    (a row of a 2-D array is one event's pieces), never a Python loop over events."""
    sizes = np.diff(np.r_[starts, len(geoms)])
    out = np.empty(len(starts), dtype=object)
    for size in np.unique(sizes):
        which = np.flatnonzero(sizes == size)
        rows = starts[which][:, None] + np.arange(size)
        out[which] = shapely.union_all(geoms[rows], axis=1)
    return out


def _join_sets(values: pd.Series, starts: np.ndarray) -> list[str]:
    """Per event (rows from each of ``starts``), the sorted union of its pieces'
    comma-separated items."""
    texts = [str(v) for v in values.to_numpy()]
    stops = [*starts[1:].tolist(), len(texts)]
    return [",".join(sorted({item for text in texts[a:b] for item in text.split(",") if item}))
            for a, b in zip(starts.tolist(), stops, strict=True)]


def driver_fields(events: gpd.GeoDataFrame, probs: np.ndarray) -> gpd.GeoDataFrame:
    """Probabilities ``(events, classes)`` (NaN rows: no imagery) as the driver-map fields:
    p_*, driver, driver_code and confidence; the statistics behind them are dropped."""
    probs = np.asarray(probs, np.float64).reshape(len(events), len(DRIVER_CLASSES))
    has = np.isfinite(probs).all(axis=1)
    best = np.where(has, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), -1)
    statistics = [c for c in (*LOGIT_COLUMNS, "logit_weight", *FUSION_COLUMNS) if c in events]
    out = events.drop(columns=statistics)
    out["driver"] = [DRIVER_CLASSES[i] if i >= 0 else NO_IMAGERY for i in best]
    out["driver_code"] = (best + 1).astype(np.int16)
    for k, key in enumerate(DRIVER_KEYS):
        out[f"p_{key}"] = probs[:, k]
    out["confidence"] = np.where(has, np.nanmax(np.where(has[:, None], probs, 0.0), axis=1),
                                 np.nan)
    return out


def drop_small_events(events: gpd.GeoDataFrame, min_pixels: int) -> gpd.GeoDataFrame:
    """GFC speckle: events (after merging) under ``min_pixels`` lossyear pixels."""
    return events[events["n_pixels"] >= min_pixels].reset_index(drop=True)
