"""The tiny world, ingested once, and one event chip built from it: shared by chip tests."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest

from pipeline.imagery.composite_store import CompositeSource
from pipeline.imagery.event_chips import build_event_chip
from pipeline.imagery.views import ChipSpec, EventChip

# --- the tiny world, ingested once --------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    return tiny_world.parent


@pytest.fixture(scope="module")
def store(tiny_scene_store: Path) -> Path:
    return tiny_scene_store


@pytest.fixture(scope="module")
def index(store: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(store / "index.parquet")


@pytest.fixture(scope="module")
def events(tiny_events: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return tiny_events


@pytest.fixture(scope="module")
def event(events: gpd.GeoDataFrame):
    """An event whose +/- 5 year window holds all three scenes (2017, 2018, 2019)."""
    return events[events["loss_year"] >= 2014].iloc[0]


@pytest.fixture(scope="module")
def chip(event, store, index) -> EventChip:
    # Every view passes the cloud filter, so all three scenes become single views.
    return build_event_chip(event.geometry, int(event.loss_year),
                            CompositeSource(store, index, ChipSpec(max_view_cloud=1.0)))
