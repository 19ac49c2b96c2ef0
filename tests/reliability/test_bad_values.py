"""R3, bad-input catalogue (2 of 3): bad values inside readable files.

Catalogue (case: expected behaviour -> test):

- NaN in an aux raster: no data; NaN in chips.zarr, left out of the region and
  normalisation statistics, 0 in the model input
  -> test_nan_in_an_aux_raster_is_no_data_end_to_end
- inf in an aux raster: refused naming the file ("contains infinite values"); exit 2 when
  building the training set -> test_inf_in_an_aux_raster_is_refused_naming_the_file; in
  mapping, the tiles reading it fail with that error (per-tile rows, exit 1), the others
  go on -> test_inf_in_an_aux_raster_fails_its_map_tile_with_the_reason
- inf in a ForestNet release aux array: read as no data, with a note naming the file; NaN
  in the store, finite normalisation -> test_inf_in_release_aux_is_no_data_with_a_note;
  whatever the source, the chip store writes non-finite aux values as NaN
  -> test_chip_store_writes_non_finite_aux_as_no_data
- lossyear of another dtype (`map`, `build-training-set`): exit 2, one line naming the
  file, "lossyear dtype X, expected uint8"; nothing written
  -> test_lossyear_of_another_dtype_is_refused
- vector events with invalid, empty or no geometry: each refused, naming the file, the
  feature and the reason; the others kept -> test_bad_vector_features_are_refused_by_name;
  when none is left: an error naming the file (exit 2), before events.parquet is written
  -> test_no_usable_vector_event_stops_the_training_set
- ForestNet CSV with unknown labels: exit 2, one line naming the CSV, the row and the
  label; nothing written -> test_unknown_csv_label_is_refused_before_anything_runs; the
  release importer names the CSV and row too -> test_unknown_release_label_names_the_csv
"""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import typer
from shapely.geometry import Polygon, box
from typer.testing import CliRunner

from flows.cli.app import _guard, app
from pipeline.imagery.reproject import RasterInputError
from pipeline.imagery.views import CHIP_BANDS, ChipSpec
from pipeline.training_set.auxiliary import AuxSources
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, open_chips
from pipeline.training_set.events import EventInputError, write_events
from tests.reliability.bad_input_helpers import (
    listing,
    map_ready,
    one_line_error,
    save_random_bundle,
)

AUX = ("elevation", "slope")
HOLE = 12  # half-width of the bad patch, in DEM pixels


def _dem_with_patch(world: Path, lon: float, lat: float, value: float, out: Path) -> Path:
    """The world's DEM as float32 (no nodata) with ``value`` in a patch around (lon, lat)."""
    with rasterio.open(world / "aux" / "srtm_dem.tif") as src:
        data = src.read(1).astype(np.float32)
        profile = {**src.profile, "dtype": "float32", "nodata": None}
        row, col = src.index(lon, lat)
    data[row - HOLE:row + HOLE, col - HOLE:col + HOLE] = value
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
    return out


def _anchor(events: gpd.GeoDataFrame) -> tuple[float, float]:
    point = events.geometry.iloc[0].representative_point()
    return point.x, point.y


