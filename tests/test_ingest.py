"""Tests for scene ingest (real Landsat C2 crops -> Zarr) and the scene index built on it."""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
import zarr
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Point, Polygon, box

from pipeline.ingest.catalog import (
    INDEX_COLUMNS,
    INDEX_NAME,
    failed_row,
    query_scenes,
    read_index,
    scene_row,
    write_index,
)
from pipeline.ingest.landsat import MTLError, usable_mask
from pipeline.ingest.scene_ingest import SceneInputError, ingest_scene

DATA = Path(__file__).parent / "data" / "landsat"
L1_ID = "LC08_L1TP_017051_20151205_20200908_02_T1"
L2_ID = "LC08_L2SP_017051_20151205_20200908_02_T1"
L1_DIR = DATA / f"{L1_ID}-cropped"
L2_DIR = DATA / f"{L2_ID}-cropped"
BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]  # the crops have no coastal B1
L1_FILES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "swir2": "B7"}
L2_FILES = {name: f"SR_{code}" for name, code in L1_FILES.items()}

#: Sample pixels (row, col): corners, centre and a few arbitrary ones.
PIXELS = [(0, 0), (0, 466), (332, 0), (332, 466), (166, 233), (17, 301), (250, 42), (123, 456)]


def _mtl_value(folder: Path, key: str) -> str:
    """A raw value from a product's MTL text, read without the module under test."""
    text = next(folder.glob("*_MTL.txt")).read_text()
    match = re.search(rf"^\s*{key} = \"?([^\"\n]+)\"?\s*$", text, flags=re.MULTILINE)
    assert match, key
    return match.group(1)


def _mtl_float(folder: Path, key: str) -> float:
    return float(_mtl_value(folder, key))


def _raw_dn(folder: Path, product_id: str, suffix: str) -> np.ndarray:
    with rasterio.open(folder / f"{product_id}_{suffix}.TIF") as src:
        return src.read(1)


def _open(store: Path, scene_id: str) -> xr.Dataset:
    return xr.open_zarr(store, group=scene_id, consolidated=False)


