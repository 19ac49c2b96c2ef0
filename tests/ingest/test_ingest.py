"""Tests for scene ingest (real Landsat C2 crops -> Zarr) ."""

from __future__ import annotations

import logging
import math
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import zarr
from affine import Affine

from pipeline.ingest.landsat import MTLError, usable_mask
from pipeline.ingest.scene_ingest import SceneInputError, ingest_scene
from tests.ingest.real_crops import (
    BANDS,
    L1_DIR,
    L1_FILES,
    L1_ID,
    L2_DIR,
    L2_FILES,
    L2_ID,
    PIXELS,
    copy_product,
    mtl_float,
    mtl_value,
    open_scene,
    raw_dn,
    temporaries,
)

# --- Ingest ---------------------------------------------------------------------------------


def test_groups_named_by_product_id(store: Path) -> None:
    root = zarr.open_group(str(store), mode="r")
    assert sorted(root.group_keys()) == [L1_ID, L2_ID]
    assert temporaries(store) == []


def test_level1_decodes_to_sun_corrected_toa(store: Path) -> None:
    ds = open_scene(store, L1_ID)
    ms = ds["multispectral"]
    assert list(ms["band"].values) == BANDS
    assert ms.dims == ("band", "y", "x") and ms.shape == (6, 334, 468)
    assert np.issubdtype(ms.dtype, np.floating)
    values = ms.values
    assert np.isfinite(values).all()  # no L1 DN is 0 (fill) in this crop
    assert values.min() >= -1e-6 and values.max() <= 1.5
    sin_sun = math.sin(math.radians(mtl_float(L1_DIR, "SUN_ELEVATION")))
    for band in BANDS:
        number = L1_FILES[band][1:]
        mult = mtl_float(L1_DIR, f"REFLECTANCE_MULT_BAND_{number}")
        add = mtl_float(L1_DIR, f"REFLECTANCE_ADD_BAND_{number}")
        dn = raw_dn(L1_DIR, L1_ID, L1_FILES[band]).astype(np.float64)
        for row, col in PIXELS:
            expected = (mult * dn[row, col] + add) / sin_sun
            got = float(ms.sel(band=band).values[row, col])
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (band, row, col)


def test_level2_decodes_to_surface_reflectance(store: Path) -> None:
    ms = open_scene(store, L2_ID)["multispectral"]
    assert list(ms["band"].values) == BANDS
    assert ms.shape == (6, 333, 467)
    for band in BANDS:
        number = L2_FILES[band][-1]
        mult = mtl_float(L2_DIR, f"REFLECTANCE_MULT_BAND_{number}")
        add = mtl_float(L2_DIR, f"REFLECTANCE_ADD_BAND_{number}")
        dn = raw_dn(L2_DIR, L2_ID, L2_FILES[band])
        decoded = ms.sel(band=band).values
        # DN 0 is Collection 2 fill: it decodes to NaN, every other DN to M * DN + A.
        np.testing.assert_array_equal(np.isnan(decoded), dn == 0)
        valid = dn > 0
        np.testing.assert_allclose(decoded[valid], mult * dn[valid] + add, rtol=1e-9, atol=1e-12)
        assert decoded[valid].min() >= -0.2 and decoded[valid].max() <= 1.7
    assert int((raw_dn(L2_DIR, L2_ID, "SR_B2") == 0).sum()) > 0  # the check above bites


@pytest.mark.parametrize(("scene_id", "folder", "shape"), [
    (L1_ID, L1_DIR, (334, 468)), (L2_ID, L2_DIR, (333, 467)),
])
def test_georeferenced_from_the_mtl(
    store: Path, scene_id: str, folder: Path, shape: tuple[int, int]
) -> None:
    ms = open_scene(store, scene_id)["multispectral"]
    assert ms.rio.crs.to_epsg() == 32600 + int(mtl_value(folder, "UTM_ZONE")) == 32616
    # MTL corners are pixel centres: the grid's outer corner is half a cell further out.
    ulx = mtl_float(folder, "CORNER_UL_PROJECTION_X_PRODUCT")
    uly = mtl_float(folder, "CORNER_UL_PROJECTION_Y_PRODUCT")
    lrx = mtl_float(folder, "CORNER_LR_PROJECTION_X_PRODUCT")
    lry = mtl_float(folder, "CORNER_LR_PROJECTION_Y_PRODUCT")
    assert ms.rio.transform() == Affine(30.0, 0.0, ulx - 15.0, 0.0, -30.0, uly + 15.0)
    assert (ms.sizes["y"], ms.sizes["x"]) == shape
    assert float(ms["x"][0]) == ulx and float(ms["y"][0]) == uly
    assert float(ms["x"][-1]) == lrx and float(ms["y"][-1]) == lry


def test_pan_band_at_15_m_for_level1_only(store: Path) -> None:
    l1 = open_scene(store, L1_ID)
    pan = l1["pan"]
    dn = raw_dn(L1_DIR, L1_ID, "B8").astype(np.float64)
    assert pan.dims == ("y_pan", "x_pan") and pan.shape == dn.shape
    np.testing.assert_allclose(np.diff(pan["x_pan"].values), 15.0)
    np.testing.assert_allclose(np.diff(pan["y_pan"].values), -15.0)
    # USGS layout (a full scene has 2n - 1 pan lines): the first pan pixel is centred on
    # the first 30 m pixel, since this crop lost the GeoTIFF's own georeferencing.
    ms = l1["multispectral"]
    assert float(pan["x_pan"][0]) == pytest.approx(float(ms["x"][0]), abs=1e-6)
    assert float(pan["y_pan"][0]) == pytest.approx(float(ms["y"][0]), abs=1e-6)
    sin_sun = math.sin(math.radians(mtl_float(L1_DIR, "SUN_ELEVATION")))
    mult = mtl_float(L1_DIR, "REFLECTANCE_MULT_BAND_8")
    add = mtl_float(L1_DIR, "REFLECTANCE_ADD_BAND_8")
    np.testing.assert_allclose(pan.values, (mult * dn + add) / sin_sun, rtol=1e-9, atol=1e-12)

    assert "pan" not in open_scene(store, L2_ID)