def test_nan_in_an_aux_raster_is_no_data_end_to_end(
    tiny_world: Path, tiny_scene_store: Path, tiny_events: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    from forestnet_model.data import (
        ChipDataset,
        normalisation_stats,
        scalar_stats,
        split_indices,
    )
    from forestnet_model.model_inputs import normalise_scalars
    from pipeline.training_set.batches import build_chip_batch

    events = tiny_events.iloc[:2].assign(split="train")
    dem = _dem_with_patch(tiny_world.parent, *_anchor(events), np.nan, tmp_path / "dem.tif")
    events_path = write_events(events, tmp_path / "events.parquet")
    spec = ChipSpec(max_single_views=0)
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, spec, AUX, ("elevation_mean",))
    build_chip_batch(events_path, 0, 2, tiny_scene_store, final, spec, AuxSources(dem=dem),
                     AUX, ("elevation_mean",))
    chips = open_chips(finalize_chip_store(final, [(0, 2)]))

    elevation = chips["aux"].sel(aux_band="elevation").values[0]
    hole = np.isnan(elevation)
    assert 0 < hole.sum() < hole.size / 4  # the patch, and only the patch, is no data
    assert not np.isinf(chips["aux"].values).any()
    # Event 0's region lies in the patch: its region mean is no data too, never a fill value.
    scalars = chips["aux_scalar"].values
    inside = chips["loss_mask"].values[0].astype(bool)
    assert np.isnan(elevation[inside]).all() and np.isnan(scalars[0, 0])
    assert np.isfinite(scalars[1, 0])
    scaled = normalise_scalars(scalars, scalar_stats(scalars))
    assert scaled[0, 0] == 0.0 and np.isfinite(scaled).all()
    stats = normalisation_stats(chips, split_indices(chips, "train"), CHIP_BANDS, AUX)
    assert np.isfinite(stats["mean"]).all() and np.isfinite(stats["std"]).all()

    dataset = ChipDataset(str(final), "train", CHIP_BANDS, AUX, stats, train=False)
    image = dataset[0]["image"].numpy()  # padded 332 -> 352: 10 px each side
    assert np.isfinite(image).all()
    channel = image[len(CHIP_BANDS), 10:342, 10:342]
    assert np.all(channel[hole] == 0.0) and np.any(channel[~hole] != 0.0)


def test_inf_in_an_aux_raster_is_refused_naming_the_file(
    tiny_world: Path, tiny_events: gpd.GeoDataFrame, tmp_path: Path, capsys
) -> None:
    from pipeline.imagery.views import chip_geobox, rasterize_region
    from pipeline.training_set.auxiliary import aux_for_chip

    dem = _dem_with_patch(tiny_world.parent, *_anchor(tiny_events), np.inf, tmp_path / "dem.tif")
    geometry = tiny_events.geometry.iloc[0]
    geobox = chip_geobox(geometry, ChipSpec())
    region = gpd.GeoSeries([geometry], crs=4326).to_crs(geobox.crs.to_wkt()).iloc[0]
    mask = rasterize_region(region, geobox)
    composite = np.zeros((len(CHIP_BANDS), *geobox.shape), np.float32)

    def build() -> None:
        aux_for_chip(geobox, region, mask, composite, AuxSources(dem=dem), AUX, ())

    with pytest.raises(RasterInputError, match="contains infinite values") as info:
        build()
    assert str(dem) in str(info.value)
    # Raised in `build-training-set`, the CLI reports it as bad input: one line, exit 2.
    with pytest.raises(typer.Exit) as exit_info:
        _guard(build)
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(dem) in err and "infinite" in err


