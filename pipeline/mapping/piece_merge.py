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
from shapely.ops import unary_union

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS
from pipeline.mapping.fusion_inputs import FUSION_COLUMNS, merge_fusion_inputs

LOGIT_COLUMNS = [f"logit_{key}" for key in DRIVER_KEYS]
NO_IMAGERY = "No imagery"
#: Pieces are unions of GFC pixels snapped to 1e-9 degrees: touching pieces share exact
#: edges or corners; the tolerance only absorbs float noise.
TOUCH_DEGREES = 1e-7


def merge_pieces(pieces: gpd.GeoDataFrame, scalars: Sequence[str] = ()) -> gpd.GeoDataFrame:
    """One row per event: edge pieces touching across tiles are merged (see module doc).

    ``scalars`` name the pieces' ``aux_values`` (``fusion_inputs.scalar_names``)."""
    pieces = pieces.sort_values("piece_id").reset_index(drop=True)
    n = len(pieces)
    group = np.arange(n)
    edge = np.flatnonzero(pieces["touches_edge"].to_numpy(bool))
    if len(edge) > 1:
        geoms = pieces.geometry.to_numpy()[edge]
        tree = shapely.STRtree(geoms)
        a, b = tree.query(geoms, predicate="dwithin", distance=TOUCH_DEGREES)
        a, b = edge[a], edge[b]
        same = ((pieces["loss_year"].to_numpy()[a] == pieces["loss_year"].to_numpy()[b])
                & (pieces["province"].to_numpy()[a] == pieces["province"].to_numpy()[b])
                & (a != b))
        graph = coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(n, n))
        _, group = connected_components(graph, directed=False)
    pieces = pieces.assign(_event=group)
    single = pieces.groupby("_event")["piece_id"].transform("size") == 1
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
    fused = set(FUSION_COLUMNS) <= set(pieces.columns)
    rows = []
    for _, group in pieces.groupby("_event", sort=False):
        weight = group["logit_weight"].to_numpy(np.float64)
        logits = group[LOGIT_COLUMNS].to_numpy(np.float64)
        voting = np.isfinite(logits).all(axis=1) & (weight > 0)
        mean = (np.average(logits[voting], axis=0, weights=weight[voting]) if voting.any()
                else np.full(len(LOGIT_COLUMNS), np.nan))
        geom = unary_union(list(group.geometry))
        if fused:
            fusion = dict.fromkeys(FUSION_COLUMNS, np.zeros(0))
            if voting.any():
                stats = (np.stack(group[c].to_numpy()[voting]) for c in FUSION_COLUMNS)
                fusion = dict(zip(FUSION_COLUMNS, merge_fusion_inputs(
                    weight[voting], *stats, scalars), strict=True))
        rows.append({
            "event_id": group["piece_id"].min(), "tile_id": group["tile_id"].min(),
            "loss_year": int(group["loss_year"].iloc[0]),
            "province": group["province"].iloc[0],
            "n_pixels": int(group["n_pixels"].sum()),
            **dict(zip(LOGIT_COLUMNS, mean, strict=True)),
            "logit_weight": float(weight[voting].sum()),
            "scene_ids": _join_sets(group["scene_ids"]),
            "scene_dates": _join_sets(group["scene_dates"]),
            "n_pieces": len(group),
            **(fusion if fused else {}),
            "geometry": shapely.normalize(shapely.set_precision(geom, 1e-9)),
        })
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=pieces.crs)


def _join_sets(values: pd.Series) -> str:
    items = {item for value in values for item in str(value).split(",") if item}
    return ",".join(sorted(items))


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
