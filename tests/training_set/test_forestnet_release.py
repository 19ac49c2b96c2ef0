"""The ForestNet release importer and the safe geometry unpickler."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import LinearRing, MultiPolygon, Point, Polygon
from typer.testing import CliRunner

from flows.cli.app import app
from forestnet_model.data import ChipDataset
from pipeline.core.grid import centred_geobox
from pipeline.imagery.views import CHIP_BANDS, ChipSpec
from pipeline.training_set.auxiliary import AUX_BANDS, AUX_SCALARS, MAX_DISTANCE_KM
from pipeline.training_set.batches import import_release_batch, plan_batches
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, open_chips
from pipeline.training_set.events import write_events
from pipeline.training_set.release_aux import NCEP_OTHER
from pipeline.training_set.release_import import plan_release
from pipeline.training_set.release_reader import ReleaseError, ReleaseReader
from pipeline.training_set.safe_pickle import UnsafePickleError, loads_geometry
from tests.release_fixture import (
    EXAMPLES,
    pixels,
    street_km,
    temperature_c,
    write_release,
    zip_release,
)
from tests.tiny_config import write_tiny_config

SPEC = ChipSpec(max_single_views=2)


def _import(release: Path, out: Path) -> tuple[object, list[str]]:
    """Plan + batches + finalize with the plain functions (no cluster)."""
    events, problems = plan_release(str(release), SPEC)
    events_path = write_events(events, out.with_name("events.parquet"))
    init_chip_store(out, events, SPEC, attrs={"source": "forestnet_release"})
    batches = plan_batches(len(events), 3)
    for a, b in batches:
        import_release_batch(str(release), events_path, a, b, out, SPEC)
    finalize_chip_store(out, batches)
    return open_chips(out), problems


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def imported(release: Path, tmp_path_factory: pytest.TempPathFactory):
    return _import(release, tmp_path_factory.mktemp("imported") / "chips.zarr")


def _by_id(ds, ex) -> int:
    hits = np.flatnonzero(np.isclose(ds["lat"].values, ex.lat) & np.isclose(ds["lon"].values,
                                                                             ex.lon))
    assert len(hits) == 1
    return int(hits[0])


# --- the unpickler ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_shapely_pickles_round_trip(protocol: int) -> None:
    for geom in (EXAMPLES[0].polygon, EXAMPLES[1].polygon, Point(1, 2),
                 LinearRing([(0, 0), (1, 0), (1, 1)])):
        back = loads_geometry(pickle.dumps(geom, protocol=protocol))
        assert back.geom_type == geom.geom_type and back.equals(geom)


def test_shapely_1_pickles_are_read() -> None:
    # shapely 1.x pickled as Polygon() + __setstate__(WKB): the 2020 release's form.
    wkb = shapely.to_wkb(EXAMPLES[0].polygon)
    legacy = (b"\x80\x03cshapely.geometry.polygon\nPolygon\nq\x00)Rq\x01B"
              + struct.pack("<I", len(wkb)) + wkb + b"b.")
    assert loads_geometry(legacy).equals(EXAMPLES[0].polygon)


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / "forest_loss_region.pkl"
    path.write_bytes(pickle.dumps(_Evil(target)))
    with pytest.raises(UnsafePickleError, match="refused global") as info:
        loads_geometry(path.read_bytes(), str(path))
    assert str(path) in str(info.value)
    assert not target.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps({"not": "a geometry"}),
    pickle.dumps(np.zeros(3)),  # numpy's reconstructor is not allowed either
    b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R.",
    b"not a pickle at all",
])
def test_other_pickles_are_refused(payload: bytes) -> None:
    with pytest.raises(UnsafePickleError, match="x.pkl"):
        loads_geometry(payload, "x.pkl")


# --- import -------------------------------------------------------------------------------------


def test_every_example_is_imported_with_labels_merged_and_split_kept(imported) -> None:
    ds, problems = imported
    assert problems == []
    assert ds["image"].shape == (4, 3, len(CHIP_BANDS), 332, 332)
    assert ds.attrs["source"] == "forestnet_release"
    assert ds["chip_ok"].values.tolist() == [1, 1, 1, 1]
    for ex in EXAMPLES:
        i = _by_id(ds, ex)
        assert str(ds["label"].values[i]) == ex.label
        assert str(ds["merged_label"].values[i]) == ex.merged_label
        assert str(ds["split"].values[i]) == ex.split
        assert int(ds["loss_year"].values[i]) == ex.year
        box = centred_geobox(ex.lon, ex.lat)
        assert int(ds["epsg"].values[i]) == box.crs.epsg
        np.testing.assert_allclose(ds["transform"].values[i], tuple(box.affine)[:6])
    # The lon_lat folder was found from the CSV's lat/lon.
    assert EXAMPLES[1].folder.startswith("111.")


def test_loss_mask_is_the_rasterised_pixel_polygon(imported) -> None:
    ds, _ = imported
    rows, cols = np.mgrid[0:332, 0:332]
    for ex in EXAMPLES:
        inside = shapely.contains_xy(ex.polygon, cols, rows)  # pixel (c, r) at its centre
        mask = ds["loss_mask"].values[_by_id(ds, ex)].astype(bool)
        assert mask.sum() > 50
        np.testing.assert_array_equal(mask, inside)


def reflectance(png: np.ndarray, npy: np.ndarray) -> np.ndarray:
    """The release's display values (y, x, 3) as (6, y, x) surface reflectance."""
    return np.concatenate([png.transpose(2, 0, 1) * 0.4 / 255, npy.transpose(2, 0, 1) / 255])