def test_inf_in_an_aux_raster_fails_its_map_tile_with_the_reason(
    tiny_world: Path, tiny_scene_store: Path, tiny_events: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    from pipeline.core.tile_lattice import MapTile, tile_indices
    from pipeline.mapping.tile_inputs import prepare_tiles

    lon, lat = _anchor(tiny_events)
    dem = _dem_with_patch(tiny_world.parent, lon, lat, np.inf, tmp_path / "dem.tif")
    zone, row, col = (int(v[0]) for v in tile_indices(np.array([lon]), np.array([lat])))
    tile = MapTile(zone, row, col).tile_id
    year = int(tiny_events["loss_year"].iloc[0])
    lossyear = tiny_world.parent / "gfc" / "lossyear.tif"
    args = (lossyear, [year], tiny_scene_store, ChipSpec(), CHIP_BANDS, ("elevation",))
    (bad,) = prepare_tiles([tile], *args, AuxSources(dem=dem))
    assert bad.error.startswith("RasterInputError") and str(dem) in bad.error
    assert "contains infinite values" in bad.error and bad.samples == []
    (good,) = prepare_tiles([tile], *args, AuxSources())  # the same tile without the DEM
    assert good.error == "" and good.samples


def test_inf_in_release_aux_is_no_data_with_a_note(tmp_path: Path) -> None:
    from forestnet_model.data import normalisation_stats
    from pipeline.training_set.batches import import_release_batch
    from pipeline.training_set.release_import import plan_release
    from tests.release_fixture import EXAMPLES, write_release

    release = write_release(tmp_path, EXAMPLES[:2])
    altitude = release / "examples" / EXAMPLES[0].folder / "auxiliary" / "altitude.npy"
    values = np.load(altitude)
    values[:20, :30] = np.inf
    values[-5:, -5:] = -np.inf
    np.save(altitude, values)
    spec = ChipSpec(max_single_views=1)
    events, problems = plan_release(str(release), spec)
    assert problems == []
    events_path = write_events(events, tmp_path / "events.parquet")
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, spec, ("elevation",), ("elevation_mean",))
    result = import_release_batch(str(release), events_path, 0, 2, final, spec, ("elevation",),
                                  ("elevation_mean",))
    assert "auxiliary/altitude.npy: 625 infinite values read as no data" in result["notes"]
    chips = open_chips(finalize_chip_store(final, [(0, 2)]))
    first = int(np.flatnonzero(np.isclose(chips["lat"].values, EXAMPLES[0].lat))[0])
    stored = chips["aux"].values[first, 0]
    assert np.isnan(stored).sum() == 625 and not np.isinf(chips["aux"].values).any()
    assert chips["aux_scalar"].values[first, 0] == pytest.approx(120.0)
    stats = normalisation_stats(chips, np.arange(2), CHIP_BANDS, ("elevation",))
    assert np.isfinite(stats["mean"]).all() and stats["mean"][-1] == pytest.approx(120.5, abs=0.01)


def test_chip_store_writes_non_finite_aux_as_no_data(tiny_events: gpd.GeoDataFrame,
                                                     tmp_path: Path) -> None:
    from pipeline.imagery.views import EventChip, chip_geobox
    from pipeline.training_set.chip_store import write_chip_batch

    events = tiny_events.iloc[:1]
    spec = ChipSpec(size=32, max_single_views=0)
    geom = events.geometry.iloc[0]
    chip = EventChip(chip_geobox(geom, spec), np.full((1, len(CHIP_BANDS), 32, 32), 0.1,
                                                      np.float32),
                     ["composite"], [0.0], ["scene"], np.ones((32, 32), np.uint8), geom)
    aux = np.full((1, 32, 32), 5.0, np.float32)
    aux[0, :4], aux[0, -4:] = np.inf, -np.inf
    final = tmp_path / "chips.zarr"
    init_chip_store(final, events, spec, ("elevation",), ("elevation_mean",))
    write_chip_batch(final, 0, [chip], [aux], [np.array([np.inf], np.float32)])
    chips = open_chips(finalize_chip_store(final, [(0, 1)]))
    stored = chips["aux"].values[0, 0]
    assert np.isnan(stored[:4]).all() and np.isnan(stored[-4:]).all()
    assert (stored[4:-4] == 5.0).all() and np.isnan(chips["aux_scalar"].values[0, 0])


# --- files the CLI checks before it starts: lossyear and event CSVs ----------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.mark.parametrize("verb", ["map", "build-training-set"])
@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_lossyear_of_another_dtype_is_refused(
    tiny_world: Path, bundle: Path, tmp_path: Path, verb: str, dtype: str
) -> None:
    lossyear = tmp_path / "lossyear.tif"
    with rasterio.open(tiny_world.parent / "gfc" / "lossyear.tif") as src:
        data, profile = src.read(1), {**src.profile, "dtype": dtype}
    with rasterio.open(lossyear, "w", **profile) as dst:
        dst.write(data.astype(dtype), 1)
    config = map_ready(tmp_path, tiny_world.parent, bundle, inputs={"lossyear": str(lossyear)})
    before = listing(tmp_path)
    text = one_line_error(CliRunner().invoke(app, [verb, "--config", str(config)]))
    assert f"{lossyear}: lossyear dtype {dtype}, expected uint8" in text
    assert listing(tmp_path) == before


