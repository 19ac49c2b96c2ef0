"""End to end: `forestnet map` over two provinces of a sample world on their shared border.

Real CLI, Prefect (ephemeral API), a two-worker Dask LocalCluster, a real scene store, and
GeoPackages read back through GDAL. The model is an untrained bundle: this tests mapping,
not accuracy.
"""

from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely

from pipeline.core.provinces import select_provinces
from pipeline.export.geopackage import AREA_TABLE, DRIVER_MAP_FIELDS, DRIVER_MAP_LAYER
from pipeline.mapping.loss_pieces import year_mask
from tests.map_job import BORDER, BORDER_PROVINCES, forestnet, geopackages, read_map

# Every CLI run here talks to the session's Prefect server, not a temporary API.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cli_on_shared_prefect")]

PROVINCES = BORDER_PROVINCES


@pytest.fixture(scope="module")
def border_job(border_map_run: dict) -> dict:
    return border_map_run


def test_one_geopackage_per_province_with_the_contract(border_job: dict) -> None:
    paths = geopackages(border_job["first"])
    assert [p.name for p in paths] == ["kalimantan-selatan.gpkg", "kalimantan-tengah.gpkg"]
    for path in paths:
        layers = dict(pyogrio.list_layers(path))
        assert layers[DRIVER_MAP_LAYER] == "MultiPolygon" and AREA_TABLE in layers
        info = pyogrio.read_info(path, layer=DRIVER_MAP_LAYER)
        assert list(info["fields"]) == list(DRIVER_MAP_FIELDS)
        assert info["crs"] == "EPSG:4326" and info["features"] > 0
        # The loss pixels' lattice, so that a reference sample can draw those pixels.
        with rasterio.open(border_job["world"] / "gfc" / "lossyear.tif") as src:
            expected = list(src.transform)[:6]
        grid = json.loads(info["layer_metadata"]["loss_pixel_grid"])
        assert grid["crs"] == "EPSG:4326" and grid["transform"] == pytest.approx(expected)
        with sqlite3.connect(path) as db:
            styles = db.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall()
            rtree = db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'rtree_%'"
                               ).fetchall()
        assert (DRIVER_MAP_LAYER, 1) in styles
        assert any(DRIVER_MAP_LAYER in name for (name,) in rtree)


def test_events_are_unique_and_inside_their_province(border_job: dict) -> None:
    maps = list(border_job["maps"].values())
    both = pd.concat(maps, ignore_index=True)
    assert both["event_id"].is_unique
    assert both["run_id"].nunique() == 1
    outlines = select_provinces(PROVINCES).set_index("province").geometry
    for frame in maps:
        (province,) = set(frame["province"])
        # Representative points lie in their province (coarse outlines: allow the snap).
        points = frame.geometry.representative_point()
        assert (points.distance(outlines[province]) < 0.1).all()


def test_mapped_area_matches_the_lossyear_raster(border_job: dict) -> None:
    lossyear = border_job["world"] / "gfc" / "lossyear.tif"
    with rasterio.open(lossyear) as src:
        data, transform = src.read(1), src.transform
        nodata = src.nodata
    rows, cols = np.nonzero(year_mask(data, range(2013, 2017), nodata))
    west = transform.c + cols * transform.a
    north = transform.f + rows * transform.e
    pixels = gpd.GeoSeries(shapely.box(west, north + transform.e, west + transform.a, north),
                           crs="EPSG:4326")
    inside = pixels.centroid.within(select_provinces(PROVINCES).union_all())
    expected_ha = pixels[inside].to_crs("EPSG:6933").area.sum() / 1e4
    mapped = pd.concat(border_job["maps"].values())
    assert expected_ha > 10
    assert mapped["area_ha"].sum() == pytest.approx(expected_ha, rel=0.02)


def test_rerun_skips_every_tile_and_writes_the_same_maps(border_job: dict) -> None:
    again = forestnet("map", "--config", str(border_job["config"]), "--dask-address",
                      border_job["cluster"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert "0 predicted" in again.stdout, again.stdout
    assert geopackages(again) == geopackages(border_job["first"])
    for path in geopackages(again):
        pd.testing.assert_frame_equal(read_map(path), border_job["maps"][path.name])



def test_an_aoi_reuses_the_province_tiles_and_clips_to_the_area(border_job: dict) -> None:
    west, south, east, north = BORDER[0] - 0.02, BORDER[1] - 0.02, BORDER[0] + 0.02, \
        BORDER[1] + 0.02
    aoi = border_job["folder"] / "my-area.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(west, south, east, north)], crs="EPSG:4326").to_file(aoi)
    result = forestnet("map", "--config", str(border_job["config"]), "--aoi", str(aoi),
                       "--dask-address", border_job["cluster"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "0 predicted" in result.stdout  # every tile was predicted by the province run
    (path,) = geopackages(result)
    assert path.name == "my-area.gpkg"
    mapped = read_map(path)
    assert len(mapped) > 0
    assert mapped.geometry.within(shapely.box(west, south, east, north).buffer(1e-9)).all()
    assert set(mapped["province"]) <= set(PROVINCES)


def test_plan_agrees_with_what_ingest_and_map_did(border_job: dict) -> None:
    from flows.config.mapping_job import run_id_for
    from flows.config.schema import load_config
    from flows.plan import plan_job, plan_text
    from forestnet_model.bundle_meta import read_bundle_meta
    from pipeline.ingest.catalog import read_index

    config = load_config(border_job["config"])
    plan = plan_job(config)
    print(plan_text(plan))
    run_id = run_id_for(config, read_bundle_meta(config.bundle_path).model_id)
    tiles = border_job["work"] / "map-runs" / run_id / "tiles.parquet"
    assert plan["tiles_with_loss"]["ids"] == list(pd.read_parquet(tiles)["tile_id"])
    index = read_index(config.scene_store)
    assert plan["products"]["count"] == len(index)
    assert sum(plan["products"]["per_path_row_year"].values()) == len(index)
    assert plan["bytes"]["to_read"] == plan["bytes"]["full"] > 0  # local products: whole
    assert plan["estimate"]["cpu_core_hours"] > 0 and plan["estimate"]["gpu_minutes"] > 0
    # The map built every composite its tiles need: a re-map (a new bundle) builds none.
    stored = list((border_job["work"] / "composites.zarr").glob("z*/*/*/zarr.json"))
    assert plan["composites"]["to_build"] == 0
    assert plan["composites"]["reused"] == len(stored) > 0
    assert f"composites: 0 to build, {len(stored)} reused" in plan_text(plan)
