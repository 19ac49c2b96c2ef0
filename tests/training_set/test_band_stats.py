"""Band statistics in the release's display units, and the warning for bands far off it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline.imagery.views import CHIP_BANDS
from pipeline.training_set.band_stats import (
    RELEASE_BAND_MEANS,
    band_warnings,
    display_band_stats,
)


def chips_of(reflectance: dict[str, float], ok: list[int]) -> xr.Dataset:
    """Composites holding one reflectance per band; event 1 also a NaN pixel."""
    image = np.zeros((len(ok), 2, len(CHIP_BANDS), 4, 4), np.float32)
    for k, band in enumerate(CHIP_BANDS):
        image[:, 0, k] = reflectance[band]
        image[:, 1, k] = 0.9  # single views do not count
    image[1, 0, 0, 0, 0] = np.nan
    return xr.Dataset({"image": (("event", "view", "band", "y", "x"), image),
                       "chip_ok": (("event",), np.array(ok, np.uint8))},
                      coords={"band": list(CHIP_BANDS)})


def test_stats_are_in_display_units_of_each_band_group() -> None:
    # The release's own means, as reflectance: visible * 0.4 / 255, infrared / 255.
    like_release = {b: m * (0.4 if b in ("red", "green", "blue") else 1.0) / 255
                    for b, m in RELEASE_BAND_MEANS.items()}
    stats = display_band_stats(chips_of(like_release, ok=[1, 1, 0]), batch=1)
    assert list(stats) == list(CHIP_BANDS)
    for band, values in stats.items():
        assert values["mean"] == pytest.approx(RELEASE_BAND_MEANS[band], abs=0.01)
        assert values["std"] == pytest.approx(0.0, abs=0.01)
    assert band_warnings(stats) == []


def test_a_band_more_than_twice_off_is_named() -> None:
    toa_like = {"red": 0.06, "green": 0.08, "blue": 0.09, "nir": 0.33, "swir1": 0.16,
                "swir2": 0.07}
    stats = display_band_stats(chips_of(toa_like, ok=[1, 1]))
    assert stats["blue"]["mean"] == pytest.approx(0.09 * 255 / 0.4, abs=0.01)  # 57.4
    warnings = band_warnings(stats)
    assert len(warnings) == 1 and warnings[0].startswith("band blue: mean 57.4")
    assert "14.9" in warnings[0]
