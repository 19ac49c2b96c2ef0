"""Separable resampling between north-up grids of one CRS, as GDAL would do it, with numba.

Chip building warps every band window of every candidate scene onto the 15 m chip grid.
When the scene and the chip share a CRS (the usual case: both in the event's UTM zone)
and the chip is at least as fine as the scene, the warp is an axis-aligned resampling:
bilinear is a weighted pair of rows, then of columns. One numba kernel does that and
gives GDAL's numbers: source pixel centres at (i + 0.5), NaN neighbours left out and the
weights renormalised, and NaN where the target centre falls outside the source or on a
NaN source pixel. It is an order of magnitude faster than a GDAL warp call per chip
window (figures in bench/bench_chips.py). Nearest neighbour is numpy indexing. Other
cases return None and the caller uses GDAL.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from pipeline.core.grid import grid_key
from pipeline.core.jit import cached_njit

#: GDAL gives nodata when the valid weights sum to less than this.
_MIN_WEIGHT = 1e-5


class _Axis(NamedTuple):
    """Along one axis: per target pixel, two source indices and bilinear weights.

    A named tuple (immutable, and numba takes it as a kernel argument).
    """

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    nearest: np.ndarray
    inside: np.ndarray
    interior: bool  # every target pixel inside the source, with both neighbours in it


def _axis(n_dst: int, dst_start: float, dst_step: float, n_src: int, src_start: float,
          src_step: float) -> _Axis:
    centres = dst_start + (np.arange(n_dst) + 0.5) * dst_step
    u = (centres - src_start) / src_step  # position in source pixels from the first edge
    inside = (u >= 0) & (u < n_src)
    t = u - 0.5
    i0 = np.floor(t).astype(np.int64)
    frac = (t - i0).astype(np.float32)
    i1 = i0 + 1
    w0 = np.where((i0 >= 0) & (i0 < n_src), 1.0 - frac, 0.0).astype(np.float32)
    w1 = np.where((i1 >= 0) & (i1 < n_src), frac, 0.0).astype(np.float32)
    nearest = np.clip(np.floor(u).astype(np.int64), 0, n_src - 1)
    interior = bool(inside.all() and np.all(w0 + w1 > 1 - 1e-6))
    return _Axis(np.clip(i0, 0, n_src - 1), np.clip(i1, 0, n_src - 1), w0, w1, nearest, inside,
                 interior)


def _axes(src_box: GeoBox, dst_box: GeoBox) -> tuple[_Axis, _Axis] | None:
    """Both axes of the resampling from ``src_box`` to ``dst_box``; None if not separable."""
    # Cached on plain values, not on the boxes: hashing a GeoBox hashes its CRS's WKT
    # (~15 us), and the lookup cost as much as the bilinear kernel on the pan band.
    return _axes_cached(*grid_key(src_box), *grid_key(dst_box))


@lru_cache(maxsize=512)
def _axes_cached(src_shape: tuple, s: Affine, src_crs: int | CRS | None, dst_shape: tuple,
                 d: Affine, dst_crs: int | CRS | None) -> tuple[_Axis, _Axis] | None:
    # Cached: a chip warps several arrays of one scene window (bands, QA) onto one grid,
    # and building the axes cost a tenth of each warp. Callers never modify them.
    if s.b or s.d or d.b or d.d or d.a * s.a <= 0 or d.e * s.e <= 0:
        return None  # rotated or flipped grids: leave them to GDAL
    if abs(d.a) > abs(s.a) * (1 + 1e-9) or abs(d.e) > abs(s.e) * (1 + 1e-9):
        return None  # downsampling: GDAL widens the kernel; do not imitate that here
    if src_crs != dst_crs:
        return None
    (h, w), (hd, wd) = src_shape, dst_shape
    return _axis(hd, d.f, d.e, h, s.f, s.e), _axis(wd, d.c, d.a, w, s.c, s.a)


def _bilinear(src: np.ndarray, ay: _Axis, ax: _Axis, out: np.ndarray | None = None
              ) -> np.ndarray:
    """Bilinear ``src (..., y, x)`` by ``_bilinear_kernel``: float32, NaN where GDAL has none."""
    lead, (h, w) = src.shape[:-2], src.shape[-2:]
    flat = np.ascontiguousarray(src, dtype=np.float32).reshape(-1, h, w)
    shape = (*lead, len(ay.i0), len(ax.i0))
    out = output_array(out, shape)
    if out.size:  # (the kernel takes the min and max of the axes' indices)
        _bilinear_kernel(flat, ay, ax, out.reshape(flat.shape[0], *shape[-2:]))
    return out


def output_array(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``out`` checked to be a C-ordered float32 array of ``shape``, or a new one: where a
    warp writes (this kernel's, or GDAL's through ``reproject.array_to_grid``)."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out is {out.dtype} {out.shape}; the warp needs C-ordered "
                         f"float32 {shape}")
    return out


@cached_njit
def _bilinear_kernel(src: np.ndarray, ay: _Axis, ax: _Axis, out: np.ndarray) -> None:
    """Bilinear ``src (band, y, x)`` into ``out (band, y, x)``, GDAL's way (see the module).

    Separable: each source row the output uses is resampled along x into scratch rows
    that stay in cache, and each output row is then a weighted pair of them, written
    once (numpy made ~10 full-size temporaries). Without NaN in the window (the usual
    chip) only values are resampled, and weights are renormalised only on the edges;
    with NaN, the weights of valid neighbours are resampled too. The float32 operations
    and their order are those of the numpy version it replaced: the same numbers.
    """
    n_bands, height, width = src.shape
    finite = True
    for b in range(n_bands):
        for r in range(height):
            for c in range(width):
                value = src[b, r, c]
                finite &= value - value == 0  # False for NaN and +-inf; no branch
    renormalise = not (finite and ay.interior and ax.interior)
    first, last = ay.i0.min(), ay.i1.max()  # the source rows that the output uses
    n_y, n_x = out.shape[1], out.shape[2]
    values = np.empty((last - first + 1, n_x), dtype=np.float32)
    # With NaN only: resampled weights of the valid neighbours, and whether the source
    # pixel under each target centre is valid (1 or 0: GDAL gives no value if not).
    weights = np.empty((last - first + 1, n_x), dtype=np.float32)
    centre_ok = np.empty((last - first + 1, n_x), dtype=np.float32)
    zero, one, min_weight = np.float32(0), np.float32(1), np.float32(_MIN_WEIGHT)
    for b in range(n_bands):
        for r in range(first, last + 1):
            row, i = src[b, r], r - first
            if finite:
                for x in range(n_x):
                    values[i, x] = row[ax.i0[x]] * ax.w0[x] + row[ax.i1[x]] * ax.w1[x]
                continue
            for x in range(n_x):
                left, right, centre = row[ax.i0[x]], row[ax.i1[x]], row[ax.nearest[x]]
                left_ok, right_ok = left - left == 0, right - right == 0
                values[i, x] = ((left if left_ok else zero) * ax.w0[x]
                                + (right if right_ok else zero) * ax.w1[x])
                weights[i, x] = ((one if left_ok else zero) * ax.w0[x]
                                 + (one if right_ok else zero) * ax.w1[x])
                centre_ok[i, x] = one if centre - centre == 0 else zero
        for y in range(n_y):
            top, below = ay.i0[y] - first, ay.i1[y] - first
            a, c = ay.w0[y], ay.w1[y]
            if not renormalise:
                for x in range(n_x):
                    out[b, y, x] = values[top, x] * a + values[below, x] * c
            elif not ay.inside[y]:
                out[b, y, :] = np.nan
            elif finite:
                weight_y = a + c
                for x in range(n_x):
                    weight = weight_y * (ax.w0[x] + ax.w1[x])  # < 1 only on the edges
                    value = (values[top, x] * a + values[below, x] * c) / weight
                    out[b, y, x] = value if ax.inside[x] & (weight >= min_weight) else np.nan
            else:
                ok = centre_ok[ay.nearest[y] - first]
                for x in range(n_x):
                    weight = (weights[top, x] * a + weights[below, x] * c) * ok[x]
                    value = (values[top, x] * a + values[below, x] * c) / weight
                    out[b, y, x] = value if ax.inside[x] & (weight >= min_weight) else np.nan


def fast_warp(
    src: np.ndarray, src_box: GeoBox, dst_box: GeoBox, resampling: Resampling,
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """``src (..., y, x)`` on ``src_box`` resampled onto ``dst_box`` (into ``out`` when
    given); None if not separable."""
    if resampling not in (Resampling.bilinear, Resampling.nearest):
        return None
    axes = _axes(src_box, dst_box)
    if axes is None:
        return None
    ay, ax = axes
    if resampling == Resampling.bilinear:
        return _bilinear(src, ay, ax, out)
    picked = np.asarray(src, dtype=np.float32)[..., ay.nearest[:, None], ax.nearest[None, :]]
    if out is None:
        out = picked
    else:
        output_array(out, picked.shape)[...] = picked
    out[..., ~ay.inside, :] = np.nan
    out[..., ~ax.inside] = np.nan
    return out


def fast_nearest(src: np.ndarray, src_box: GeoBox, dst_box: GeoBox,
                 fill: int) -> np.ndarray | None:
    """Nearest-neighbour ``src (..., y, x)`` onto ``dst_box`` in its own dtype (QA bit
    fields stay integers), ``fill`` outside the source; None if not separable."""
    axes = _axes(src_box, dst_box)
    if axes is None:
        return None
    ay, ax = axes
    out = np.take(np.take(src, ax.nearest, axis=-1), ay.nearest, axis=-2)
    out[..., ~ay.inside, :] = fill
    out[..., ~ax.inside] = fill
    return out
