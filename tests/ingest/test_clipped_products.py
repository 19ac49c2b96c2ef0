"""Real products as users and catalogs serve them: band GeoTIFFs clipped to an area, with
their own georeferencing, beside the whole scene's MTL.

The real Level-2 crop of tests/data is georeferenced here from its MTL (by this test,
independently of the ingest code), then clipped with rasterio; its MTL is kept as is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from pipeline.ingest.landsat import SceneInputError
from pipeline.ingest.scene_ingest import ingest_scene
from tests.ingest.real_crops import L2_DIR, L2_FILES, L2_ID, mtl_float, open_scene

#: The clip: rows and columns of the 333 x 467 scene.
CLIP = Window(col_off=120, row_off=40, width=200, height=150)


def write_clipped(folder: Path, window: Window = CLIP, cell: float = 30.0,
                  shift: tuple[float, float] = (0.0, 0.0)) -> Path:
    """The L2 product's bands cut to ``window`` (georeferenced GeoTIFFs), with its MTL;
    ``cell`` other than 30 m resamples the pixels' spacing, ``shift`` moves them (m)."""
    out = folder / f"{L2_ID}-clipped"
    out.mkdir(parents=True)
    shutil.copy(L2_DIR / f"{L2_ID}_MTL.txt", out)
    ulx = mtl_float(L2_DIR, "CORNER_UL_PROJECTION_X_PRODUCT") - 15.0  # pixel centre -> corner
    uly = mtl_float(L2_DIR, "CORNER_UL_PROJECTION_Y_PRODUCT") + 15.0
    scene = Affine(30.0, 0.0, ulx + shift[0], 0.0, -30.0, uly + shift[1])
    corner = scene @ (window.col_off, window.row_off)
    transform = Affine(cell, 0.0, corner[0], 0.0, -cell, corner[1])
    for suffix in L2_FILES.values():
        with rasterio.open(L2_DIR / f"{L2_ID}_{suffix}.TIF") as src:
            data = src.read(1, window=window)
        with rasterio.open(out / f"{L2_ID}_{suffix}.TIF", "w", driver="GTiff", width=data.shape[1],
                           height=data.shape[0], count=1, dtype=data.dtype, crs="EPSG:32616",
                           transform=transform, tiled=True, blockxsize=128,
                           blockysize=128) as dst:
            dst.write(data, 1)
    return out


def test_a_clipped_product_is_ingested_where_it_lies_and_decodes_to_the_formula(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    product = write_clipped(tmp_path)
    with caplog.at_level("INFO"):
        result = ingest_scene(product, tmp_path / "scenes.zarr")
    assert result.status == "ingested"
    assert any("clipped product" in r.getMessage() for r in caplog.records)
    scene = open_scene(tmp_path / "scenes.zarr", L2_ID)
    assert scene.sizes["y"] == CLIP.height and scene.sizes["x"] == CLIP.width
    first_x = mtl_float(L2_DIR, "CORNER_UL_PROJECTION_X_PRODUCT") + 30.0 * CLIP.col_off
    first_y = mtl_float(L2_DIR, "CORNER_UL_PROJECTION_Y_PRODUCT") - 30.0 * CLIP.row_off
    assert float(scene["x"][0]) == pytest.approx(first_x)
    assert float(scene["y"][0]) == pytest.approx(first_y)
    for name, suffix in L2_FILES.items():
        number = int(suffix[-1])
        mult = mtl_float(L2_DIR, f"REFLECTANCE_MULT_BAND_{number}")
        add = mtl_float(L2_DIR, f"REFLECTANCE_ADD_BAND_{number}")
        with rasterio.open(L2_DIR / f"{L2_ID}_{suffix}.TIF") as src:
            dn = src.read(1, window=CLIP).astype(np.float64)
        expected = np.where(dn == 0, np.nan, dn * mult + add)
        got = scene["multispectral"].sel(band=name).values
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("kwargs", "reason", "another_product"), [
    ({"cell": 60.0}, "pixel size 60 x 60 m is not the product's 30 m", False),
    ({"shift": (12.0, 0.0)}, "off the scene's 30 m lattice", False),
    ({"shift": (30_000.0, 0.0)}, "lie outside the 333 x 467 scene", True),
], ids=["resampled", "off-lattice", "elsewhere"])
def test_a_clip_that_is_not_the_products_is_refused_with_its_reason(
    tmp_path: Path, kwargs: dict, reason: str, another_product: bool
) -> None:
    product = write_clipped(tmp_path, **kwargs)
    with pytest.raises(SceneInputError, match=reason) as info:
        ingest_scene(product, tmp_path / "scenes.zarr")
    assert str(product / f"{L2_ID}_SR_B2.TIF") in str(info.value)
    assert ("another product" in str(info.value)) == another_product
    assert not (tmp_path / "scenes.zarr" / L2_ID).exists()
