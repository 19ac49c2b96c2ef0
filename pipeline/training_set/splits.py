"""Train/val/test splits: the published one, or a spatially blocked random split.

The blocked split cuts the plane into square blocks of ``block_km`` in an equatorial
cylindrical equal-area projection (true scale on the equator, within 2 % across
Indonesia's 11 S - 6 N). Blocks that one event touches are joined into a group, so an
event never spans two groups; each group then goes to one split as a whole. So no block
ever holds events of two splits, and neighbouring events only share a split when they
share a block. Pick ``block_km`` at least the chip width (5 km) to keep chips apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.core.errors import ForestNetError

SPLITS = ("train", "val", "test")
#: Lambert cylindrical equal-area with its standard parallel on the equator (ForestNet
#: used the same projection for its Indonesian coordinates).
BLOCK_CRS = "+proj=cea +lon_0=0 +lat_ts=0 +datum=WGS84 +units=m +no_defs"


class SplitError(ForestNetError, ValueError):
    """A split that cannot be made; the message says why."""


def event_blocks(events: gpd.GeoDataFrame, block_km: float) -> list[list[tuple[int, int]]]:
    """For each event, the ``(ix, iy)`` blocks its bounding box touches."""
    if block_km <= 0:
        raise SplitError(f"block_km must be positive, not {block_km}")
    size = block_km * 1000.0
    bounds = events.geometry.to_crs(BLOCK_CRS).bounds.to_numpy() / size
    out = []
    for minx, miny, maxx, maxy in np.floor(bounds).astype(np.int64):
        out.append([(ix, iy) for ix in range(minx, maxx + 1) for iy in range(miny, maxy + 1)])
    return out


def block_groups(blocks: list[list[tuple[int, int]]]) -> list[int]:
    """Group id per event: events sharing a block (transitively) share a group."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(b: tuple[int, int]) -> tuple[int, int]:
        parent.setdefault(b, b)
        while parent[b] != b:
            parent[b] = parent[parent[b]]  # path halving keeps the trees shallow
            b = parent[b]
        return b

    for touched in blocks:
        first = root(touched[0])
        for other in touched[1:]:
            parent[root(other)] = first
    roots = [root(touched[0]) for touched in blocks]
    ids = {r: i for i, r in enumerate(sorted(set(roots)))}
    return [ids[r] for r in roots]


def spatial_block_split(
    events: gpd.GeoDataFrame,
    block_km: float = 10.0,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> pd.Series:
    """Split name per event (aligned with ``events.index``), whole blocks at a time.

    Groups are visited in a seeded random order; each goes to the split furthest below
    its target share of events, so the counts approach ``fractions``.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise SplitError(f"fractions {list(fractions)} must be 3 shares summing to 1")
    if events.empty:
        return pd.Series([], index=events.index, dtype=object)
    groups = np.asarray(block_groups(event_blocks(events, block_km)))
    sizes = np.bincount(groups)
    targets = fractions * len(events)
    counts = np.zeros(3)
    split_of_group = np.empty(len(sizes), dtype=object)
    for g in np.random.default_rng(seed).permutation(len(sizes)):
        # The split furthest below its target; a split with no share never gets a group.
        deficit = np.where(targets > 0, targets - counts, -np.inf)
        k = int(np.argmax(deficit))
        split_of_group[g] = SPLITS[k]
        counts[k] += sizes[g]
    return pd.Series(split_of_group[groups], index=events.index, dtype=object)


def assign_splits(
    events: gpd.GeoDataFrame,
    method: str = "auto",
    block_km: float = 10.0,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> gpd.GeoDataFrame:
    """Events with their ``split`` set.

    ``published`` keeps the split the source gave (and refuses events without one);
    ``spatial`` draws a blocked split; ``auto`` keeps a complete published split, else
    draws a blocked one.
    """
    given = events["split"].fillna("").astype(str) if "split" in events else pd.Series("")
    complete = bool(len(events)) and given.isin(SPLITS).all()
    if method == "published" and not complete and len(events):
        bad = events.loc[~given.isin(SPLITS), "event_id"].head(3).tolist()
        raise SplitError(f"split method 'published' but events have no split (e.g. {bad})")
    if method not in ("auto", "published", "spatial"):
        raise SplitError(f"split method must be auto, published or spatial, not {method!r}")
    if method == "published" or (method == "auto" and complete):
        return events
    out = events.copy()
    out["split"] = spatial_block_split(events, block_km, seed, fractions)
    return out
