"""The source window a warp reads: odc-geo's search across CRSs, plain arithmetic within one."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi

from pipeline.imagery.reproject import source_roi

SCENE = GeoBox((800, 700), Affine(30.0, 0, 600_000.0, 0, -30.0, -250_000.0), CRS("EPSG:32649"))


@pytest.mark.parametrize("seed", range(20))
def test_a_same_crs_window_covers_odc_geos_and_at_most_a_pixel_more(seed: int) -> None:
    rng = np.random.default_rng(seed)
    res = float(rng.choice([15.0, 30.0, 60.0]))
    x = 600_000.0 + rng.uniform(-2000, 22000)
    y = -250_000.0 - rng.uniform(-2000, 25000)
    target = GeoBox((int(rng.integers(20, 400)), int(rng.integers(20, 400))),
                    Affine(res, 0, x, 0, -res, y), SCENE.crs)
    margin = int(rng.integers(0, 5))
    ours = source_roi(SCENE, target, margin)
    odc = compute_reproject_roi(SCENE, target, padding=margin).roi_src
    if odc[0].stop <= odc[0].start or odc[1].stop <= odc[1].start:
        assert ours is None
        return
    assert ours is not None
    for mine, theirs in zip(ours, odc, strict=True):
        assert mine.start <= theirs.start and mine.stop >= theirs.stop
        assert theirs.start - mine.start <= 1 and mine.stop - theirs.stop <= 1


def test_grids_that_do_not_overlap_have_no_window() -> None:
    far = GeoBox((50, 50), Affine(15.0, 0, 900_000.0, 0, -15.0, -250_000.0), SCENE.crs)
    assert source_roi(SCENE, far) is None


def test_another_crs_goes_through_odc_geo() -> None:
    lonlat = GeoBox((40, 40), Affine(0.0003, 0, 112.0, 0, -0.0003, -2.3), CRS("EPSG:4326"))
    roi = source_roi(SCENE, lonlat, margin=2)
    odc = compute_reproject_roi(SCENE, lonlat, padding=2).roi_src
    assert roi == (odc[0], odc[1]) or roi is None
