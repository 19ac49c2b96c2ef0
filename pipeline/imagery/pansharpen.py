"""Pan-sharpening that keeps the radiometric level: SFIM on the scene's own grids.

Smoothing-filter-based intensity modulation (Liu 2000): each visible band at 30 m is
spread over its four 15 m pan pixels and multiplied by pan / (the mean of pan over the
same 30 m cell). The ratio averages to one over every cell, so the sharpened band's mean
over each 30 m cell *is* the band there: Level-2 surface reflectance stays surface
reflectance when a Level-1 pan (top of atmosphere) lends it its detail. Only the ratio
of the pan is used, so its own radiometry does not leak in.

The pan grid must be the multispectral grid halved (same corner, half the cell), as
Landsat products are; :func:`pan_aligned` says whether two grids are.
"""

from __future__ import annotations

import math

import numpy as np
from odc.geo.geobox import GeoBox

from pipeline.core.jit import cached_njit


def pan_aligned(ms: GeoBox, pan: GeoBox) -> bool:
    """Whether ``pan``'s cells split ``ms``'s exactly in four (same CRS, corner, half cell)."""
    a, b = ms.affine, pan.affine
    # Called for every view of every chip: scalar comparisons, not numpy's.
    return (a.b == a.d == b.b == b.d == 0 and math.isclose(b.a * 2, a.a)
            and math.isclose(b.e * 2, a.e) and math.isclose(a.c, b.c, abs_tol=1e-6)
            and math.isclose(a.f, b.f, abs_tol=1e-6) and ms.crs == pan.crs)


def sfim(bands: np.ndarray, pan: np.ndarray) -> np.ndarray:
    """``(band, 2h, 2w)`` sharpened from ``bands (band, h, w)`` at 30 m and ``pan (2h, 2w)``.

    A cell whose pan mean is not positive or not finite keeps its band value in all four
    pixels (no detail, never a NaN or an infinity from the ratio); NaN bands stay NaN.
    """
    n, h, w = bands.shape
    if pan.shape != (2 * h, 2 * w):
        raise ValueError(f"pan {pan.shape} is not twice the bands' {(h, w)}")
    out = np.empty((n, 2 * h, 2 * w), dtype=np.float32)
    _sfim_kernel(np.ascontiguousarray(bands, np.float32), np.ascontiguousarray(pan, np.float32),
                 out)
    return out


@cached_njit
def _sfim_kernel(bands: np.ndarray, pan: np.ndarray, out: np.ndarray) -> None:
    n, h, w = bands.shape
    ratio = np.empty((2 * h, 2 * w), dtype=np.float32)  # pan / its cell's mean, or 1
    for r in range(h):
        for c in range(w):
            mean = (pan[2 * r, 2 * c] + pan[2 * r, 2 * c + 1] + pan[2 * r + 1, 2 * c]
                    + pan[2 * r + 1, 2 * c + 1]) / 4.0
            ok = mean > 1e-6 and mean - mean == 0  # positive and finite
            for dr in range(2):
                for dc in range(2):
                    ratio[2 * r + dr, 2 * c + dc] = pan[2 * r + dr, 2 * c + dc] / mean if ok \
                        else 1.0
    for k in range(n):
        for y in range(2 * h):
            for x in range(2 * w):
                out[k, y, x] = bands[k, y // 2, x // 2] * ratio[y, x]
