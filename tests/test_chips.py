"""Tests for event chips, auxiliary predictors, the chip store and training-set batches."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely import affinity
from shapely.geometry import LineString, Point, box
from shapely.ops import transform as shapely_transform

from pipeline.core.grid import centred_geobox
from pipeline.imagery.composite import composite
from pipeline.imagery.views import (
    CHIP_BANDS,
    ChipSpec,
    EventChip,
    build_event_chip,
    chip_geobox,
)
from pipeline.training_set.auxiliary import (
    AUX_BANDS,
    AUX_SCALARS,
    MAX_DISTANCE_KM,
    AuxSources,
    aux_for_chip,
    slope_aspect,
)
from pipeline.training_set.batches import build_chip_batch, plan_batches
from pipeline.training_set.chip_store import (
    INT16_FILL,
    batch_marker,
    finalize_chip_store,
    init_chip_store,
    open_chips,
    partial_path,
    write_chip_batch,
)
from pipeline.training_set.events import write_events

UTM = "EPSG:32749"  # the tiny world's zone (113.5 E, 2 S)
TO_UTM = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)


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
    return build_event_chip(event.geometry, int(event.loss_year), store, index,
                            ChipSpec(max_view_cloud=1.0))


def _sources(world: Path) -> AuxSources:
    return AuxSources(
        dem=world / "aux" / "srtm_dem.tif", treecover=world / "gfc" / "treecover2000.tif",
        roads=world / "aux" / "roads.gpkg", settlements=world / "aux" / "settlements.gpkg",
        peat=world / "aux" / "peat.gpkg", climate=world / "aux" / "climate.tif",
    )


# --- chip grid and chips ------------------------------------------------------------------------


def test_chip_geobox_is_332_at_15m_in_utm_centred_on_the_event(event):
    geobox = chip_geobox(event.geometry, ChipSpec())
    assert tuple(geobox.shape) == (332, 332)
    assert geobox.crs.epsg == 32749
    assert geobox.affine.a == 15.0 and geobox.affine.e == -15.0
    anchor = event.geometry.representative_point()
    assert event.geometry.contains(anchor)
    x, y = TO_UTM.transform(anchor.x, anchor.y)
    cx, cy = geobox.affine * (166.5, 166.5)  # centre of pixel (166, 166)
    assert cx == pytest.approx(x, abs=1e-3)
    assert cy == pytest.approx(y, abs=1e-3)


def test_event_chip_shape_mask_area_and_views(chip, event):
    assert chip.status == "ok"
    assert chip.image.shape == (5, 6, 332, 332)
    assert np.isfinite(chip.image[0]).all()
    assert np.abs(chip.image[0]).max() > 0.01  # real reflectance, not the zero fill
    area_utm = gpd.GeoSeries([event.geometry], crs="EPSG:4326").to_crs(UTM).area.iloc[0]
    assert chip.loss_mask.sum() * 225.0 == pytest.approx(area_utm, rel=0.15)
    # The loss region sits at the chip centre.
    assert chip.loss_mask[166, 166] == 1

    assert chip.view_dates[0] == "composite"
    dated = chip.view_dates[1:4]
    assert sorted(dated) == ["2017-06-12", "2018-07-18", "2019-07-21"]
    clouds = chip.view_cloud[1:4]
    assert clouds == sorted(clouds)
    assert dated != sorted(dated)  # the cloud order is not the date order here
    assert chip.view_dates[4] == "" and chip.view_cloud[4] == 1.0
    assert not np.any(chip.image[4])
    for v in range(1, 4):
        assert np.isfinite(chip.image[v]).all()


def test_composite_is_the_median_of_usable_pixels():
    values = np.array([
        # pixel:   (0,0)  (0,1)  (1,0)  (1,1)
        [[0.10, 0.50, 0.30, np.nan]],
        [[0.20, 0.70, 0.90, np.nan]],
        [[0.60, 0.90, 0.10, np.nan]],
    ], dtype=np.float32).reshape(3, 1, 2, 2)
    usable = np.array([
        [[True, True], [False, False]],
        [[True, False], [False, False]],
        [[True, True], [False, False]],
    ])
    images = np.concatenate([values, 2 * values], axis=1)
    out = composite(images, usable)
    expected = np.array([
        [0.20, (0.50 + 0.90) / 2],  # median of 3 usable; median of the 2 usable
        [0.30, 0.0],  # cloudy everywhere: median of all views; outside every scene: 0
    ], dtype=np.float32)
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(out[1], 2 * expected, atol=1e-6)


def _mtl_float(folder: Path, key: str) -> float:
    text = next(folder.glob("*_MTL.txt")).read_text()
    match = re.search(rf"^\s*{key} = \"?([^\"\n]+)\"?\s*$", text, flags=re.MULTILINE)
    assert match, key
    return float(match.group(1))


def test_pansharpened_rgb_follows_the_pan_band(chip, world):
    # View 1 is the least cloudy scene, 2017-06-12; read its 15 m pan band independently.
    folder = next((world / "landsat").glob("*_20170612_*"))
    with rasterio.open(next(folder.glob("*_B8.TIF"))) as src:
        dn = src.read(1).astype(np.float32)
        pan = np.full(tuple(chip.geobox.shape), np.nan, np.float32)
        reproject(dn, pan, src_transform=src.transform, src_crs=src.crs, src_nodata=0,
                  dst_transform=chip.geobox.affine, dst_crs=chip.geobox.crs.to_wkt(),
                  dst_nodata=np.nan, resampling=Resampling.bilinear)
    sin_sun = math.sin(math.radians(_mtl_float(folder, "SUN_ELEVATION")))
    toa = (_mtl_float(folder, "REFLECTANCE_MULT_BAND_8") * pan
           + _mtl_float(folder, "REFLECTANCE_ADD_BAND_8")) / sin_sun
    inside = np.isfinite(toa)
    assert inside.mean() > 0.5
    red, green, blue = chip.image[1, 0], chip.image[1, 1], chip.image[1, 2]
    for band in (red, green, blue):
        assert np.corrcoef(band[inside], toa[inside])[0, 1] > 0.95
    # Weighted Brovey: the pan-weighted intensity of the sharpened bands is the pan band.
    intensity = 0.1 * blue + 0.5 * green + 0.4 * red
    assert np.corrcoef(intensity[inside], toa[inside])[0, 1] > 0.9999
    np.testing.assert_allclose(intensity[inside], toa[inside], atol=1e-5)


def test_event_outside_every_scene_is_flagged_not_dropped(event, store, index):
    far = affinity.translate(event.geometry, xoff=1.0)  # 110 km east: no scene there
    chip = build_event_chip(far, int(event.loss_year), store, index, ChipSpec())
    assert chip.status != "ok"
    assert "scene" in chip.status
    assert chip.image.shape == (5, 6, 332, 332)
    assert not np.any(chip.image)
    assert chip.loss_mask.sum() > 0
    assert chip.geobox.crs.epsg == 32750  # 114.5 E is in the next zone


# --- auxiliary predictors -----------------------------------------------------------------------

AUX_LON, AUX_LAT = 113.55, -1.95
AUX_SIZE = 40


@pytest.fixture(scope="module")
def aux_geobox():
    return centred_geobox(AUX_LON, AUX_LAT, size=AUX_SIZE, resolution=15.0)


def _write_plane(path: Path, geobox, gx: float, gy: float) -> Path:
    """A 30 m DEM in the chip's CRS: z = 100 + gx * (x - x0) + gy * (y - y0) (metres)."""
    x0, y0 = geobox.affine.c - 600.0, geobox.affine.f + 600.0
    n = 60  # 1.8 km: the 0.6 km chip plus 0.6 km on every side
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    x, y = x0 + 30.0 * cols, y0 - 30.0 * rows
    z = (100.0 + gx * (x - x0) + gy * (y - y0)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
                       crs=geobox.crs.to_wkt(), transform=Affine(30.0, 0, x0, 0, -30.0, y0)) as dst:
        dst.write(z, 1)
    return path


