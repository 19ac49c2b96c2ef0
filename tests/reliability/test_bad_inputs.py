"""R3, bad-input catalogue (1 of 3): input files and areas.

Each case: a clear error naming the file or key and the reason; a non-zero exit where the
whole run cannot go on (2 through the CLI), or a per-item error where the other items go
on; and no corrupt or partial output left in place.

Catalogue (case: expected behaviour -> test):

- truncated TIFF: its scene gets a failed index row naming the band file ("truncated or
  corrupt"); the other scenes ingest; `ingest` exits 1 -> test_bad_scene_fails_alone
- TIFF with no CRS (and an MTL without corners): failed row naming the band file, "no CRS
  in the file and no corner coordinates in MTL" -> test_bad_scene_fails_alone
- missing band: failed row naming the absent file, "missing nir band file"
  -> test_bad_scene_fails_alone
- MTL of another scene: failed row naming the band file, "the MTL belongs to another
  product" -> test_bad_scene_fails_alone
- (the four above): the store holds the good scene's group only, no temporaries
  -> test_failed_scenes_write_nothing
- all-cloud scene: ingested with clear_fraction 0 in the index; never a view of a chip; an
  event only it covers gets chip_ok 0 and "no usable ... pixel" in the store's
  skipped_events, and never trains -> test_all_cloud_and_outside_scenes_are_per_event_reasons
- scene outside the area: an event no scene covers gets chip_ok 0 and "no scene between ...
  covers the grid"; zeros, never guessed values
  -> test_all_cloud_and_outside_scenes_are_per_event_reasons
- empty AOI (`map --aoi`, no features or only empty geometries): exit 2, one line naming
  the file, "holds no geometry"; nothing written -> test_empty_aoi_is_refused_before_anything_runs
- unknown province: exit 2, one line naming it (and close names); nothing written
  -> test_unknown_province_is_named

The ingest cases run through the real CLI, Prefect and Dask once (module fixture, slow);
the rest call the CLI's checks (which run before any cluster starts) or the plain stage
functions. See ``test_bad_values.py`` and ``test_bad_config_and_disk.py`` for the rest.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from shapely.geometry import box
from typer.testing import CliRunner

from pipeline.ingest.catalog import read_index
from tests.ingest_inputs import (
    L1_DIR,
    L1_ID,
    clone_product,
    new_product_id,
    products,
    threads_cluster,
)
from tests.reliability.bad_input_helpers import (
    listing,
    map_ready,
    one_line_error,
    save_random_bundle,
    temporaries,
)
from tests.tiny_config import write_tiny_config

CLOUD_QA = (1 << 3) | (1 << 1)  # cloud + dilated cloud on every pixel


def _rewrite_tif(path: Path, data: np.ndarray, **profile_changes) -> None:
    """Replace a band file. Written beside it, then renamed: GDAL deletes a Landsat
    ``*_MTL.txt`` sidecar when it overwrites a GeoTIFF in place."""
    with rasterio.open(path) as src:
        profile = {**src.profile, **profile_changes}
    profile = {k: v for k, v in profile.items() if v is not None}
    tmp = path.with_name("rewrite.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data, 1)
    os.replace(tmp, path)


def _bad_products(template: Path, folder: Path) -> dict[str, Path]:
    """One broken copy of ``template`` per ingest case, each under its own product id."""
    base = template.name
    made = {}
    made["truncated"] = clone_product(template, folder, new_product_id(base, "20210301"))
    with (made["truncated"] / f"{made['truncated'].name}_B4.TIF").open("r+b") as f:
        f.truncate(5000)

    made["no-crs"] = nocrs = clone_product(template, folder, new_product_id(base, "20210302"))
    b1 = nocrs / f"{nocrs.name}_B1.TIF"
    with rasterio.open(b1) as src:
        data = src.read(1)
    _rewrite_tif(b1, data, crs=None, transform=None)
    mtl = nocrs / f"{nocrs.name}_MTL.txt"
    mtl.write_text("\n".join(line for line in mtl.read_text().splitlines()
                             if "CORNER_" not in line))

    made["missing-band"] = clone_product(template, folder, new_product_id(base, "20210303"))
    (made["missing-band"] / f"{made['missing-band'].name}_B5.TIF").unlink()

    made["foreign-mtl"] = foreign = clone_product(template, folder,
                                                  new_product_id(base, "20210304"))
    other = next(L1_DIR.glob("*_MTL.txt")).read_text().replace(L1_ID, foreign.name)
    (foreign / f"{foreign.name}_MTL.txt").write_text(other)
    return made


@pytest.fixture(scope="module")
def ingest_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`forestnet ingest` of one good and four broken products, once."""
    root = tmp_path_factory.mktemp("bad-ingest")
    good = products(tiny_world)[0]
    bad = _bad_products(products(tiny_world)[1], root / "inputs")
    config = write_tiny_config(root, tiny_world.parent)
    store = root / "scenes.zarr"
    with threads_cluster() as address:
        result = CliRunner().invoke(app(), [
            "ingest", str(good), *map(str, bad.values()), "--store", str(store),
            "--config", str(config), "--dask-address", address])
    return {"result": result, "good": good, "bad": bad, "store": store,
            "index": read_index(store).set_index("source")}


