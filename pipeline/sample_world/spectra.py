"""Surface reflectance of the world's surface types (scenes add the atmosphere).

Six bands in the order blue, green, red, nir, swir1, swir2 (Landsat 8 OLI B2-B7); the
coastal band B1 is derived as blue + 0.01 when a scene is rendered. Values are typical
humid-tropics surface reflectances (forest blue about 0.025, as in Collection 2 Level-2
and the ForestNet release), chosen so that the drivers differ the way they do in
ForestNet's imagery (bare soil is bright in SWIR, young palm sits between forest and soil,
grass is bright green with higher SWIR than forest). Clouds are given as seen from above.
"""

from __future__ import annotations

import numpy as np

BANDS6 = ("blue", "green", "red", "nir", "swir1", "swir2")


def _s(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


FOREST = _s(0.024, 0.048, 0.035, 0.300, 0.150, 0.060)
PEAT_FOREST = _s(0.023, 0.044, 0.033, 0.270, 0.135, 0.055)
REGROWTH = _s(0.023, 0.054, 0.038, 0.335, 0.175, 0.070)
WATER = _s(0.033, 0.048, 0.052, 0.030, 0.012, 0.006)  # tea-coloured blackwater river
MINE_POND = _s(0.045, 0.088, 0.080, 0.045, 0.018, 0.010)  # turquoise, sediment-laden
FISH_WATER = _s(0.035, 0.062, 0.060, 0.050, 0.022, 0.012)
SOIL = _s(0.054, 0.092, 0.150, 0.220, 0.300, 0.220)  # lateritic bare soil
WET_SOIL = _s(0.042, 0.068, 0.100, 0.150, 0.190, 0.140)
BRIGHT_SOIL = _s(0.096, 0.160, 0.245, 0.300, 0.420, 0.340)  # mine tailings, white sand
YOUNG_PALM = _s(0.024, 0.053, 0.048, 0.270, 0.175, 0.085)
ACACIA = _s(0.020, 0.050, 0.034, 0.345, 0.160, 0.062)
RUBBER = _s(0.022, 0.051, 0.040, 0.310, 0.170, 0.075)
CROP = _s(0.027, 0.066, 0.055, 0.330, 0.205, 0.100)
YOUNG_TREES = _s(0.024, 0.053, 0.042, 0.290, 0.170, 0.075)
BURN = _s(0.025, 0.038, 0.055, 0.120, 0.180, 0.165)
GRASS = _s(0.025, 0.062, 0.050, 0.300, 0.225, 0.110)
SHRUB = _s(0.023, 0.053, 0.042, 0.290, 0.190, 0.090)
ROAD = _s(0.054, 0.092, 0.145, 0.215, 0.295, 0.225)
ROOF = _s(0.072, 0.100, 0.135, 0.190, 0.225, 0.195)
CLOUD = _s(0.470, 0.465, 0.455, 0.520, 0.360, 0.240)
CLOUD_COASTAL = 0.48


def mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-pixel linear mix of spectra ``a`` and ``b`` with weight ``w`` (h, w) on ``b``."""
    return a[:, None, None] + (b - a)[:, None, None] * w[None].astype(np.float32)


def fill(spec: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (6, h, w) array filled with one spectrum."""
    return np.broadcast_to(spec[:, None, None], (spec.size, *shape)).astype(np.float32)
