"""The chip store (round trip, partial reuse, finalize) and training-set batches."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from shapely import affinity
from shapely.geometry import box

from pipeline.imagery.views import (
    CHIP_BANDS,
    ChipSpec,
    EventChip,
    chip_geobox,
)
from pipeline.training_set.auxiliary import (
    AUX_BANDS,
    AUX_SCALARS,
)
from pipeline.training_set.batches import build_chip_batch, plan_batches
from pipeline.training_set.chip_store import (
    INT16_FILL,
    REFLECTANCE_SCALE,
    batch_marker,
    encode_reflectance,
    finalize_chip_store,
    init_chip_store,
    open_chips,
    partial_path,
    write_chip_batch,
)
from pipeline.training_set.events import write_events
from tests.training_set.tiny_world_grid import AUX_LAT, AUX_LON, world_aux_sources

SMALL = ChipSpec(size=16, max_single_views=2)


def _synthetic_events(n: int = 5) -> gpd.GeoDataFrame:
    lons = AUX_LON + 0.01 * np.arange(n)
    return gpd.GeoDataFrame({
        "event_id": [f"2015_ev{i}" for i in range(n)],
        "loss_year": [2013 + i % 4 for i in range(n)],
        "label": ["Oil palm plantation", "Small-scale agriculture", "Grassland shrubland",
                  "Mining", "Timber plantation"][:n],
        "merged_label": ["Plantation", "Smallholder agriculture", "Grassland shrubland",
                         "Other", "Plantation"][:n],
        "split": ["train", "train", "val", "test", "train"][:n],
        "geometry": [box(x - 0.0005, AUX_LAT - 0.0004, x + 0.0005, AUX_LAT + 0.0004)
                     for x in lons],
    }, crs="EPSG:4326")


def _synthetic_chips(events: gpd.GeoDataFrame, seed: int = 0):
    rng = np.random.default_rng(seed)
    s, v = SMALL.size, SMALL.n_views
    chips, aux, scalars = [], [], []
    for i, geom in enumerate(events.geometry):
        image = rng.uniform(-0.05, 0.8, size=(v, len(CHIP_BANDS), s, s)).astype(np.float32)
        mask = np.zeros((s, s), np.uint8)
        mask[6:10, 5:11] = 1
        status = "no scene within 5 years covers the chip" if i == 1 else "ok"
        chips.append(EventChip(
            geobox=chip_geobox(geom, SMALL), image=image,
            view_dates=["composite", f"201{7 + i % 2}-06-1{i}", ""],
            view_cloud=[0.2, 0.05 * i, 1.0], scene_ids=[f"scene{i}"], loss_mask=mask,
            region=geom, status=status,
        ))
        a = rng.normal(size=(len(AUX_BANDS), s, s)).astype(np.float32)
        a[0, :2] = np.nan  # a missing aux source keeps its NaN
        aux.append(a)
        scalars.append(rng.normal(size=len(AUX_SCALARS)).astype(np.float32))
    return chips, aux, scalars


def test_chip_store_round_trip(tmp_path):
    events = _synthetic_events()
    chips, aux, scalars = _synthetic_chips(events)
    chips[0].image[0, 0, 0, 0] = 5.0  # beyond the int16 range: clipped to 3.2
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, SMALL)
    write_chip_batch(final, 0, chips[:3], aux[:3], scalars[:3])
    write_chip_batch(final, 3, chips[3:], aux[3:], scalars[3:])
    assert finalize_chip_store(final, [(0, 3), (3, 5)]) == final
    assert not partial_path(final).exists()

    ds = open_chips(final)
    assert ds["image"].dims == ("event", "view", "band", "y", "x")
    assert ds["image"].shape == (5, 3, 6, 16, 16)
    assert ds["loss_mask"].dims == ("event", "y", "x")
    assert ds["aux"].dims == ("event", "aux_band", "y", "x")
    assert ds["aux_scalar"].dims == ("event", "feature")
    assert ds["view_date"].dims == ds["view_cloud_fraction"].dims == ("event", "view")
    for coord in ("event_id", "label", "merged_label", "loss_year", "split", "lat", "lon",
                  "epsg", "transform"):
        assert coord in ds.coords, coord
    assert list(ds["band"].values) == list(CHIP_BANDS)
    assert list(ds["event_id"].values) == list(events["event_id"])
    assert list(ds["split"].values) == list(events["split"])
    assert list(ds["label"].values) == list(events["label"])
    assert (ds["epsg"].values == 32649).all()
    anchors = events.geometry.representative_point()
    np.testing.assert_allclose(ds["lon"].values, anchors.x)
    np.testing.assert_allclose(ds["lat"].values, anchors.y)
    for i, c in enumerate(chips):
        np.testing.assert_allclose(ds["transform"].values[i], tuple(c.geobox.affine)[:6])

    expected = np.stack([c.image for c in chips])
    expected[0, 0, 0, 0, 0] = 3.2
    stored = ds["image"].values
    assert stored.dtype.kind == "f"
    np.testing.assert_allclose(stored, expected, atol=0.5e-4 + 1e-6)
    raw = xr.open_zarr(str(final), chunks=None, mask_and_scale=False)["image"]
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(ds["loss_mask"].values, np.stack([c.loss_mask for c in chips]))
    np.testing.assert_array_equal(ds["aux"].values, np.stack(aux))
    np.testing.assert_array_equal(ds["aux_scalar"].values, np.stack(scalars))
    assert ds["view_date"].values[0].tolist() == [0, 20170610, 0]
    assert ds["view_date"].values[1].tolist() == [0, 20180611, 0]
    np.testing.assert_allclose(ds["view_cloud_fraction"].values[2], [0.2, 0.1, 1.0])
    assert ds["chip_ok"].values.tolist() == [1, 0, 1, 1, 1]
    assert ds.attrs["skipped_events"] == {
        "2015_ev1": "no scene within 5 years covers the chip"
    }


def test_nan_reflectance_round_trips_as_nan(tmp_path):
    events = _synthetic_events(2)
    chips, aux, scalars = _synthetic_chips(events)
    chips[0].image[0, 1, 3, 4] = np.nan
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, SMALL)
    write_chip_batch(final, 0, chips, aux, scalars)
    finalize_chip_store(final, [(0, 2)])
    image = open_chips(final)["image"].values
    assert np.isnan(image[0, 0, 1, 3, 4])
    assert np.isnan(image).sum() == 1
    raw = xr.open_zarr(str(final), chunks=None, mask_and_scale=False)["image"].values
    assert raw[0, 0, 1, 3, 4] == INT16_FILL


def test_the_image_encoding_is_cf_encodings_to_the_integer():
    """Stores written before and after the direct write hold the same integers, halfway
    cases included: a model trained on either sees the same numbers."""
    from xarray.conventions import encode_cf_variable

    rng = np.random.default_rng(0)
    image = (rng.random((3, 2, 6, 16, 16)) * 0.6).astype(np.float32)
    image[1] = (np.round(image[1] * 1e4) + 0.5) / 1e4  # halfway between two steps
    image[2, 0, 0, 0, :5] = [5.0, -4.0, 3.2, -3.0, np.nan]
    cf = xr.Variable(("event", "view", "band", "y", "x"), np.clip(image, -3.0, 3.2),
                     encoding={"dtype": "int16", "scale_factor": REFLECTANCE_SCALE,
                               "add_offset": 0.0, "_FillValue": INT16_FILL})
    np.testing.assert_array_equal(encode_reflectance(image), encode_cf_variable(cf).values)


def test_init_reuses_a_partial_store_for_the_same_events(tmp_path):
    events = _synthetic_events()
    chips, aux, scalars = _synthetic_chips(events)
    final = tmp_path / "chips.zarr"
    partial = init_chip_store(final, events, SMALL)
    write_chip_batch(final, 0, chips[:3], aux[:3], scalars[:3])
    assert batch_marker(final, 0, 3).exists()

    # A killed run restarts: same events, so the written batch and its marker stay.
    assert init_chip_store(final, events.copy(), SMALL) == partial
    assert batch_marker(final, 0, 3).exists()
    kept = xr.open_zarr(str(partial), consolidated=False, chunks=None)
    np.testing.assert_array_equal(kept["aux"].values[:3], np.stack(aux[:3]))
    write_chip_batch(final, 3, chips[3:], aux[3:], scalars[3:])
    finalize_chip_store(final, [(0, 3), (3, 5)])
    np.testing.assert_array_equal(open_chips(final)["aux"].values, np.stack(aux))


def test_init_starts_over_for_different_events(tmp_path):
    events = _synthetic_events()
    chips, aux, scalars = _synthetic_chips(events)
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, SMALL)
    write_chip_batch(final, 0, chips[:3], aux[:3], scalars[:3])

    fewer = events.iloc[1:].reset_index(drop=True)
    partial = init_chip_store(final, fewer, SMALL)
    assert not batch_marker(final, 0, 3).exists()
    fresh = xr.open_zarr(str(partial), consolidated=False, chunks=None)
    assert fresh.sizes["event"] == 4
    assert list(fresh["event_id"].values) == list(fewer["event_id"])
    assert np.isnan(fresh["aux"].values).all()  # unwritten: nothing of the old run survives
    # A changed chip spec also starts over.
    init_chip_store(final, fewer, SMALL)
    write_chip_batch(final, 0, chips[1:3], aux[1:3], scalars[1:3])
    init_chip_store(final, fewer, ChipSpec(size=16, max_single_views=3))
    assert not batch_marker(final, 0, 2).exists()


def test_finalize_refuses_when_a_batch_is_missing(tmp_path):
    events = _synthetic_events()
    chips, aux, scalars = _synthetic_chips(events)
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, SMALL)
    write_chip_batch(final, 0, chips[:3], aux[:3], scalars[:3])
    with pytest.raises(RuntimeError, match=r"\(3, 5\)"):
        finalize_chip_store(final, [(0, 3), (3, 5)])
    assert not final.exists()
    assert partial_path(final).exists()  # the work done so far is kept


# --- training-set batches -----------------------------------------------------------------------


def test_plan_batches_covers_every_event_once():
    assert plan_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_batches(0, 4) == []


def test_build_chip_batch_keeps_failed_events_and_skips_done_batches(
    tmp_path, world, store, events, event
):
    chosen = events[events["event_id"] == event.event_id]
    outside = chosen.copy()
    outside["event_id"] = "far_away"
    outside.geometry = gpd.GeoSeries([affinity.translate(event.geometry, xoff=1.0)],
                                     index=outside.index, crs="EPSG:4326")
    batch_events = gpd.GeoDataFrame(pd.concat([chosen, outside], ignore_index=True),
                                    crs="EPSG:4326")
    events_path = write_events(batch_events, tmp_path / "events.parquet")
    spec = ChipSpec(max_single_views=1)
    final = tmp_path / "chips.zarr"
    init_chip_store(final, batch_events, spec)

    summary = build_chip_batch(events_path, 0, 2, store, final, spec, world_aux_sources(world))
    assert summary == {"start": 0, "stop": 2, "skipped": False, "failed": 1}
    marker = json.loads(batch_marker(final, 0, 2).read_text())
    assert marker["status"][0] == "ok"
    assert "scene" in marker["status"][1]

    # A rerun skips the batch without reading its inputs.
    again = build_chip_batch(tmp_path / "absent.parquet", 0, 2, tmp_path / "absent.zarr",
                             final, spec, world_aux_sources(world))
    assert again == {"start": 0, "stop": 2, "skipped": True}

    finalize_chip_store(final, [(0, 2)])
    ds = open_chips(final)
    assert list(ds["event_id"].values) == [event.event_id, "far_away"]
    assert ds["chip_ok"].values.tolist() == [1, 0]
    assert ds["epsg"].values.tolist() == [32649, 32650]
    assert "scene" in ds.attrs["skipped_events"]["far_away"]
    assert ds["image"].shape == (2, 2, 6, 332, 332)
    assert np.abs(ds["image"].values[0, 0]).max() > 0.01
    assert ds["loss_mask"].values[1].sum() > 0
    assert np.isfinite(ds["aux"].values[0, :, 150:180, 150:180]).all()