@pytest.mark.parametrize(
    ("gx", "gy", "facing"),
    # Aspect is the compass direction the slope faces (downhill), as in gdaldem and ArcGIS.
    [(-0.2, 0.0, 90.0), (0.2, 0.0, 270.0), (0.0, 0.2, 180.0), (0.0, -0.2, 0.0),
     (0.1, 0.1, 225.0)],
)
def test_slope_and_aspect_of_a_tilted_plane(gx, gy, facing):
    cell = 15.0
    rows, cols = np.mgrid[0:12, 0:12]
    x, y = cols * cell, -rows * cell  # rows run southwards
    slope, aspect = slope_aspect(100.0 + gx * x + gy * y, cell)
    np.testing.assert_allclose(slope, math.degrees(math.atan(math.hypot(gx, gy))), atol=1e-4)
    delta = (aspect - facing + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(delta, 0.0, atol=1e-3)


def test_aux_terrain_from_a_dem_file(tmp_path, aux_geobox):
    dem = _write_plane(tmp_path / "dem.tif", aux_geobox, gx=-0.2, gy=0.0)  # faces east
    region = aux_geobox.extent.geom.centroid.buffer(60.0)
    mask = np.zeros(tuple(aux_geobox.shape), np.uint8)
    mask[15:25, 15:25] = 1
    comp = np.full((6, AUX_SIZE, AUX_SIZE), 0.1, np.float32)
    aux, scalars = aux_for_chip(aux_geobox, region, mask, comp, AuxSources(dem=dem))
    inner = (slice(2, -2), slice(2, -2))
    slope = aux[AUX_BANDS.index("slope")][inner]
    aspect = aux[AUX_BANDS.index("aspect")][inner]
    np.testing.assert_allclose(slope, math.degrees(math.atan(0.2)), atol=0.01)
    np.testing.assert_allclose(aspect, 90.0, atol=0.01)
    # Elevation at each pixel centre follows the plane.
    xs = aux_geobox.affine.c + 15.0 * (np.arange(AUX_SIZE) + 0.5)
    expected = 100.0 - 0.2 * (xs - (aux_geobox.affine.c - 600.0))
    elevation = aux[AUX_BANDS.index("elevation")]
    np.testing.assert_allclose(elevation[5:-5, 5:-5], np.broadcast_to(expected, elevation.shape)
                               [5:-5, 5:-5], atol=0.01)
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    assert stats["elevation_mean"] == pytest.approx(float(expected[15:25].mean()), abs=0.01)
    assert stats["slope_std"] == pytest.approx(0.0, abs=0.01)


def test_ndvi_formula(aux_geobox):
    rng = np.random.default_rng(0)
    comp = rng.uniform(0.01, 0.5, size=(6, AUX_SIZE, AUX_SIZE)).astype(np.float32)
    comp[0, 0, 0] = comp[3, 0, 0] = 0.0  # no signal: NDVI undefined
    mask = np.zeros(tuple(aux_geobox.shape), np.uint8)
    mask[10:20, 10:30] = 1
    aux, scalars = aux_for_chip(aux_geobox, aux_geobox.extent.geom, mask, comp, AuxSources())
    red, nir = comp[CHIP_BANDS.index("red")], comp[CHIP_BANDS.index("nir")]
    with np.errstate(invalid="ignore"):
        expected = (nir - red) / (nir + red)
    ndvi = aux[AUX_BANDS.index("ndvi")]
    np.testing.assert_allclose(ndvi[1:], expected[1:], rtol=1e-5)
    np.testing.assert_allclose(ndvi[0, 1:], expected[0, 1:], rtol=1e-5)
    assert np.isnan(ndvi[0, 0])
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    inside = expected[10:20, 10:30]
    assert stats["ndvi_mean"] == pytest.approx(float(inside.mean()), rel=1e-5)
    assert stats["ndvi_max"] == pytest.approx(float(inside.max()), rel=1e-5)


def test_street_and_city_distances_match_shapely_in_utm(tmp_path, aux_geobox):
    road = LineString([(AUX_LON + 0.03, AUX_LAT - 0.05), (AUX_LON + 0.02, AUX_LAT + 0.05)])
    town = Point(AUX_LON - 0.01, AUX_LAT + 0.015)
    far_town = Point(AUX_LON + 0.7, AUX_LAT)  # ~78 km: beyond the 50 km reach
    roads = tmp_path / "roads.gpkg"
    towns = tmp_path / "towns.gpkg"
    far = tmp_path / "far_towns.gpkg"
    gpd.GeoDataFrame(geometry=[road], crs="EPSG:4326").to_file(roads)
    gpd.GeoDataFrame(geometry=[town], crs="EPSG:4326").to_file(towns)
    gpd.GeoDataFrame(geometry=[far_town], crs="EPSG:4326").to_file(far)

    cx, cy = TO_UTM.transform(AUX_LON, AUX_LAT)
    region = box(cx - 100, cy - 60, cx + 80, cy + 90)  # in the chip's UTM CRS
    mask = np.ones(tuple(aux_geobox.shape), np.uint8)
    comp = np.full((6, AUX_SIZE, AUX_SIZE), 0.1, np.float32)
    _, scalars = aux_for_chip(aux_geobox, region, mask, comp,
                              AuxSources(roads=roads, settlements=towns))
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    road_utm = shapely_transform(TO_UTM.transform, road)
    town_utm = shapely_transform(TO_UTM.transform, town)
    assert stats["street_dist_km"] == pytest.approx(road_utm.distance(region) / 1000, rel=1e-4)
    assert stats["city_dist_km"] == pytest.approx(town_utm.distance(region) / 1000, rel=1e-4)
    assert 1.0 < stats["street_dist_km"] < 5.0

    _, scalars = aux_for_chip(aux_geobox, region, mask, comp, AuxSources(settlements=far))
    assert dict(zip(AUX_SCALARS, scalars, strict=True))["city_dist_km"] == MAX_DISTANCE_KM


def test_missing_sources_give_nan_not_zero(aux_geobox):
    mask = np.zeros(tuple(aux_geobox.shape), np.uint8)
    mask[5:10, 5:10] = 1
    comp = np.full((6, AUX_SIZE, AUX_SIZE), 0.2, np.float32)
    comp[3] = 0.4
    aux, scalars = aux_for_chip(aux_geobox, aux_geobox.extent.geom, mask, comp, AuxSources())
    assert aux.shape == (len(AUX_BANDS), AUX_SIZE, AUX_SIZE)
    for band in ("elevation", "slope", "aspect", "treecover2000", "peat"):
        assert np.isnan(aux[AUX_BANDS.index(band)]).all(), band
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    for name, value in stats.items():
        if name.startswith("ndvi_"):
            assert np.isfinite(value), name
        else:
            assert np.isnan(value), name
    assert stats["ndvi_mean"] == pytest.approx(0.2 / 0.6)


def test_aux_from_the_tiny_world_sources(chip, world):
    aux, scalars = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                                _sources(world))
    assert aux.shape == (len(AUX_BANDS), 332, 332)
    assert scalars.shape == (len(AUX_SCALARS),)
    centre = aux[:, 150:180, 150:180]
    assert np.isfinite(centre).all()
    stats = dict(zip(AUX_SCALARS, scalars, strict=True))
    assert 0.0 <= stats["street_dist_km"] <= MAX_DISTANCE_KM
    assert 0.0 <= stats["peat_fraction"] <= 1.0
    assert np.isfinite(stats["precipitation_mm"]) and np.isfinite(stats["temperature_c"])