def app():
    import flows.ingest  # noqa: F401  (Prefect binds its log handlers to the real stderr first)
    from flows.cli.app import app

    return app


@pytest.mark.slow
@pytest.mark.parametrize(("case", "file_part", "reason"), [
    ("truncated", "_B4.TIF", "truncated or corrupt"),
    ("no-crs", "_B1.TIF", "no CRS in the file and no corner coordinates in MTL"),
    ("missing-band", "_B5.TIF", "missing nir band file"),
    ("foreign-mtl", "_B1.TIF", "the MTL belongs to another product"),
])
def test_bad_scene_fails_alone(ingest_run: dict, case: str, file_part: str,
                               reason: str) -> None:
    result, source = ingest_run["result"], ingest_run["bad"][case]
    assert result.exit_code == 1, result.output
    assert f"(1 ingested, 0 skipped, {len(ingest_run['bad'])} failed)" in result.stdout
    row = ingest_run["index"].loc[str(source)]
    assert row["status"] == "failed" and row["scene_id"] == source.name
    assert f"{source}/{source.name}{file_part}" in row["error"] and reason in row["error"]
    failed = [line for line in result.stderr.splitlines()
              if line.startswith(f"failed: {source.name}: ")]
    assert len(failed) == 1 and reason in failed[0], result.stderr


@pytest.mark.slow
def test_failed_scenes_write_nothing(ingest_run: dict) -> None:
    store, good = ingest_run["store"], ingest_run["good"]
    assert ingest_run["index"].loc[str(good), "status"] == "ingested"
    groups = sorted(p.name for p in store.iterdir() if p.is_dir())
    assert groups == [good.name]
    assert temporaries(store) == []


# --- all-cloud and outside scenes: per-event reasons in the chip store ----------------------


def _all_cloud_copy(template: Path, folder: Path) -> Path:
    cloudy = clone_product(template, folder, new_product_id(template.name, "20210305"))
    qa = cloudy / f"{cloudy.name}_QA_PIXEL.TIF"
    with rasterio.open(qa) as src:
        shape = src.shape
    _rewrite_tif(qa, np.full(shape, CLOUD_QA, np.uint16))
    return cloudy


