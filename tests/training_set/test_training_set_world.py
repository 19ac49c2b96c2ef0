"""The training set on the tiny sample world, checked against independent computations."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely.geometry import shape

from flows.config.schema import PipelineConfig
from forestnet_model.data import normalisation_stats, split_indices
from pipeline.imagery.composite_store import CompositeSource
from pipeline.imagery.event_chips import build_event_chip
from pipeline.imagery.views import ChipSpec, chip_geobox, scene_on_grid
from pipeline.ingest.catalog import pan_partners, read_index
from pipeline.training_set.auxiliary import AUX_SCALARS, MAX_DISTANCE_KM, AuxSources, aux_for_chip
from pipeline.training_set.batches import build_chip_batch
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, open_chips
from pipeline.training_set.events import write_events
from tests.tiny_config import config_events


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
def chips(events, store, index) -> list:
    spec = ChipSpec(max_view_cloud=1.0, max_single_views=3)
    source = CompositeSource(store, index, spec)
    return [build_event_chip(e.geometry, int(e.loss_year), source)
            for e in events.itertuples()]


def _usgs_utm_epsg(lon: float) -> int:
    """USGS's Landsat CRS for a longitude: the zone's northern form in both hemispheres."""
    return 32600 + int((lon + 180) // 6) + 1


def test_every_chip_is_332_at_15m_in_its_utm_zone(events, chips) -> None:
    for event, chip in zip(events.itertuples(), chips, strict=True):
        anchor = event.geometry.representative_point()
        assert tuple(chip.geobox.shape) == (332, 332)
        assert (chip.geobox.affine.a, chip.geobox.affine.e) == (15.0, -15.0)
        assert chip.geobox.crs.epsg == _usgs_utm_epsg(anchor.x) == 32649


def test_loss_mask_matches_the_event_polygon(events, chips) -> None:
    for event, chip in zip(events.itertuples(), chips, strict=True):
        truth = gpd.GeoSeries([event.geometry], crs=4326).to_crs(chip.geobox.crs.epsg).iloc[0]
        pixels = [shape(g) for g, v in rasterio.features.shapes(
            chip.loss_mask, mask=chip.loss_mask > 0, transform=chip.geobox.affine) if v == 1]
        burnt = gpd.GeoSeries(pixels).union_all()
        iou = burnt.intersection(truth).area / burnt.union(truth).area
        # 15 m pixels over a polygon of ~28 m lon/lat pixels: the edge pixels go by the
        # grid's phase (chips sit on the tile lattice), so small events reach about 0.89.
        assert iou > 0.85, (event.event_id, iou)


def test_composite_is_the_median_of_the_views(chips, store) -> None:
    rng = np.random.default_rng(0)
    checked = 0
    index = read_index(store)
    pans = pan_partners(index, index)  # each Level-2 view is sharpened by its Level-1 pan
    for chip in chips[:4]:
        views = [scene_on_grid(store, sid, chip.geobox, pan_from=pans.get(sid))
                 for sid in chip.scene_ids]
        rows, cols = rng.integers(0, 332, 200), rng.integers(0, 332, 200)
        for r, c in zip(rows, cols, strict=True):
            usable = [v for v in views if v.usable[r, c]]
            if not usable:
                continue
            expected = np.median(np.stack([v.image[:, r, c] for v in usable]), axis=0)
            np.testing.assert_allclose(chip.image[0][:, r, c], expected, rtol=1e-6, atol=1e-7)
            checked += 1
    assert checked > 500


def test_distances_match_geopandas(world, events, chips) -> None:
    roads = gpd.read_file(world / "aux" / "roads.gpkg")
    towns = gpd.read_file(world / "aux" / "settlements.gpkg")
    sources = AuxSources(roads=world / "aux" / "roads.gpkg",
                         settlements=world / "aux" / "settlements.gpkg")
    for event, chip in list(zip(events.itertuples(), chips, strict=True))[::3]:
        _, scalars = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                                  sources, bands=(), features=("street_dist_km", "city_dist_km"))
        utm = chip.geobox.crs.epsg
        region = gpd.GeoSeries([event.geometry], crs=4326).to_crs(utm).iloc[0]
        street = min(roads.to_crs(utm).distance(region).min() / 1000, MAX_DISTANCE_KM)
        city = min(towns.to_crs(utm).distance(region).min() / 1000, MAX_DISTANCE_KM)
        assert scalars[0] == pytest.approx(street, rel=1e-6, abs=1e-6)
        assert scalars[1] == pytest.approx(city, rel=1e-6, abs=1e-6)


def test_slope_and_aspect_follow_numpy_gradient_of_the_dem(world, chips) -> None:
    dem_path = world / "aux" / "srtm_dem.tif"
    chip = chips[0]
    aux, _ = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                          AuxSources(dem=dem_path), bands=("elevation", "slope", "aspect"),
                          features=())
    with rasterio.open(dem_path) as src:
        dem = np.full((332, 332), np.nan, np.float32)
        reproject(src.read(1).astype(np.float32), dem, src_transform=src.transform,
                  src_crs=src.crs, src_nodata=src.nodata, dst_transform=chip.geobox.affine,
                  dst_crs=chip.geobox.crs.to_wkt(), dst_nodata=np.nan,
                  resampling=Resampling.bilinear)
    np.testing.assert_allclose(aux[0], dem, rtol=1e-5, equal_nan=True)
    d_row, d_col = np.gradient(dem.astype(np.float64), 15.0)
    east, north = d_col, -d_row  # rows run south
    slope = np.degrees(np.arctan(np.hypot(east, north)))
    facing = np.degrees(np.arctan2(-east, -north)) % 360  # compass bearing of downhill
    ok = np.isfinite(slope) & (slope > 0.5)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(aux[1][ok], slope[ok], atol=1e-3)
    delta = (aux[2][ok] - facing[ok] + 180) % 360 - 180
    np.testing.assert_allclose(delta, 0.0, atol=1e-2)


def test_peat_raster_is_resampled_nearest(tmp_path: Path, chips) -> None:
    chip = chips[0]
    left, bottom, right, top = chip.geobox.extent.to_crs("EPSG:4326").boundingbox
    transform = rasterio.transform.from_bounds(left - 0.01, bottom - 0.01, right + 0.01,
                                               top + 0.01, 40, 40)
    classes = np.random.default_rng(1).integers(0, 4, (40, 40)).astype(np.uint8)  # 0 = none
    path = tmp_path / "peat.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=transform, nodata=255) as dst:
        dst.write(classes, 1)
    aux, scalars = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                                AuxSources(peat=path), bands=("peat",),
                                features=("peat_fraction",))
    expected = np.zeros((332, 332), np.float32)
    reproject(classes, expected, src_transform=transform, src_crs="EPSG:4326",
              dst_transform=chip.geobox.affine, dst_crs=chip.geobox.crs.to_wkt(),
              resampling=Resampling.nearest)
    np.testing.assert_array_equal(aux[0], (expected > 0).astype(np.float32))
    assert set(np.unique(aux[0])) <= {0.0, 1.0}  # categories are never blended
    assert scalars[0] == pytest.approx(float(aux[0][chip.loss_mask > 0].mean()))


def test_store_records_the_chosen_aux(tmp_path: Path, world, events, store) -> None:
    chosen = events.iloc[:2].reset_index(drop=True)
    path = write_events(chosen, tmp_path / "events.parquet")
    spec = ChipSpec(max_single_views=1)
    bands, features = ("ndvi", "elevation"), ("street_dist_km", "elevation_mean")
    final = tmp_path / "chips.zarr"
    init_chip_store(final, chosen, spec, bands, features, {"source": "pipeline"})
    sources = AuxSources(dem=world / "aux" / "srtm_dem.tif", roads=world / "aux" / "roads.gpkg")
    build_chip_batch(path, 0, 2, store, final, spec, sources, bands, features)
    finalize_chip_store(final, [(0, 2)])
    ds = open_chips(final)
    assert list(ds["aux_band"].values) == list(bands)
    assert list(ds["feature"].values) == list(features)
    assert ds["aux"].shape == (2, 2, 332, 332) and ds.attrs["source"] == "pipeline"
    assert np.isfinite(ds["aux_scalar"].values).all()
    stats = normalisation_stats(ds, split_indices(ds, "train"), ("red",), ("elevation",))
    assert len(stats["mean"]) == 2
    with pytest.raises(ValueError, match="unknown aux band"):
        aux_for_chip(chip_geobox(chosen.geometry[0], spec), chosen.geometry[0],
                     np.zeros((332, 332), np.uint8), np.zeros((6, 332, 332), np.float32),
                     AuxSources(), bands=("elev",))
    assert "elevation_mean" in AUX_SCALARS


# --- events from the configured source ---------------------------------------------------------


def _config(world: Path, **events: object) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "inputs": {"events_csv_dir": str(world / "events"),
                   "lossyear": str(world / "gfc" / "lossyear.tif")},
        "events": events,
    })


def test_events_from_a_vector_file_keep_its_labels_and_splits(world: Path) -> None:
    truth = gpd.read_file(world / "events" / "loss_regions.gpkg")
    events, problems = config_events(_config(world, source="vector", vector={
        "path": str(world / "events" / "loss_regions.gpkg"), "year_column": "year",
        "label_column": "label", "split_column": "split"}))
    assert problems == [] and len(events) == len(truth)
    for event in events.itertuples():
        owner = truth[truth.contains(event.geometry.representative_point())]
        assert len(owner) == 1
        row = owner.iloc[0]
        assert (event.label, event.merged_label, event.split, event.loss_year) == (
            row["label"], row["merged_label"], row["split"], row["year"])
        assert event.area_ha == pytest.approx(row["area_ha"], rel=1e-3)


def test_gfc_events_with_tiles_hectares_and_a_spatial_split(world: Path) -> None:
    components, _ = config_events(_config(world, source="gfc", years=[2013, 2016]))
    tiles, _ = config_events(_config(world, source="gfc", years=[2013, 2016],
                                   group_by_tile=True, min_event_ha=2.0,
                                   split={"block_km": 5.0, "seed": 4}))
    assert len(tiles) < len(components)
    assert (tiles["area_ha"] >= 2.0).all()
    assert set(tiles["split"]) <= {"train", "val", "test"} and tiles["split"].ne("").all()
    assert set(tiles["label"]) == {""}


def test_csv_events_keep_the_published_split_unless_told(world: Path) -> None:
    published, _ = config_events(_config(world))
    truth = gpd.read_file(world / "events" / "loss_regions.gpkg")
    assert sorted(published["split"]) == sorted(truth["split"])
    spatial, _ = config_events(_config(world, split={"method": "spatial", "block_km": 2.0}))
    assert spatial["split"].isin(["train", "val", "test"]).all()
    assert math.isclose(spatial["area_ha"].sum(), published["area_ha"].sum())