# --- chip store ---------------------------------------------------------------------------------

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
    assert (ds["epsg"].values == 32749).all()
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

    summary = build_chip_batch(events_path, 0, 2, store, final, spec, _sources(world))
    assert summary == {"start": 0, "stop": 2, "skipped": False, "failed": 1}
    marker = json.loads(batch_marker(final, 0, 2).read_text())
    assert marker["status"][0] == "ok"
    assert "scene" in marker["status"][1]

    # A rerun skips the batch without reading its inputs.
    again = build_chip_batch(tmp_path / "absent.parquet", 0, 2, tmp_path / "absent.zarr",
                             final, spec, _sources(world))
    assert again == {"start": 0, "stop": 2, "skipped": True}

    finalize_chip_store(final, [(0, 2)])
    ds = open_chips(final)
    assert list(ds["event_id"].values) == [event.event_id, "far_away"]
    assert ds["chip_ok"].values.tolist() == [1, 0]
    assert ds["epsg"].values.tolist() == [32749, 32750]
    assert "scene" in ds.attrs["skipped_events"]["far_away"]
    assert ds["image"].shape == (2, 2, 6, 332, 332)
    assert np.abs(ds["image"].values[0, 0]).max() > 0.01
    assert ds["loss_mask"].values[1].sum() > 0
    assert np.isfinite(ds["aux"].values[0, :, 150:180, 150:180]).all()
