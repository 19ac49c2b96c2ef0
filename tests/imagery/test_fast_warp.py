"""The fast paths of chip building (numba kernels) agree with GDAL and with np.nanmedian."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.warp import reproject

from pipeline.imagery.fast_warp import _axes, _bilinear, fast_nearest, fast_warp
from pipeline.imagery.reproject import array_to_grid

UTM = CRS("EPSG:32749")
SOURCE = GeoBox((60, 70), Affine(30, 0, 779670, 0, -30, 9788280), UTM)


def _gdal(src: np.ndarray, src_box: GeoBox, dst_box: GeoBox, resampling) -> np.ndarray:
    dst = np.full((*src.shape[:-2], *dst_box.shape), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reproject(src, dst, src_transform=src_box.affine, src_crs=src_box.crs.to_wkt(),
                  src_nodata=np.nan, dst_transform=dst_box.affine,
                  dst_crs=dst_box.crs.to_wkt(), dst_nodata=np.nan, resampling=resampling)
    return dst


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
@pytest.mark.parametrize("resolution", [15.0, 30.0, 10.0])
@pytest.mark.parametrize("holes", [False, True])
def test_fast_warp_gives_gdals_numbers(resampling, resolution: float, holes: bool) -> None:
    rng = np.random.default_rng(int(resolution) + holes)
    src = rng.uniform(0, 0.5, (3, *SOURCE.shape)).astype(np.float32)
    if holes:  # clouds/fill as NaN, and a stripe of missing scene edge
        src[:, rng.random(SOURCE.shape) < 0.15] = np.nan
        src[:, :, :3] = np.nan
    for _ in range(4):  # chips overhanging every edge of the source, at sub-pixel offsets
        x0 = SOURCE.affine.c + rng.uniform(-400, 1500)
        y0 = SOURCE.affine.f - rng.uniform(-400, 1300)
        target = GeoBox((90, 80), Affine(resolution, 0, x0, 0, -resolution, y0), UTM)
        expected = _gdal(src, SOURCE, target, resampling)
        got = fast_warp(src, SOURCE, target, resampling)
        assert got is not None and got.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("lead", [(), (1,), (6,), (2, 3)])
@pytest.mark.parametrize("resolution", [15.0, 30.0, 10.0])
@pytest.mark.parametrize("hole", [False, True])
def test_every_kernel_path_gives_gdals_numbers(lead, resolution: float, hole: bool) -> None:
    """Chips well inside the window (no renormalising), chips overhanging it (weights
    renormalised, NaN outside), and windows with a NaN anywhere (valid weights only),
    for any leading shape."""
    rng = np.random.default_rng(len(lead) + int(resolution))
    src = rng.uniform(0, 0.5, (*lead, *SOURCE.shape)).astype(np.float32)
    if hole:  # far from the chips inside: same numbers, through the NaN-aware branch
        src[..., -2:, -3:] = np.nan
    offsets = [(130.0, 170.0), (37.5, 52.0), (-200.0, 300.0), (1500.0, 900.0)]
    for (dx, dy), interior in zip(offsets, [True, True, False, False], strict=True):
        target = GeoBox((50, 60), Affine(resolution, 0, SOURCE.affine.c + dx, 0,
                                         -resolution, SOURCE.affine.f - dy), UTM)
        ay, ax = _axes(SOURCE, target)
        assert (ay.interior and ax.interior) == interior
        got = fast_warp(src, SOURCE, target, Resampling.bilinear)
        expected = _gdal(src.reshape(-1, *SOURCE.shape), SOURCE, target, Resampling.bilinear)
        assert got.dtype == np.float32 and got.shape == (*lead, *target.shape)
        got = got.reshape(expected.shape)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)


def test_infinite_source_values_are_nodata_like_nan() -> None:
    src = np.ones((2, *SOURCE.shape), np.float32)
    src[1, 30, 30] = np.inf
    target = GeoBox((50, 60), Affine(15, 0, SOURCE.affine.c + 130, 0, -15,
                                     SOURCE.affine.f - 170), UTM)
    ay, ax = _axes(SOURCE, target)
    got = _bilinear(src, ay, ax)
    nan_src = np.where(np.isinf(src), np.nan, src)
    np.testing.assert_array_equal(got, _bilinear(nan_src, ay, ax))
    assert np.isnan(got[1]).any() and not np.isnan(got[0]).any()
    assert np.nanmax(np.abs(got - 1)) < 1e-6


def test_other_cases_are_left_to_gdal() -> None:
    src = np.zeros(SOURCE.shape, np.float32)
    coarser = GeoBox((10, 10), Affine(60, 0, 779670, 0, -60, 9788280), UTM)
    other_crs = GeoBox((10, 10), Affine(15, 0, 779670, 0, -15, 9788280), CRS("EPSG:32750"))
    assert fast_warp(src, SOURCE, coarser, Resampling.bilinear) is None
    assert fast_warp(src, SOURCE, other_crs, Resampling.bilinear) is None
    assert fast_warp(src, SOURCE, SOURCE, Resampling.cubic) is None


def test_a_zones_south_form_goes_to_gdal_and_lands_in_the_same_place() -> None:
    """Scenes, chips and tiles share USGS's 326zz; a product re-projected to 327zz (the
    same zone with a 10,000 km false northing) is not a fast-path case, but GDAL puts it
    exactly where the 326zz copy lands."""
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 0.5, (2, *SOURCE.shape)).astype(np.float32)
    north = GeoBox(SOURCE.shape, Affine.translation(0, -10_000_000.0) @ SOURCE.affine,
                   CRS("EPSG:32649"))
    target = GeoBox((90, 80), Affine(15, 0, north.affine.c + 230.0, 0, -15,
                                     north.affine.f - 170.0), CRS("EPSG:32649"))
    assert fast_warp(src, SOURCE, target, Resampling.bilinear) is None
    fast = fast_warp(src, north, target, Resampling.bilinear)
    assert fast is not None
    np.testing.assert_allclose(array_to_grid(src, SOURCE, target, Resampling.bilinear), fast,
                               atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("resolution", [15.0, 30.0])
def test_fast_nearest_keeps_qa_integers_and_matches_gdal(resolution: float) -> None:
    rng = np.random.default_rng(7)
    qa = rng.integers(0, 2**16, (1, *SOURCE.shape), dtype=np.uint16)
    for _ in range(4):  # overhanging every edge: outside is the fill value
        x0 = SOURCE.affine.c + rng.uniform(-400, 1500)
        y0 = SOURCE.affine.f - rng.uniform(-400, 1300)
        target = GeoBox((90, 80), Affine(resolution, 0, x0, 0, -resolution, y0), UTM)
        expected = _gdal(qa.astype(np.float32), SOURCE, target, Resampling.nearest)
        got = fast_nearest(qa, SOURCE, target, fill=1)
        assert got is not None and got.dtype == np.uint16
        np.testing.assert_array_equal(got, np.where(np.isnan(expected), 1, expected))


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
def test_a_warp_into_a_given_array_writes_the_same_numbers_there(resampling) -> None:
    """Chips warp each view straight into their stack of views (``out``), by the fast
    kernel and by GDAL alike; an array of the wrong shape or type is refused."""
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 0.5, (2, *SOURCE.shape)).astype(np.float32)
    src[:, :4, :4] = np.nan
    target = GeoBox((40, 30), Affine(15, 0, SOURCE.affine.c - 100, 0, -15,
                                     SOURCE.affine.f + 50), UTM)
    left, _, _, top = SOURCE.extent.to_crs("EPSG:32750").boundingbox
    other_crs = GeoBox((40, 30), Affine(15, 0, left + 300, 0, -15, top - 300), CRS("EPSG:32750"))
    for grid in (target, other_crs):  # the fast kernel, then GDAL
        stack = np.zeros((3, 2, 40, 30), np.float32)
        got = array_to_grid(src, SOURCE, grid, resampling, out=stack[1])
        assert np.shares_memory(got, stack) and np.isfinite(stack[1]).mean() > 0.5
        np.testing.assert_array_equal(stack[1], array_to_grid(src, SOURCE, grid, resampling))
        assert not stack[0].any() and not stack[2].any()
    with pytest.raises(ValueError, match="out is"):
        array_to_grid(src, SOURCE, target, resampling, out=np.zeros((2, 40, 31), np.float32))
