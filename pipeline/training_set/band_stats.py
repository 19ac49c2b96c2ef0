"""Per-band statistics of a chip store in the ForestNet release's display units (0-255),
beside the release's published ones: the signal a user needs when their chips do not look
like ForestNet's (another radiometry, another scaling, haze).

Display units are those of the release's files (``release_import``): visible reflectance
* 255 / 0.4, infrared reflectance * 255, clipped to 0-255.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from pipeline.core.radiometry import DISPLAY_MAX
from pipeline.training_set.release_import import display_units

#: The release's published per-band means and stds in display units (terratorch's
#: ForestNet datamodule, its red and blue keys swapped back).
RELEASE_BAND_MEANS = {"red": 19.9, "green": 28.2, "blue": 14.9, "nir": 82.1, "swir1": 39.5,
                      "swir2": 17.7}
RELEASE_BAND_STDS = {"red": 17.5, "green": 15.8, "blue": 17.9, "nir": 21.4, "swir1": 14.5,
                     "swir2": 9.9}
#: A band whose mean is off from the release's by more than this factor gets a warning.
WARN_FACTOR = 2.0
_SCALES = {band: top / 255.0 for band, top in DISPLAY_MAX.items()}


def display_band_stats(chips: xr.Dataset, batch: int = 16) -> dict[str, dict[str, float]]:
    """Mean and std per band of the usable events' composites (view 0), in display units;
    read ``batch`` events at a time so memory stays bounded."""
    bands = [str(b) for b in chips["band"].values if str(b) in _SCALES]
    usable = np.flatnonzero(chips["chip_ok"].values == 1)
    total = np.zeros(len(bands))
    squares = np.zeros(len(bands))
    count = np.zeros(len(bands))
    for start in range(0, len(usable), batch):
        image = chips["image"].isel(event=usable[start:start + batch], view=0).sel(
            band=bands).values.astype(np.float64)  # (event, band, y, x)
        for k, band in enumerate(bands):
            values = display_units(image[:, k], _SCALES[band])
            values = values[np.isfinite(values)]
            total[k] += values.sum()
            squares[k] += (values ** 2).sum()
            count[k] += values.size
    out = {}
    for k, band in enumerate(bands):
        if count[k]:
            mean = total[k] / count[k]
            std = np.sqrt(max(squares[k] / count[k] - mean ** 2, 0.0))
            out[band] = {"mean": round(float(mean), 2), "std": round(float(std), 2)}
    return out


def band_warnings(stats: dict[str, dict[str, float]]) -> list[str]:
    """One line per band whose mean is more than :data:`WARN_FACTOR` times off the release's."""
    lines = []
    for band, values in stats.items():
        mean, release = values["mean"], RELEASE_BAND_MEANS[band]
        if mean > release * WARN_FACTOR or mean < release / WARN_FACTOR:
            lines.append(f"band {band}: mean {mean:.1f} in display units (0-255) is more "
                         f"than {WARN_FACTOR:g}x off the ForestNet release's {release:.1f}; "
                         "are these chips of the release's radiometry and scaling?")
    return lines
