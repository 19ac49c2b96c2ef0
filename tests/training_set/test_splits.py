"""Splits: the published one kept, or a spatially blocked random split."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from pipeline.training_set.splits import (
    BLOCK_CRS,
    SplitError,
    assign_splits,
    block_groups,
    event_blocks,
    spatial_block_split,
)


def _events(n: int = 400, seed: int = 1) -> gpd.GeoDataFrame:
    """Small and large polygons scattered over ~1 x 1 degree of Kalimantan."""
    rng = np.random.default_rng(seed)
    lon = 113.0 + rng.uniform(0, 1.0, n)
    lat = -2.0 + rng.uniform(0, 1.0, n)
    size = np.where(rng.random(n) < 0.1, 0.06, 0.004)  # a tenth span several 5 km blocks
    return gpd.GeoDataFrame({
        "event_id": [f"e{i:04d}" for i in range(n)], "split": [""] * n,
    }, geometry=[box(x, y, x + s, y + s) for x, y, s in zip(lon, lat, size, strict=True)],
        crs="EPSG:4326")


@pytest.mark.parametrize("block_km", [5.0, 10.0])
def test_blocks_never_straddle_splits(block_km: float) -> None:
    events = _events()
    split = spatial_block_split(events, block_km=block_km, seed=3)
    assert split.index.equals(events.index) and set(split) == {"train", "val", "test"}
    # Every block any event touches holds events of one split only.
    owner: dict[tuple[int, int], str] = {}
    for touched, s in zip(event_blocks(events, block_km), split, strict=True):
        for b in touched:
            assert owner.setdefault(b, s) == s, (b, owner[b], s)
    # Independently: events of different splits never come within one block of each other
    # on the block grid (their touched cells are disjoint).
    size = block_km * 1000
    cells = events.geometry.to_crs(BLOCK_CRS).bounds.to_numpy() // size
    for a in ("train", "val", "test"):
        for b in ("train", "val", "test"):
            if a >= b:
                continue
            ca, cb = cells[(split == a).to_numpy()], cells[(split == b).to_numpy()]
            overlap_x = (ca[:, None, 0] <= cb[None, :, 2]) & (cb[None, :, 0] <= ca[:, None, 2])
            overlap_y = (ca[:, None, 1] <= cb[None, :, 3]) & (cb[None, :, 1] <= ca[:, None, 3])
            assert not (overlap_x & overlap_y).any()


def test_fractions_are_approached_and_the_seed_decides() -> None:
    events = _events(800)
    split = spatial_block_split(events, block_km=5.0, seed=0, fractions=(0.6, 0.2, 0.2))
    shares = split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.03)
    assert shares["val"] == pytest.approx(0.2, abs=0.03)
    again = spatial_block_split(events, block_km=5.0, seed=0, fractions=(0.6, 0.2, 0.2))
    assert again.equals(split)
    other = spatial_block_split(events, block_km=5.0, seed=1, fractions=(0.6, 0.2, 0.2))
    assert not other.equals(split)
    only_two = spatial_block_split(events, 5.0, 0, (0.8, 0.2, 0.0))
    assert set(only_two) == {"train", "val"}


def test_one_event_spanning_blocks_joins_them() -> None:
    assert block_groups([[(0, 0)], [(1, 0)], [(0, 0), (1, 0)], [(5, 5)]]) == [0, 0, 0, 1]


def test_assign_splits_keeps_or_draws() -> None:
    events = _events(30)
    events["split"] = ["train", "val", "test"] * 10
    assert assign_splits(events, "auto") is events
    assert assign_splits(events, "published")["split"].tolist() == events["split"].tolist()
    drawn = assign_splits(events, "spatial", block_km=5, seed=2)
    assert drawn["split"].isin(["train", "val", "test"]).all()
    unlabelled = events.assign(split="")
    assert assign_splits(unlabelled, "auto")["split"].isin(["train", "val", "test"]).all()
    with pytest.raises(SplitError, match="published"):
        assign_splits(unlabelled, "published")
    with pytest.raises(SplitError, match="fractions"):
        spatial_block_split(events, fractions=(0.5, 0.2, 0.2))