BOWTIE = Polygon([(113.50, -1.95), (113.51, -1.94), (113.51, -1.95), (113.50, -1.94)])
GOOD = box(113.52, -1.96, 113.525, -1.955)


def _vector_config(path: Path):
    from flows.config.schema import PipelineConfig

    return PipelineConfig.model_validate({"events": {
        "source": "vector", "vector": {"path": str(path), "year_column": "year"}}})


def test_bad_vector_features_are_refused_by_name(tmp_path: Path) -> None:
    from tests.tiny_config import config_events

    path = tmp_path / "events.gpkg"
    gpd.GeoDataFrame({"year": [2015, 2015, 2015, 2014]},
                     geometry=[BOWTIE, Polygon(), None, GOOD], crs="EPSG:4326").to_file(path)
    events, problems = config_events(_vector_config(path))
    assert len(events) == 1 and events.geometry.iloc[0].equals(GOOD)
    assert problems == [
        f"{path}, feature 1: invalid geometry (Self-intersection[113.505 -1.945])",
        f"{path}, feature 2: empty geometry",
        f"{path}, feature 3: no geometry",
    ]


def test_no_usable_vector_event_stops_the_training_set(tmp_path: Path, capsys) -> None:
    from tests.tiny_config import config_events

    path = tmp_path / "events.gpkg"
    gpd.GeoDataFrame({"year": [2015, 2015]}, geometry=[BOWTIE, Polygon()],
                     crs="EPSG:4326").to_file(path)
    with pytest.raises(EventInputError) as info:
        config_events(_vector_config(path))
    message = str(info.value)
    assert message.startswith(f"{path}: no usable vector events (2 refused: ")
    assert "feature 1: invalid geometry" in message and "feature 2: empty geometry" in message
    with pytest.raises(typer.Exit) as exit_info:  # how `build-training-set` reports it
        _guard(lambda: config_events(_vector_config(path)))
    assert exit_info.value.exit_code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _csvs_with_label(world: Path, folder: Path, label: str) -> Path:
    shutil.copytree(world / "events", folder)
    table = pd.read_csv(folder / "val.csv")
    table.loc[1, "label"] = label
    table.to_csv(folder / "val.csv", index=False)
    return folder / "val.csv"


@pytest.mark.parametrize("label", ["Banana farm", "oil palm"])
def test_unknown_csv_label_is_refused_before_anything_runs(
    tiny_world: Path, bundle: Path, tmp_path: Path, label: str
) -> None:
    csv = _csvs_with_label(tiny_world.parent, tmp_path / "events", label)
    config = map_ready(tmp_path, tiny_world.parent, bundle,
                       inputs={"events_csv_dir": str(csv.parent)})
    before = listing(tmp_path)
    text = one_line_error(CliRunner().invoke(app, ["build-training-set", "--config",
                                                   str(config)]))
    assert f"{csv}, row 3: " in text and repr(label) in text
    assert listing(tmp_path) == before  # no events.parquet, no chips.zarr


def test_unknown_release_label_names_the_csv(tmp_path: Path) -> None:
    from pipeline.training_set.release_import import plan_release
    from tests.release_fixture import EXAMPLES, write_release

    release = write_release(tmp_path, EXAMPLES[:2])
    table = pd.read_csv(release / "train.csv")
    table.loc[0, "label"] = "Banana farm"
    table.to_csv(release / "train.csv", index=False)
    with pytest.raises(EventInputError) as info:
        plan_release(str(release), ChipSpec())
    assert f"{release / 'train.csv'}, row 2: " in str(info.value)
    assert "'Banana farm'" in str(info.value)