def test_images_views_and_dates(imported) -> None:
    ds, _ = imported
    ex = EXAMPLES[2]  # three scenes, clouds 1, 44, 20: the two least cloudy are kept
    i = _by_id(ds, ex)
    k = EXAMPLES.index(ex)
    image = ds["image"].values[i]
    np.testing.assert_allclose(image[0], reflectance(pixels(100 * k), pixels(100 * k + 50)),
                               atol=6e-5)
    assert ds["view_date"].values[i].tolist() == [0, 20180203, 20160708]
    np.testing.assert_allclose(ds["view_cloud_fraction"].values[i], [0.105, 0.01, 0.2],
                               rtol=1e-5)
    np.testing.assert_allclose(image[2], reflectance(pixels(100 * k + 3), pixels(100 * k + 53)),
                               atol=6e-5)  # the 2016 scene
    # Display scaling by band group: visible 0-255 is 0-0.4, infrared 0-255 is 0-1.
    assert image[:, :3].max() == pytest.approx(0.4, abs=1e-4)
    assert image[:, 3:].max() == pytest.approx(1.0, abs=1e-4)
    # No scenes: only the composite.
    last = _by_id(ds, EXAMPLES[3])
    assert ds["view_date"].values[last].tolist() == [0, 0, 0]


def test_aux_from_the_release_files(imported) -> None:
    ds, _ = imported
    assert list(ds["aux_band"].values) == list(AUX_BANDS)
    assert list(ds["feature"].values) == list(AUX_SCALARS)
    for k, ex in enumerate(EXAMPLES):
        i = _by_id(ds, ex)
        aux = dict(zip(AUX_BANDS, ds["aux"].values[i], strict=True))
        np.testing.assert_allclose(aux["elevation"], 120.0 + k)
        np.testing.assert_allclose(aux["slope"], 2.5)
        np.testing.assert_allclose(aux["aspect"], 270.0)
        assert np.isnan(aux["treecover2000"]).all() and np.isnan(aux["peat"]).all()
        assert np.isfinite(aux["ndvi"]).mean() > 0.99
        s = dict(zip(AUX_SCALARS, ds["aux_scalar"].values[i], strict=True))
        # Geodesic km from the CSV lat/lon to osm.json's places (7-decimal lat/lon strings).
        assert s["street_dist_km"] == pytest.approx(street_km(k), abs=1e-3)
        assert s["city_dist_km"] == MAX_DISTANCE_KM  # 80 km, capped like built chips
        assert s["peat_fraction"] == float(k % 2 == 0)  # peat.json's true/false
        assert s["temperature_c"] == pytest.approx(temperature_c(k))  # ncep.npy's tavg
        assert s["elevation_mean"] == pytest.approx(120.0 + k)
        assert np.isnan(s["precipitation_mm"]) and np.isnan(s["treecover2000_mean"])


def test_zip_imports_the_same(release: Path, imported, tmp_path: Path) -> None:
    archive = zip_release(release, tmp_path / "ForestNetDataset.zip")
    ds, problems = _import(archive, tmp_path / "chips.zarr")
    assert problems == []
    folder_ds, _ = imported
    for name in ("image", "loss_mask", "aux", "aux_scalar", "view_date"):
        np.testing.assert_array_equal(ds[name].values, folder_ds[name].values)
    assert list(ds["event_id"].values) == list(folder_ds["event_id"].values)


