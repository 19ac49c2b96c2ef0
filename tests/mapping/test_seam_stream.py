"""The streamed seam merge gives the events the whole-frame merge gives, batch by batch.

Synthetic parts (``tests/synthetic_parts.py``) put events across tile edges, along chains
of tiles and across a UTM zone border; tiny batches make many of them cross batch borders.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.core.tile_lattice import MapTile
from pipeline.mapping import seam_stream
from pipeline.mapping.parts import part_index, read_pieces
from pipeline.mapping.piece_merge import merge_pieces, seam_groups
from pipeline.mapping.seam_stream import (
    REACH_DEGREES,
    stream_events,
    sweep_plan,
    tile_boxes,
)
from tests.synthetic_parts import write_synthetic_parts

#: Pieces per batch: a few parts each, so that most seams are batch borders too.
SMALL_BATCH = 120


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_synthetic_parts(tmp_path_factory.mktemp("parts"), n_tiles=150, n_pieces=6000)


@pytest.fixture(scope="module")
def index(parts):
    return part_index(parts.paths)


def same_events(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.sort_values("event_id"), b.sort_values("event_id")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        if column == "geometry":
            assert shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), 0).all()
        elif a[column].dtype == object and isinstance(a[column].iloc[0], np.ndarray):
            for x, y in zip(a[column], b[column], strict=True):
                np.testing.assert_array_equal(x, y)
        else:
            pd.testing.assert_series_equal(a[column].reset_index(drop=True),
                                           b[column].reset_index(drop=True), check_exact=True)


def test_index_counts_every_piece_by_tile_and_province(parts, index) -> None:
    assert int(index["n_pieces"].sum()) == parts.n_pieces
    assert set(index["province"]) == set(parts.provinces)
    assert index.groupby("path")["tile_id"].nunique().max() == 1


def test_tile_boxes_are_the_tiles_lonlat_bounds_grown_by_the_reach() -> None:
    tiles = [MapTile(50, -70, 100), MapTile(47, 11, 160), MapTile(49, -2, 166)]
    boxes = tile_boxes([t.tile_id for t in tiles])
    grown = np.array([t.lonlat_bounds() for t in tiles]) + np.array(
        [-REACH_DEGREES, -REACH_DEGREES, REACH_DEGREES, REACH_DEGREES])
    np.testing.assert_allclose(boxes, grown, atol=1e-7)


def test_events_across_batch_and_zone_borders_merge_as_in_the_whole_frame(parts,
                                                                          index) -> None:
    plan = sweep_plan(index[index["province"] == "Riau"], SMALL_BATCH)
    batch_of = dict(zip(plan["tile_id"], plan["batch"], strict=True))
    crossing = zoned = 0
    for province in parts.provinces:
        pieces = read_pieces(list(index.loc[index["province"] == province, "path"]), province)
        whole = merge_pieces(pieces)
        streamed = list(stream_events(index, province, batch_pieces=SMALL_BATCH))
        assert len(streamed) >= 2  # several batches, each yielding the events it closes
        same_events(whole, pd.concat(streamed, ignore_index=True))
        if province == "Riau":  # across the zone 47/48 border at 102 E
            pieces = pieces.sort_values("piece_id").reset_index(drop=True)
            groups = pd.DataFrame({"group": seam_groups(pieces), "tile": pieces["tile_id"]})
            groups["batch"] = groups["tile"].map(batch_of)
            groups["zone"] = groups["tile"].str[1:3]
            spans = groups.groupby("group").agg(batches=("batch", "nunique"),
                                                zones=("zone", "nunique"))
            crossing, zoned = int((spans["batches"] > 1).sum()), int((spans["zones"] > 1).sum())
    # The comparison is only worth something if events did cross those borders.
    assert crossing > 10 and zoned > 0


def test_memory_holds_a_batch_and_the_open_events_not_the_map(parts, index,
                                                            monkeypatch) -> None:
    merged_sizes = []
    real = seam_stream.seam_groups

    def spy(pieces):
        merged_sizes.append(len(pieces))
        return real(pieces)

    monkeypatch.setattr(seam_stream, "seam_groups", spy)
    province = "Jambi"
    total = int(index.loc[index["province"] == province, "n_pieces"].sum())
    events = sum(len(e) for e in stream_events(index, province, batch_pieces=SMALL_BATCH))
    assert events > 0 and len(merged_sizes) > 5
    # A batch is whole parts (about 40 pieces each here) plus the events still open.
    assert max(merged_sizes) <= 2 * SMALL_BATCH < total / 4


def test_a_carried_event_is_never_left_behind(index) -> None:
    # Every batch's reach ends within the plan: nothing is carried past the last batch.
    plan = sweep_plan(index, SMALL_BATCH)
    assert (plan["reach"] >= plan["batch"]).all() and plan["reach"].max() == plan["batch"].max()
    # A tile's neighbours across a column seam come later in the sweep: its reach looks ahead.
    assert (plan["reach"] > plan["batch"]).any()
