"""Event chips from the scene store: grid, loss mask, views, composite and pan-sharpening."""

from __future__ import annotations

import math
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely import affinity

from pipeline.imagery.composite import composite
from pipeline.imagery.composite_store import CompositeSource
from pipeline.imagery.event_chips import build_event_chip
from pipeline.imagery.views import ChipSpec, chip_geobox
from tests.training_set.tiny_world_grid import TO_UTM, UTM


def test_chip_geobox_is_332_at_15m_in_utm_centred_on_the_event_on_the_tile_lattice(event):
    geobox = chip_geobox(event.geometry, ChipSpec())
    assert tuple(geobox.shape) == (332, 332)
    assert geobox.crs.epsg == 32649
    assert geobox.affine.a == 15.0 and geobox.affine.e == -15.0
    anchor = event.geometry.representative_point()
    assert event.geometry.contains(anchor)
    x, y = TO_UTM.transform(anchor.x, anchor.y)
    cx, cy = geobox.affine * (166.5, 166.5)  # centre of pixel (166, 166)
    # Pixel (166, 166) holds the anchor: its centre is within half a pixel of it ...
    assert abs(cx - x) <= 7.5 + 1e-6 and abs(cy - y) <= 7.5 + 1e-6
    # ... because the grid sits on the map tiles' lattice (15 m from the zone's origin).
    assert geobox.affine.c % 15.0 == 0.0 and geobox.affine.f % 15.0 == 0.0


def test_event_chip_shape_mask_area_and_views(chip, event):
    assert chip.status == "ok"
    assert chip.image.shape == (5, 6, 332, 332)
    assert np.isfinite(chip.image[0]).all()
    assert np.abs(chip.image[0]).max() > 0.01  # real reflectance, not the zero fill
    area_utm = gpd.GeoSeries([event.geometry], crs="EPSG:4326").to_crs(UTM).area.iloc[0]
    assert chip.loss_mask.sum() * 225.0 == pytest.approx(area_utm, rel=0.15)
    # The loss region sits at the chip centre.
    assert chip.loss_mask[166, 166] == 1

    assert chip.view_dates[0] == "composite"
    dated = chip.view_dates[1:4]
    assert sorted(dated) == ["2017-06-12", "2018-07-18", "2019-07-21"]
    clouds = chip.view_cloud[1:4]
    assert clouds == sorted(clouds)
    assert dated != sorted(dated)  # the cloud order is not the date order here
    assert chip.view_dates[4] == "" and chip.view_cloud[4] == 1.0
    assert not np.any(chip.image[4])
    for v in range(1, 4):
        assert np.isfinite(chip.image[v]).all()


def test_composite_is_the_median_of_usable_pixels():
    values = np.array([
        # pixel:   (0,0)  (0,1)  (1,0)  (1,1)
        [[0.10, 0.50, 0.30, np.nan]],
        [[0.20, 0.70, 0.90, np.nan]],
        [[0.60, 0.90, 0.10, np.nan]],
    ], dtype=np.float32).reshape(3, 1, 2, 2)
    usable = np.array([
        [[True, True], [False, False]],
        [[True, False], [False, False]],
        [[True, True], [False, False]],
    ])
    images = np.concatenate([values, 2 * values], axis=1)
    out = composite(images, usable)
    expected = np.array([
        [0.20, (0.50 + 0.90) / 2],  # median of 3 usable; median of the 2 usable
        [0.30, 0.0],  # cloudy everywhere: median of all views; outside every scene: 0
    ], dtype=np.float32)
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(out[1], 2 * expected, atol=1e-6)


def _mtl_float(folder: Path, key: str) -> float:
    text = next(folder.glob("*_MTL.txt")).read_text()
    match = re.search(rf"^\s*{key} = \"?([^\"\n]+)\"?\s*$", text, flags=re.MULTILINE)
    assert match, key
    return float(match.group(1))


def _on_chip(path: Path, geobox) -> np.ndarray:
    """A product's band file read independently, bilinear onto the chip grid (DN, NaN out)."""
    with rasterio.open(path) as src:
        out = np.full(tuple(geobox.shape), np.nan, np.float32)
        reproject(src.read(1).astype(np.float32), out, src_transform=src.transform,
                  src_crs=src.crs, src_nodata=0, dst_transform=geobox.affine,
                  dst_crs=geobox.crs.to_wkt(), dst_nodata=np.nan, resampling=Resampling.bilinear)
    return out


def test_views_are_surface_reflectance_sharpened_by_the_level1_pan(chip, world):
    # View 1 is the least cloudy scene, 2017-06-12: its L2SP red, sharpened by the L1TP pan.
    level1 = next((world / "landsat").glob("*_L1TP_*_20170612_*"))
    level2 = next((world / "landsat").glob("*_L2SP_*_20170612_*"))
    sin_sun = math.sin(math.radians(_mtl_float(level1, "SUN_ELEVATION")))
    pan = (_mtl_float(level1, "REFLECTANCE_MULT_BAND_8")
           * _on_chip(next(level1.glob("*_B8.TIF")), chip.geobox)
           + _mtl_float(level1, "REFLECTANCE_ADD_BAND_8")) / sin_sun
    toa_red = (_mtl_float(level1, "REFLECTANCE_MULT_BAND_4")
               * _on_chip(next(level1.glob("*_B4.TIF")), chip.geobox)
               + _mtl_float(level1, "REFLECTANCE_ADD_BAND_4")) / sin_sun
    sr_red = _on_chip(next(level2.glob("*_SR_B4.TIF")), chip.geobox) * 2.75e-05 - 0.2
    red = chip.image[1, 0]
    inside = np.isfinite(pan) & np.isfinite(sr_red) & np.isfinite(toa_red)
    assert inside.mean() > 0.5
    # The pan's detail: the sharpened band follows it more closely than the 30 m SR does.
    assert np.corrcoef(red[inside], pan[inside])[0, 1] > 0.95
    assert (np.corrcoef(red[inside], pan[inside])[0, 1]
            > np.corrcoef(sr_red[inside], pan[inside])[0, 1])
    # The surface reflectance's level (within 1%), not the TOA's, which the atmosphere
    # brightens by its path reflectance.
    assert red[inside].mean() == pytest.approx(sr_red[inside].mean(), rel=0.01)
    assert toa_red[inside].mean() - red[inside].mean() > 0.01


def test_event_outside_every_scene_is_flagged_not_dropped(event, store, index):
    far = affinity.translate(event.geometry, xoff=1.0)  # 110 km east: no scene there
    chip = build_event_chip(far, int(event.loss_year), CompositeSource(store, index, ChipSpec()))
    assert chip.status != "ok"
    assert "scene" in chip.status
    assert chip.image.shape == (5, 6, 332, 332)
    assert not np.any(chip.image)
    assert chip.loss_mask.sum() > 0
    assert chip.geobox.crs.epsg == 32650  # 114.5 E is in the next zone


# --- auxiliary predictors -----------------------------------------------------------------------

AUX_LON, AUX_LAT = 113.55, -1.95