def test_all_cloud_and_outside_scenes_are_per_event_reasons(
    tiny_world: Path, tiny_events: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    from forestnet_model.data import split_indices
    from pipeline.imagery.views import ChipSpec
    from pipeline.ingest.catalog import scene_row, write_index
    from pipeline.ingest.scene_ingest import ingest_scene
    from pipeline.training_set.auxiliary import AuxSources
    from pipeline.training_set.batches import build_chip_batch
    from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, open_chips
    from pipeline.training_set.events import write_events

    # Level-2 products: the chips' default radiometry (surface reflectance).
    clear = products(tiny_world, "L2SP")[0]  # acquired 2017
    cloudy = _all_cloud_copy(products(tiny_world, "L2SP")[1], tmp_path / "inputs")  # 2018
    store = tmp_path / "scenes.zarr"
    rows = []
    for product in (clear, cloudy):
        result = ingest_scene(product, store)
        assert result.status == "ingested"
        rows.append(scene_row(store, result.scene_id, result.status, result.source))
    write_index(store, rows)
    index = read_index(store).set_index("scene_id")
    assert index.loc[cloudy.name, "clear_fraction"] == 0.0  # visible in the index

    good = tiny_events.iloc[[0]].assign(split="train")
    # A loss year whose +/- 5 year window holds only the cloudy 2018 scene, and a region
    # no scene covers (100 E, on the equator).
    cloud_only = good.assign(loss_year=2023, event_id="cloud-only")
    outside = gpd.GeoDataFrame(good.drop(columns="geometry").assign(event_id="outside"),
                               geometry=[box(100.0, 0.0, 100.003, 0.003)], crs="EPSG:4326")
    events = gpd.GeoDataFrame(pd.concat([good, cloud_only, outside], ignore_index=True),
                              crs="EPSG:4326")
    events_path = write_events(events, tmp_path / "events.parquet")
    spec = ChipSpec(max_single_views=2, max_view_cloud=1.0)
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, spec, (), ())
    summary = build_chip_batch(events_path, 0, 3, store, final, spec, AuxSources(), (), ())
    assert summary["failed"] == 2
    chips = open_chips(finalize_chip_store(final, [(0, 3)]))
    assert chips["chip_ok"].values.tolist() == [1, 0, 0]
    reasons = chips.attrs["skipped_events"]
    assert "no usable (cloud-free, non-fill) pixel in any scene" in reasons["cloud-only"]
    assert re.search(r"no scene between \S+ and \S+ covers the grid", reasons["outside"])
    dates = chips["view_date"].values[0].tolist()  # the cloudy scene is never a view
    assert dates[0] == 0 and dates[1] // 10_000 == 2017 and dates[2] == 0
    assert split_indices(chips, "train").tolist() == [0]  # the two never train
    assert np.all(chips["image"].values[1:] == 0)  # nothing guessed for them


# --- areas: empty AOI, unknown province ---------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.mark.parametrize("content", ["no features", "only empty geometries"])
def test_empty_aoi_is_refused_before_anything_runs(
    tiny_world: Path, bundle: Path, tmp_path: Path, content: str
) -> None:
    config = map_ready(tmp_path, tiny_world.parent, bundle)
    aoi = tmp_path / "area.geojson"
    geometry = [] if content == "no features" else [box(0, 0, 0, 0).buffer(0), None]
    gpd.GeoDataFrame({"name": ["x"] * len(geometry)}, geometry=geometry,
                     crs="EPSG:4326").to_file(aoi)
    before = listing(tmp_path)
    text = one_line_error(CliRunner().invoke(app(), [
        "map", "--config", str(config), "--aoi", str(aoi)]))
    assert str(aoi) in text and "holds no geometry" in text
    assert listing(tmp_path) == before  # no maps, no map-runs, no lock file


@pytest.mark.parametrize(("name", "hint"), [
    ("Atlantis", ""), ("kalimantan tenga", "did you mean Kalimantan Tengah")])
def test_unknown_province_is_named(tiny_world: Path, tmp_path: Path, name: str,
                                   hint: str) -> None:
    config = write_tiny_config(tmp_path, tiny_world.parent)
    before = listing(tmp_path)
    text = one_line_error(CliRunner().invoke(app(), [
        "map", "--config", str(config), "--province", "Riau", "--province", name]))
    assert f"unknown province {name!r}" in text
    assert hint in text
    assert listing(tmp_path) == before
