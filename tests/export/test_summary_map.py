"""Tests for the quick-look driver PNG: a real PNG, driver colours, tiny events visible."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import box

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_COLOURS
from pipeline.export.summary_map import write_driver_png
from tests.mapped_features import NO_IMAGERY, make_features, utm_squares


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)


def _near(pixels: np.ndarray, hex_colour: str, tol: int = 40) -> int:
    """Pixels within ``tol`` per channel of a colour (antialiased edges included)."""
    return int((np.abs(pixels - _rgb(hex_colour)) <= tol).all(axis=1).sum())


@pytest.fixture
def province() -> gpd.GeoDataFrame:
    # About 1.5 x 1.5 degrees around the events: tiny events are sub-pixel at this scale.
    return gpd.GeoDataFrame({"province": ["Riau"]}, geometry=[box(101.2, -0.2, 102.7, 1.3)],
                            crs="EPSG:4326")


def test_png_has_every_legend_colour_and_is_written_atomically(tmp_path, province):
    drivers = [*DRIVER_CLASSES, NO_IMAGERY]
    squares = [(600_000 + 20_000 * i, 60_000, 3_000) for i in range(len(drivers))]
    features = make_features(utm_squares(squares), drivers)
    path = write_driver_png(features, province, tmp_path / "riau.png", "Riau, 2018")
    pixels = _pixels(path)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    for name in DRIVER_CLASSES:
        assert _rgb(DRIVER_COLOURS[name]) in colours, name
    assert [p.name for p in tmp_path.iterdir()] == ["riau.png"]


def test_events_are_drawn_in_their_driver_colour(tmp_path, province):
    squares = [(600_000 + 4_000 * i, 60_000 + 3_000 * (i % 3), 2_000) for i in range(12)]
    features = make_features(utm_squares(squares), ["Plantation"] * 12)
    empty = _pixels(write_driver_png(features.iloc[:0], province, tmp_path / "a.png", "t"))
    full = _pixels(write_driver_png(features, province, tmp_path / "b.png", "t"))
    plantation = _rgb(DRIVER_COLOURS["Plantation"])
    # The legend swatch is in both; the extra pixels are the 12 events on the map.
    extra = (full == plantation).all(axis=1).sum() - (empty == plantation).all(axis=1).sum()
    assert extra > 12 * 4


def test_a_single_30_m_event_stays_visible_at_province_scale(tmp_path, province):
    features = make_features(utm_squares([(650_000, 80_000, 30.0)]), ["Grassland shrubland"])
    colour = DRIVER_COLOURS["Grassland shrubland"]
    empty = _pixels(write_driver_png(features.iloc[:0], province, tmp_path / "a.png", "t"))
    one = _pixels(write_driver_png(features, province, tmp_path / "b.png", "t"))
    assert _near(one, colour) > _near(empty, colour)


def test_features_in_another_crs_and_without_provinces(tmp_path):
    features = make_features(utm_squares([(600_000, 60_000, 1_000)]), ["Other"])
    path = write_driver_png(features.to_crs("EPSG:6933"), None, tmp_path / "x.png", "t")
    assert _near(_pixels(path), DRIVER_COLOURS["Other"], tol=0) > 0
    with pytest.raises(ValueError, match="nothing to draw"):
        write_driver_png(features.iloc[:0], None, tmp_path / "y.png", "t")