def test_missing_images_and_folders_are_reported_the_rest_imported(
    release: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "ForestNetDataset"
    shutil.copytree(release, copy)
    no_image = copy / "examples" / EXAMPLES[0].folder / "images" / "visible" / "composite.png"
    no_image.unlink()
    shutil.rmtree(copy / "examples" / EXAMPLES[3].folder)
    ds, problems = _import(copy, tmp_path / "chips.zarr")
    assert len(problems) == 1 and f"{EXAMPLES[3].lat}_{EXAMPLES[3].lon}" in problems[0]
    assert "no example folder" in problems[0]
    assert ds.sizes["event"] == 3
    bad = _by_id(ds, EXAMPLES[0])
    assert ds["chip_ok"].values.tolist().count(0) == 1 and ds["chip_ok"].values[bad] == 0
    reason = ds.attrs["skipped_events"][str(ds["event_id"].values[bad])]
    assert "images/visible/composite.png" in reason
    assert ds["loss_mask"].values[bad].sum() > 0  # the event itself is still described


def test_malicious_pickle_in_the_release_is_left_out(release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ForestNetDataset"
    shutil.copytree(release, copy)
    target = tmp_path / "created-by-pickle.txt"
    pkl = copy / "examples" / EXAMPLES[2].folder / "forest_loss_region.pkl"
    pkl.write_bytes(pickle.dumps(_Evil(target)))
    events, problems = plan_release(str(copy), SPEC)
    assert len(events) == 3 and len(problems) == 1
    assert str(pkl) in problems[0] and "refused global" in problems[0]
    assert not target.exists()


def test_wrong_release_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="train.csv"):
        ReleaseReader(tmp_path)
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ReleaseError, match="x.zip"):
        ReleaseReader(tmp_path / "x.zip")


@pytest.mark.slow  # starts Prefect's temporary API and a Dask cluster
def test_cli_imports_a_zip_that_training_reads(release: Path, tmp_path: Path) -> None:
    archive = zip_release(release, tmp_path / "ForestNetDataset.zip")
    config = write_tiny_config(tmp_path, tmp_path / "world")
    out = tmp_path / "imported.zarr"
    result = CliRunner().invoke(app, ["import-forestnet", str(archive), "--out", str(out),
                                      "--config", str(config), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert f"chip store: {out}" in result.stdout
    assert "4 imported, 0 without images, 0 left out" in result.stdout
    record = json.loads((out / "run.json").read_text())
    assert record["verb"] == "import-forestnet" and record["release"] == str(archive)
    assert record["counts"] == {"imported": 4, "failed": 0, "left_out": 0, "reused_batches": 0}
    assert record["input_scene_ids"] == [] and record["started"] < record["ended"]
    # Reported once, with its count: gain.npy, and ncep.npy's values other than tavg.
    assert record["unknown_aux_files"] == {"gain.npy": 4, f"ncep.npy ({NCEP_OTHER})": 4}
    assert record["unreadable_aux_values"] == {}
    ds = open_chips(out)
    assert ds.attrs["radiometry"] == "surface"
    assert ds.sizes["view"] == 3  # the config's max_single_views (2) + the composite
    stats = {"mean": [0.0] * 4, "std": [1.0] * 4}
    train = ChipDataset(str(out), "train", ("red", "green", "blue", "nir"), (), stats,
                        train=False)
    assert len(train) == 2
    item = train[0]
    assert item["image"].shape == (4, 352, 352) and item["mask"].sum() > 0


def test_cli_names_a_wrong_release_path(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "world")
    result = CliRunner().invoke(app, ["import-forestnet", str(tmp_path), "--config",
                                      str(config)])
    assert result.exit_code == 2 and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_multipolygon_example_keeps_both_parts(imported) -> None:
    ds, _ = imported
    mask = ds["loss_mask"].values[_by_id(ds, EXAMPLES[1])]
    assert isinstance(EXAMPLES[1].polygon, MultiPolygon)
    assert mask[130:150, 125:140].any() and mask[185:200, 185:195].any()
    assert not isinstance(EXAMPLES[0].polygon, MultiPolygon | LinearRing)
    assert isinstance(EXAMPLES[0].polygon, Polygon)
