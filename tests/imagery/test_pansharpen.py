"""SFIM pan-sharpening: the detail of the pan, the level of the bands."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox

from pipeline.imagery.pansharpen import pan_aligned, sfim


def test_every_30m_cell_keeps_its_band_value_on_average() -> None:
    rng = np.random.default_rng(0)
    bands = rng.uniform(0.01, 0.3, size=(3, 20, 30)).astype(np.float32)
    pan = rng.uniform(0.05, 0.5, size=(40, 60)).astype(np.float32)  # another level: TOA
    sharp = sfim(bands, pan)
    assert sharp.shape == (3, 40, 60) and sharp.dtype == np.float32
    cells = sharp.reshape(3, 20, 2, 30, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(cells, bands, rtol=1e-5)
    # Within a cell the band follows the pan: pixel / band == pan / cell mean of pan.
    pan_cells = pan.reshape(20, 2, 30, 2).mean(axis=(1, 3))
    ratio = pan / np.repeat(np.repeat(pan_cells, 2, 0), 2, 1)
    np.testing.assert_allclose(sharp[1] / np.repeat(np.repeat(bands[1], 2, 0), 2, 1), ratio,
                               rtol=1e-5)


def test_a_dark_or_missing_pan_cell_leaves_the_band_unsharpened() -> None:
    bands = np.full((1, 2, 2), 0.1, np.float32)
    bands[0, 1, 1] = np.nan
    pan = np.full((4, 4), 0.2, np.float32)
    pan[0, 0] = np.nan  # cell (0, 0): no pan mean
    pan[0:2, 2:4] = 0.0  # cell (0, 1): dark
    sharp = sfim(bands, pan)
    np.testing.assert_allclose(sharp[0, :2, :], 0.1)
    assert np.isnan(sharp[0, 2:, 2:]).all()  # a NaN band stays NaN
    np.testing.assert_allclose(sharp[0, 2:, :2], 0.1)


def test_the_pan_must_be_twice_the_bands() -> None:
    with pytest.raises(ValueError, match="not twice"):
        sfim(np.zeros((3, 4, 4), np.float32), np.zeros((7, 8), np.float32))


def test_aligned_grids_share_the_corner_and_halve_the_cell() -> None:
    ms = GeoBox((10, 10), Affine(30.0, 0, 500_000.0, 0, -30.0, -100_000.0), "EPSG:32649")
    pan = GeoBox((20, 20), Affine(15.0, 0, 500_000.0, 0, -15.0, -100_000.0), "EPSG:32649")
    assert pan_aligned(ms, pan)
    shifted = GeoBox((20, 20), Affine(15.0, 0, 500_007.5, 0, -15.0, -100_000.0), "EPSG:32649")
    other_crs = GeoBox((20, 20), pan.affine, "EPSG:32650")
    assert not pan_aligned(ms, shifted) and not pan_aligned(ms, other_crs)