def _copy_product(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for path in [dst, *dst.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the test data is read-only
    return dst


def _temporaries(store: Path) -> list[str]:
    return [p.name for p in store.iterdir() if ".tmp-" in p.name] if store.exists() else []


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both real products ingested once into one store, shared read-only by the tests."""
    path = tmp_path_factory.mktemp("ingest") / "scenes.zarr"
    results = [ingest_scene(L1_DIR, path), ingest_scene(L2_DIR, path)]
    assert [(r.scene_id, r.status) for r in results] == [(L1_ID, "ingested"), (L2_ID, "ingested")]
    assert results[0].source == str(L1_DIR)
    return path


# --- Ingest ---------------------------------------------------------------------------------


def test_groups_named_by_product_id(store: Path) -> None:
    root = zarr.open_group(str(store), mode="r")
    assert sorted(root.group_keys()) == [L1_ID, L2_ID]
    assert _temporaries(store) == []


def test_level1_decodes_to_sun_corrected_toa(store: Path) -> None:
    ds = _open(store, L1_ID)
    ms = ds["multispectral"]
    assert list(ms["band"].values) == BANDS
    assert ms.dims == ("band", "y", "x") and ms.shape == (6, 334, 468)
    assert np.issubdtype(ms.dtype, np.floating)
    values = ms.values
    assert np.isfinite(values).all()  # no L1 DN is 0 (fill) in this crop
    assert values.min() >= -1e-6 and values.max() <= 1.5
    sin_sun = math.sin(math.radians(_mtl_float(L1_DIR, "SUN_ELEVATION")))
    for band in BANDS:
        number = L1_FILES[band][1:]
        mult = _mtl_float(L1_DIR, f"REFLECTANCE_MULT_BAND_{number}")
        add = _mtl_float(L1_DIR, f"REFLECTANCE_ADD_BAND_{number}")
        dn = _raw_dn(L1_DIR, L1_ID, L1_FILES[band]).astype(np.float64)
        for row, col in PIXELS:
            expected = (mult * dn[row, col] + add) / sin_sun
            got = float(ms.sel(band=band).values[row, col])
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (band, row, col)


def test_level2_decodes_to_surface_reflectance(store: Path) -> None:
    ms = _open(store, L2_ID)["multispectral"]
    assert list(ms["band"].values) == BANDS
    assert ms.shape == (6, 333, 467)
    for band in BANDS:
        number = L2_FILES[band][-1]
        mult = _mtl_float(L2_DIR, f"REFLECTANCE_MULT_BAND_{number}")
        add = _mtl_float(L2_DIR, f"REFLECTANCE_ADD_BAND_{number}")
        dn = _raw_dn(L2_DIR, L2_ID, L2_FILES[band])
        decoded = ms.sel(band=band).values
        # DN 0 is Collection 2 fill: it decodes to NaN, every other DN to M * DN + A.
        np.testing.assert_array_equal(np.isnan(decoded), dn == 0)
        valid = dn > 0
        np.testing.assert_allclose(decoded[valid], mult * dn[valid] + add, rtol=1e-9, atol=1e-12)
        assert decoded[valid].min() >= -0.2 and decoded[valid].max() <= 1.7
    assert int((_raw_dn(L2_DIR, L2_ID, "SR_B2") == 0).sum()) > 0  # the check above bites


@pytest.mark.parametrize(("scene_id", "folder", "shape"), [
    (L1_ID, L1_DIR, (334, 468)), (L2_ID, L2_DIR, (333, 467)),
])
def test_georeferenced_from_the_mtl(
    store: Path, scene_id: str, folder: Path, shape: tuple[int, int]
) -> None:
    ms = _open(store, scene_id)["multispectral"]
    assert ms.rio.crs.to_epsg() == 32600 + int(_mtl_value(folder, "UTM_ZONE")) == 32616
    # MTL corners are pixel centres: the grid's outer corner is half a cell further out.
    ulx = _mtl_float(folder, "CORNER_UL_PROJECTION_X_PRODUCT")
    uly = _mtl_float(folder, "CORNER_UL_PROJECTION_Y_PRODUCT")
    lrx = _mtl_float(folder, "CORNER_LR_PROJECTION_X_PRODUCT")
    lry = _mtl_float(folder, "CORNER_LR_PROJECTION_Y_PRODUCT")
    assert ms.rio.transform() == Affine(30.0, 0.0, ulx - 15.0, 0.0, -30.0, uly + 15.0)
    assert (ms.sizes["y"], ms.sizes["x"]) == shape
    assert float(ms["x"][0]) == ulx and float(ms["y"][0]) == uly
    assert float(ms["x"][-1]) == lrx and float(ms["y"][-1]) == lry


def test_pan_band_at_15_m_for_level1_only(store: Path) -> None:
    l1 = _open(store, L1_ID)
    pan = l1["pan"]
    dn = _raw_dn(L1_DIR, L1_ID, "B8").astype(np.float64)
    assert pan.dims == ("y_pan", "x_pan") and pan.shape == dn.shape
    np.testing.assert_allclose(np.diff(pan["x_pan"].values), 15.0)
    np.testing.assert_allclose(np.diff(pan["y_pan"].values), -15.0)
    # USGS layout (a full scene has 2n - 1 pan lines): the first pan pixel is centred on
    # the first 30 m pixel, since this crop lost the GeoTIFF's own georeferencing.
    ms = l1["multispectral"]
    assert float(pan["x_pan"][0]) == pytest.approx(float(ms["x"][0]), abs=1e-6)
    assert float(pan["y_pan"][0]) == pytest.approx(float(ms["y"][0]), abs=1e-6)
    sin_sun = math.sin(math.radians(_mtl_float(L1_DIR, "SUN_ELEVATION")))
    mult = _mtl_float(L1_DIR, "REFLECTANCE_MULT_BAND_8")
    add = _mtl_float(L1_DIR, "REFLECTANCE_ADD_BAND_8")
    np.testing.assert_allclose(pan.values, (mult * dn + add) / sin_sun, rtol=1e-9, atol=1e-12)

    assert "pan" not in _open(store, L2_ID)


def test_scene_attributes(store: Path) -> None:
    l1, l2 = _open(store, L1_ID), _open(store, L2_ID)
    assert l1.attrs["product_id"] == L1_ID and l2.attrs["product_id"] == L2_ID
    assert l1.attrs["processing_level"] == "L1TP" and l2.attrs["processing_level"] == "L2SP"
    assert l1.attrs["reflectance"] == "toa_sun_corrected" and l2.attrs["reflectance"] == "surface"
    assert l1.attrs["epsg"] == 32616
    assert (l1.attrs["wrs_path"], l1.attrs["wrs_row"]) == (17, 51)
    assert datetime.fromisoformat(l1.attrs["acquired"]).date().isoformat() == _mtl_value(
        L1_DIR, "DATE_ACQUIRED"
    )
    assert l1.attrs["sun_elevation"] == _mtl_float(L1_DIR, "SUN_ELEVATION")
    assert l1.attrs["cloud_cover"] == _mtl_float(L1_DIR, "CLOUD_COVER")


def test_missing_qa_is_all_clear_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "scenes.zarr"
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.scene_ingest"):
        assert ingest_scene(L2_DIR, store).status == "ingested"
    qa = _open(store, L2_ID)["qa_pixel"]
    assert qa.dims == ("y", "x") and qa.shape == (333, 467)
    assert qa.attrs["qa_source"] == "absent"
    values = qa.values
    assert (values == 1 << 6).all()  # bit 6 "clear" only
    assert usable_mask(values).all()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("QA_PIXEL" in m and "clear" in m for m in messages), messages
    assert any(f"{L2_ID}_SR_B2.TIF" in m and "georeferenced from" in m and "MTL" in m
               for m in messages), messages


def test_rerun_is_skipped(store: Path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in (store / L1_ID).rglob("*") if p.is_file())
    result = ingest_scene(L1_DIR, store)
    assert (result.scene_id, result.status) == (L1_ID, "skipped")
    after = sorted(p.stat().st_mtime_ns for p in (store / L1_ID).rglob("*") if p.is_file())
    assert before == after


def test_overwrite_reingests(tmp_path: Path) -> None:
    store = tmp_path / "scenes.zarr"
    assert ingest_scene(L2_DIR, store).status == "ingested"
    assert ingest_scene(L2_DIR, store, overwrite=True).status == "ingested"
    assert ingest_scene(L2_DIR, store).status == "skipped"
    assert _temporaries(store) == []


def test_half_written_temporary_group_is_not_complete(store: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "scenes.zarr"
    fresh.mkdir()
    shutil.copy(store / "zarr.json", fresh / "zarr.json")
    # A killed run leaves its group under the temporary name, even a finished-looking one.
    shutil.copytree(store / L2_ID, fresh / f".{L2_ID}.tmp-4242-deadbeef")
    assert ingest_scene(L2_DIR, fresh).status == "ingested"
    assert ingest_scene(L2_DIR, fresh).status == "skipped"
    assert _open(fresh, L2_ID)["multispectral"].shape == (6, 333, 467)


def test_group_without_completion_mark_is_redone(store: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "scenes.zarr"
    fresh.mkdir()
    shutil.copy(store / "zarr.json", fresh / "zarr.json")
    shutil.copytree(store / L2_ID, fresh / L2_ID)
    group = zarr.open_group(str(fresh / L2_ID), mode="a")
    del group.attrs["forestnet_complete"]
    assert ingest_scene(L2_DIR, fresh).status == "ingested"
    assert zarr.open_group(str(fresh / L2_ID), mode="r").attrs["forestnet_complete"] is True


def test_truncated_band_is_named(tmp_path: Path) -> None:
    product = _copy_product(L1_DIR, tmp_path)
    b4 = product / f"{L1_ID}_B4.TIF"
    with b4.open("r+b") as f:
        f.truncate(1000)
    store = tmp_path / "scenes.zarr"
    with pytest.raises(SceneInputError) as info:
        ingest_scene(product, store)
    assert str(b4) in str(info.value)
    assert not (store / L1_ID).exists()
    assert _temporaries(store) == []


def test_missing_band_is_named(tmp_path: Path) -> None:
    product = _copy_product(L1_DIR, tmp_path)
    b5 = product / f"{L1_ID}_B5.TIF"
    b5.unlink()
    with pytest.raises(SceneInputError, match="nir") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(b5) in str(info.value)


def test_band_with_wrong_dtype_is_named(tmp_path: Path) -> None:
    product = _copy_product(L2_DIR, tmp_path)
    b6 = product / f"{L2_ID}_SR_B6.TIF"
    data = _raw_dn(L2_DIR, L2_ID, "SR_B6").astype(np.float32)
    b6.unlink()
    with rasterio.open(b6, "w", driver="GTiff", width=467, height=333, count=1,
                       dtype="float32") as dst:
        dst.write(data, 1)
    with pytest.raises(SceneInputError, match="float32") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(b6) in str(info.value)


def test_mtl_of_another_product_band_files(tmp_path: Path) -> None:
    product = _copy_product(L1_DIR, tmp_path)
    (product / f"{L1_ID}_MTL.txt").unlink()
    shutil.copy(L2_DIR / f"{L2_ID}_MTL.txt", product)
    with pytest.raises(SceneInputError) as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    # The L2 MTL names SR_B* files that this L1 folder does not hold.
    assert str(product / f"{L2_ID}_SR_B2.TIF") in str(info.value)


def test_mtl_of_another_product_shape(tmp_path: Path) -> None:
    # Same file names as the MTL expects, but the pixels are the L1 crop (334 x 468).
    product = _copy_product(L1_DIR, tmp_path)
    (product / f"{L1_ID}_MTL.txt").unlink()
    shutil.copy(L2_DIR / f"{L2_ID}_MTL.txt", product)
    for name, suffix in L1_FILES.items():
        (product / f"{L1_ID}_{suffix}.TIF").rename(product / f"{L2_ID}_{L2_FILES[name]}.TIF")
    with pytest.raises(SceneInputError, match="another product") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(product / f"{L2_ID}_SR_B2.TIF") in str(info.value)


def test_garbled_mtl_is_named(tmp_path: Path) -> None:
    product = _copy_product(L1_DIR, tmp_path)
    mtl = product / f"{L1_ID}_MTL.txt"
    mtl.write_text(mtl.read_text()[:3000])
    with pytest.raises(MTLError) as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(mtl) in str(info.value)


def test_folder_without_mtl(tmp_path: Path) -> None:
    product = _copy_product(L1_DIR, tmp_path)
    (product / f"{L1_ID}_MTL.txt").unlink()
    with pytest.raises(MTLError, match="no \\*_MTL.txt") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(product) in str(info.value)


# --- Scene index -------------------------------------------------------------------------------


def _scene_quad(folder: Path) -> Polygon:
    """The full scene's footprint from the MTL's CORNER_*_LAT/LON_PRODUCT values."""
    return Polygon([
        (
            _mtl_float(folder, f"CORNER_{c}_LON_PRODUCT"),
            _mtl_float(folder, f"CORNER_{c}_LAT_PRODUCT"),
        )
        for c in ("UL", "UR", "LR", "LL")
    ])


def test_scene_row_footprint(store: Path) -> None:
    row = scene_row(store, L1_ID, "ingested", source=str(L1_DIR))
    assert set(INDEX_COLUMNS) | {"footprint"} == set(row)
    assert row["scene_id"] == L1_ID and row["product"] == "LC08" and row["level"] == "L1TP"
    assert (row["path"], row["row"], row["epsg"]) == (17, 51, 32616)
    assert row["acquired"] == pd.Timestamp("2015-12-05T16:06:06.877338")
    assert row["status"] == "ingested" and row["error"] == "" and row["source"] == str(L1_DIR)

    footprint = row["footprint"]
    # The crop lies inside the full scene whose corners the MTL gives in lon/lat...
    assert _scene_quad(L1_DIR).contains(footprint)
    # ...and its corners are the grid's outer corners (MTL pixel centres +- 15 m) in lon/lat.
    to_lonlat = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)
    ulx = _mtl_float(L1_DIR, "CORNER_UL_PROJECTION_X_PRODUCT") - 15
    uly = _mtl_float(L1_DIR, "CORNER_UL_PROJECTION_Y_PRODUCT") + 15
    lrx = _mtl_float(L1_DIR, "CORNER_LR_PROJECTION_X_PRODUCT") + 15
    lry = _mtl_float(L1_DIR, "CORNER_LR_PROJECTION_Y_PRODUCT") - 15
    outer = [(ulx, uly), (lrx, uly), (lrx, lry), (ulx, lry)]
    corners = [to_lonlat.transform(x, y) for x, y in outer]
    for lon, lat in corners:
        assert footprint.exterior.distance(Point(lon, lat)) < 1e-7
    assert footprint.area == pytest.approx(Polygon(corners).area, rel=1e-6)
    centre = footprint.centroid
    assert (centre.x, centre.y) == pytest.approx((-86.53, 12.43), abs=0.01)


def test_scene_row_in_a_fresh_process(store: Path) -> None:
    # catalog alone (no ingest import) must be able to read a group's grid.
    code = (
        "import sys; from pipeline.ingest.catalog import scene_row; "
        "print(scene_row(sys.argv[1], sys.argv[2], 'ingested')['epsg'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), L1_ID], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[1], timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "32616"


@pytest.fixture(scope="module")
def rows(store: Path) -> dict[str, dict]:
    return {sid: scene_row(store, sid, "ingested") for sid in (L1_ID, L2_ID)}


def test_index_round_trip(rows: dict[str, dict], tmp_path: Path) -> None:
    path = write_index(tmp_path, [rows[L2_ID], rows[L1_ID]])
    assert path == tmp_path / INDEX_NAME
    assert [p.name for p in tmp_path.iterdir()] == [INDEX_NAME]  # no temporaries left
    index = read_index(tmp_path)
    assert index.crs.to_epsg() == 4326 and index.geometry.name == "footprint"
    assert list(index["scene_id"]) == [L1_ID, L2_ID]  # sorted by scene_id
    assert set(INDEX_COLUMNS) <= set(index.columns)
    for _, got in index.iterrows():
        want = rows[got["scene_id"]]
        assert got["footprint"].equals_exact(want["footprint"], 1e-12)
        assert got["acquired"] == want["acquired"]
        assert (got["level"], got["epsg"], got["status"]) == (want["level"], 32616, "ingested")
        assert got["cloud_cover"] == want["cloud_cover"]


def test_write_index_replaces_rows_with_the_same_scene_id(
    rows: dict[str, dict], tmp_path: Path
) -> None:
    write_index(tmp_path, [rows[L1_ID], rows[L2_ID]])
    write_index(tmp_path, [{**rows[L1_ID], "status": "skipped", "cloud_cover": 12.5}])
    index = read_index(tmp_path).set_index("scene_id")
    assert sorted(index.index) == [L1_ID, L2_ID]
    assert index.loc[L1_ID, "status"] == "skipped"
    assert index.loc[L1_ID, "cloud_cover"] == 12.5
    assert index.loc[L2_ID, "status"] == "ingested"
    assert index.loc[L2_ID, "cloud_cover"] == rows[L2_ID]["cloud_cover"]


def test_failed_row_is_recorded(rows: dict[str, dict], tmp_path: Path) -> None:
    bad_id = "LC08_L1TP_118062_20160101_20200907_02_T1"
    write_index(tmp_path, [failed_row(bad_id, "/data/bad", "B4.TIF: truncated")])
    write_index(tmp_path, [rows[L1_ID]])
    index = read_index(tmp_path).set_index("scene_id")
    assert sorted(index.index) == sorted([bad_id, L1_ID])
    assert index.loc[bad_id, "status"] == "failed"
    assert index.loc[bad_id, "error"] == "B4.TIF: truncated"
    assert index.loc[bad_id, "source"] == "/data/bad"
    assert index.geometry[bad_id] is None or index.geometry[bad_id].is_empty
    # A failed scene is never offered to queries, wherever one looks.
    assert list(query_scenes(index.reset_index(), box(-180, -90, 180, 90))["scene_id"]) == [L1_ID]
    # A later success replaces the failure.
    write_index(tmp_path, [{**rows[L1_ID], "scene_id": bad_id}])
    assert read_index(tmp_path).set_index("scene_id").loc[bad_id, "status"] == "ingested"


def test_read_index_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="forestnet ingest"):
        read_index(tmp_path)


def test_query_scenes(rows: dict[str, dict], tmp_path: Path) -> None:
    later_clearer = {**rows[L2_ID], "acquired": pd.Timestamp("2016-06-01"), "cloud_cover": 10.0}
    write_index(tmp_path, [rows[L1_ID], later_clearer, failed_row("LC08_x", "/x", "boom")])
    index = read_index(tmp_path)
    inside = Point(-86.53, 12.43).buffer(0.01)
    far_away = Point(113.55, -1.95).buffer(0.5)  # Kalimantan
    # Only the L1 crop reaches this far west (its UL corner is 30 m west of the L2 one).
    l1_only = box(-86.5954, 12.40, -86.5952, 12.41)

    def ids(**kwargs: object) -> list[str]:
        return list(query_scenes(index, **kwargs)["scene_id"])  # type: ignore[arg-type]

    assert ids(geometry=inside) == [L2_ID, L1_ID]  # clearest first
    assert ids(geometry=far_away) == []
    assert ids(geometry=l1_only) == [L1_ID]
    assert ids(geometry=inside, start=datetime(2016, 1, 1)) == [L2_ID]
    assert ids(geometry=inside, end=datetime(2015, 12, 31)) == [L1_ID]
    assert ids(geometry=inside, start=datetime(2015, 12, 5), end=datetime(2015, 12, 6)) == [L1_ID]
    assert ids(geometry=inside, max_cloud_cover=20.0) == [L2_ID]
    assert ids(geometry=inside, max_cloud_cover=61.45) == [L2_ID, L1_ID]
    assert ids(geometry=inside, max_cloud_cover=5.0) == []
