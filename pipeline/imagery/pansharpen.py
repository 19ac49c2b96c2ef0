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

import numpy as np
from odc.geo.geobox import GeoBox

from pipeline.core.jit import cached_njit


def pan_aligned(ms: GeoBox, pan: GeoBox) -> bool:
    """Whether ``pan``'s cells split ``ms``'s exactly in four (same CRS, corner, half cell)."""
    a, b = ms.affine, pan.affine
    return (ms.crs == pan.crs and a.b == a.d == b.b == b.d == 0
            and np.isclose(b.a * 2, a.a) and np.isclose(b.e * 2, a.e)
            and np.isclose(a.c, b.c) and np.isclose(a.f, b.f))


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
    for r in range(h):
        for c in range(w):
            p00, p01 = pan[2 * r, 2 * c], pan[2 * r, 2 * c + 1]
            p10, p11 = pan[2 * r + 1, 2 * c], pan[2 * r + 1, 2 * c + 1]
            mean = (p00 + p01 + p10 + p11) / 4.0
            ok = mean > 1e-6 and mean - mean == 0  # positive and finite
            for k in range(n):
                v = bands[k, r, c]
                if ok:
                    out[k, 2 * r, 2 * c] = v * p00 / mean
                    out[k, 2 * r, 2 * c + 1] = v * p01 / mean
                    out[k, 2 * r + 1, 2 * c] = v * p10 / mean
                    out[k, 2 * r + 1, 2 * c + 1] = v * p11 / mean
                else:
                    out[k, 2 * r, 2 * c] = v
                    out[k, 2 * r, 2 * c + 1] = v
                    out[k, 2 * r + 1, 2 * c] = v
                    out[k, 2 * r + 1, 2 * c + 1] = v
