"""The sample world's Level-2 products: real C2 layout, read by the pipeline's own MTL
reader, and surface reflectance that is the documented atmosphere inverted on the TOA."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.ingest.landsat import reflectance_scaling
from pipeline.ingest.mtl import read_mtl
from pipeline.sample_world.scenes import PATH_REFLECTANCE, TRANSMITTANCE


@pytest.fixture(scope="module")
def pairs(tiny_world: Path) -> list[tuple[dict, dict]]:
    import json

    manifest = json.loads(tiny_world.read_text())
    return [(scene, scene["level2"]) for scene in manifest["scenes"]]


def band(root: Path, rel: str) -> np.ndarray:
    with rasterio.open(root / rel) as src:
        return src.read(1)


def test_each_acquisition_has_a_level2_product_with_its_rescaling(tiny_world, pairs) -> None:
    root = tiny_world.parent
    for l1, l2 in pairs:
        meta = read_mtl(root / l2["files"]["MTL"])
        assert meta.processing_level == "L2SP" and meta.level == "L2"
        assert meta.product_id == l2["product_id"] == l1["product_id"].replace("L1TP", "L2SP")
        assert "pan" not in meta.band_files and meta.band_files["red"].endswith("_SR_B4.TIF")
        assert reflectance_scaling(meta, "red") == (2.75e-05, -0.2)  # no sun correction
        level1 = read_mtl(root / l1["files"]["MTL"])
        assert (meta.acquired, meta.wrs_path, meta.wrs_row) == (
            level1.acquired, level1.wrs_path, level1.wrs_row)
        assert meta.corner_ul_xy == level1.corner_ul_xy  # one grid for both levels


def test_surface_reflectance_is_the_atmosphere_inverted_on_the_toa(tiny_world, pairs) -> None:
    root = tiny_world.parent
    l1, l2 = pairs[0]
    meta1 = read_mtl(root / l1["files"]["MTL"])
    for b in (2, 4, 5, 7):  # blue, red, nir, swir2
        name = {2: "blue", 4: "red", 5: "nir", 7: "swir2"}[b]
        dn1, dn2 = band(root, l1["files"][f"B{b}"]), band(root, l2["files"][f"SR_B{b}"])
        valid = (dn1 > 0) & (dn2 > 1)
        scale, offset = reflectance_scaling(meta1, name)
        toa = dn1[valid] * scale + offset
        sr = dn2[valid] * 2.75e-05 - 0.2
        expected = (toa - PATH_REFLECTANCE[b - 1]) / TRANSMITTANCE[b - 1]
        np.testing.assert_allclose(sr, expected, atol=4e-5)  # one DN of each product
        assert np.array_equal(band(root, l1["files"]["QA_PIXEL"]),
                              band(root, l2["files"]["QA_PIXEL"]))
    # SR is not TOA: the visible are darker at the surface, the SWIR nearly the same.
    dn1, dn2 = band(root, l1["files"]["B2"]), band(root, l2["files"]["SR_B2"])
    valid = (dn1 > 0) & (dn2 > 1)
    blue_toa = float(np.median(dn1[valid] * reflectance_scaling(meta1, "blue")[0]
                               + reflectance_scaling(meta1, "blue")[1]))
    blue_sr = float(np.median(dn2[valid] * 2.75e-05 - 0.2))
    assert blue_toa - blue_sr > 0.04 and math.isfinite(blue_sr)