def test_scene_attributes(store: Path) -> None:
    l1, l2 = open_scene(store, L1_ID), open_scene(store, L2_ID)
    assert l1.attrs["product_id"] == L1_ID and l2.attrs["product_id"] == L2_ID
    assert l1.attrs["processing_level"] == "L1TP" and l2.attrs["processing_level"] == "L2SP"
    assert l1.attrs["reflectance"] == "toa_sun_corrected" and l2.attrs["reflectance"] == "surface"
    assert l1.attrs["epsg"] == 32616
    assert (l1.attrs["wrs_path"], l1.attrs["wrs_row"]) == (17, 51)
    assert datetime.fromisoformat(l1.attrs["acquired"]).date().isoformat() == mtl_value(
        L1_DIR, "DATE_ACQUIRED"
    )
    assert l1.attrs["sun_elevation"] == mtl_float(L1_DIR, "SUN_ELEVATION")
    assert l1.attrs["cloud_cover"] == mtl_float(L1_DIR, "CLOUD_COVER")


def test_missing_qa_is_all_clear_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "scenes.zarr"
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.scene_ingest"):
        assert ingest_scene(L2_DIR, store).status == "ingested"
    qa = open_scene(store, L2_ID)["qa_pixel"]
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
    assert temporaries(store) == []


def test_half_written_temporary_group_is_not_complete(store: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "scenes.zarr"
    fresh.mkdir()
    shutil.copy(store / "zarr.json", fresh / "zarr.json")
    # A killed run leaves its group under the temporary name, even a finished-looking one.
    shutil.copytree(store / L2_ID, fresh / f".{L2_ID}.tmp-4242-deadbeef")
    assert ingest_scene(L2_DIR, fresh).status == "ingested"
    assert ingest_scene(L2_DIR, fresh).status == "skipped"
    assert open_scene(fresh, L2_ID)["multispectral"].shape == (6, 333, 467)


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
    product = copy_product(L1_DIR, tmp_path)
    b4 = product / f"{L1_ID}_B4.TIF"
    with b4.open("r+b") as f:
        f.truncate(1000)
    store = tmp_path / "scenes.zarr"
    with pytest.raises(SceneInputError) as info:
        ingest_scene(product, store)
    assert str(b4) in str(info.value)
    assert not (store / L1_ID).exists()
    assert temporaries(store) == []


def test_missing_band_is_named(tmp_path: Path) -> None:
    product = copy_product(L1_DIR, tmp_path)
    b5 = product / f"{L1_ID}_B5.TIF"
    b5.unlink()
    with pytest.raises(SceneInputError, match="nir") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(b5) in str(info.value)


def test_band_with_wrong_dtype_is_named(tmp_path: Path) -> None:
    product = copy_product(L2_DIR, tmp_path)
    b6 = product / f"{L2_ID}_SR_B6.TIF"
    data = raw_dn(L2_DIR, L2_ID, "SR_B6").astype(np.float32)
    b6.unlink()
    with rasterio.open(b6, "w", driver="GTiff", width=467, height=333, count=1,
                       dtype="float32") as dst:
        dst.write(data, 1)
    with pytest.raises(SceneInputError, match="float32") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(b6) in str(info.value)


def test_mtl_of_another_product_band_files(tmp_path: Path) -> None:
    product = copy_product(L1_DIR, tmp_path)
    (product / f"{L1_ID}_MTL.txt").unlink()
    shutil.copy(L2_DIR / f"{L2_ID}_MTL.txt", product)
    with pytest.raises(SceneInputError) as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    # The L2 MTL names SR_B* files that this L1 folder does not hold.
    assert str(product / f"{L2_ID}_SR_B2.TIF") in str(info.value)


def test_unreferenced_files_of_another_shape_are_refused(tmp_path: Path) -> None:
    # Same file names as the MTL expects, but the pixels are the L1 crop (334 x 468), and
    # the files carry no georeferencing: where they lie is unknown.
    product = copy_product(L1_DIR, tmp_path)
    (product / f"{L1_ID}_MTL.txt").unlink()
    shutil.copy(L2_DIR / f"{L2_ID}_MTL.txt", product)
    for name, suffix in L1_FILES.items():
        (product / f"{L1_ID}_{suffix}.TIF").rename(product / f"{L2_ID}_{L2_FILES[name]}.TIF")
    with pytest.raises(SceneInputError, match="no georeferencing") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(product / f"{L2_ID}_SR_B2.TIF") in str(info.value)
    assert "another product" not in str(info.value)


def test_garbled_mtl_is_named(tmp_path: Path) -> None:
    product = copy_product(L1_DIR, tmp_path)
    mtl = product / f"{L1_ID}_MTL.txt"
    mtl.write_text(mtl.read_text()[:3000])
    with pytest.raises(MTLError) as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(mtl) in str(info.value)


def test_folder_without_mtl(tmp_path: Path) -> None:
    product = copy_product(L1_DIR, tmp_path)
    (product / f"{L1_ID}_MTL.txt").unlink()
    with pytest.raises(MTLError, match="no \\*_MTL.txt") as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(product) in str(info.value)
