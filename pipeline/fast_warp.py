"""Separable resampling between north-up grids of one CRS (or one UTM zone's north and
south forms), as GDAL would do it, in numpy.

Chip building warps every band window of every candidate scene onto the 15 m chip grid.
When the scene and the chip share a CRS (the usual case: both in the event's UTM zone)
and the chip is at least as fine as the scene, the warp is an axis-aligned resampling:
bilinear is a weighted pair of rows, then of columns. Doing that in numpy is 2-4x
faster than a GDAL warp call at chip sizes, and gives GDAL's numbers: source pixel
centres at (i + 0.5), NaN neighbours left out and the weights renormalised, and NaN
where the target centre falls outside the source or on a NaN source pixel. Other cases
return None and the caller uses GDAL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

#: GDAL gives nodata when the valid weights sum to less than this.
_MIN_WEIGHT = 1e-5


@dataclass(frozen=True)
class _Axis:
    """Along one axis: per target pixel, two source indices and bilinear weights."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    nearest: np.ndarray
    inside: np.ndarray


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
    return _Axis(np.clip(i0, 0, n_src - 1), np.clip(i1, 0, n_src - 1), w0, w1, nearest, inside)


@lru_cache(maxsize=512)
def _axes(src_box: GeoBox, dst_box: GeoBox) -> tuple[_Axis, _Axis] | None:
    # Cached: a chip warps several arrays of one scene window (bands, QA) onto one grid,
    # and building the axes cost a tenth of each warp. Callers never modify them.
    s, d = src_box.affine, dst_box.affine
    if s.b or s.d or d.b or d.d or d.a * s.a <= 0 or d.e * s.e <= 0:
        return None  # rotated or flipped grids: leave them to GDAL
    if abs(d.a) > abs(s.a) * (1 + 1e-9) or abs(d.e) > abs(s.e) * (1 + 1e-9):
        return None  # downsampling: GDAL widens the kernel; do not imitate that here
    shift = northing_shift(src_box.crs.epsg, dst_box.crs.epsg) if src_box.crs != dst_box.crs \
        else 0.0
    if shift is None:
        return None
    (h, w), (hd, wd) = src_box.shape, dst_box.shape
    return _axis(hd, d.f, d.e, h, s.f + shift, s.e), _axis(wd, d.c, d.a, w, s.c, s.a)


def northing_shift(src_epsg: int | None, dst_epsg: int | None) -> float | None:
    """Offset from source to target northings when two CRSs are one UTM zone's north
    (EPSG:326zz) and south (327zz) forms: the same projection, the south form with a
    10,000 km false northing. USGS delivers Landsat in 326zz; the map tiles and chips
    may use either, and a GDAL warp for a pure shift would cost 3x the whole tile."""
    if src_epsg is None or dst_epsg is None:
        return None
    if 32601 <= src_epsg <= 32660 and dst_epsg == src_epsg + 100:
        return 10_000_000.0  # a north northing is 10,000 km less than the south one
    if 32701 <= src_epsg <= 32760 and dst_epsg == src_epsg - 100:
        return -10_000_000.0
    return None


def _separable(data: np.ndarray, ay: _Axis, ax: _Axis) -> np.ndarray:
    # Columns first, on the small source; np.take and in-place products make ~1.5x fewer
    # temporaries than fancy indexing (measured 0.95 vs 1.5 ms for a 6-band chip).
    cols = np.take(data, ax.i0, axis=-1)
    cols *= ax.w0
    right = np.take(data, ax.i1, axis=-1)
    right *= ax.w1
    cols += right
    out = np.take(cols, ay.i0, axis=-2)
    out *= ay.w0[:, None]
    below = np.take(cols, ay.i1, axis=-2)
    below *= ay.w1[:, None]
    out += below
    return out


def _interior(axis: _Axis) -> bool:
    """True when every target pixel is inside the source with both neighbours in it."""
    return bool(axis.inside.all() and np.all(axis.w0 + axis.w1 > 1 - 1e-6))


def fast_warp(
    src: np.ndarray, src_box: GeoBox, dst_box: GeoBox, resampling: Resampling
) -> np.ndarray | None:
    """``src (..., y, x)`` on ``src_box`` resampled onto ``dst_box``; None if not separable."""
    if resampling not in (Resampling.bilinear, Resampling.nearest):
        return None
    axes = _axes(src_box, dst_box)
    if axes is None:
        return None
    ay, ax = axes
    src = np.asarray(src, dtype=np.float32)
    if resampling == Resampling.nearest:
        out = src[..., ay.nearest[:, None], ax.nearest[None, :]]
    else:
        valid = np.isfinite(src)
        if valid.all():
            if _interior(ay) and _interior(ax):
                # The usual chip, well inside its scene window: weights sum to 1 and
                # nothing is outside, so there is nothing to renormalise or mask.
                return _separable(src, ay, ax)
            weight = np.outer(ay.w0 + ay.w1, ax.w0 + ax.w1)  # < 1 only on the edges
            out = _separable(src, ay, ax)
        else:
            weight = _separable(valid.astype(np.float32), ay, ax)
            out = _separable(np.where(valid, src, np.float32(0)), ay, ax)
            # As GDAL: no value where the source pixel under the target centre has none.
            weight *= valid[..., ay.nearest[:, None], ax.nearest[None, :]]
        with np.errstate(divide="ignore", invalid="ignore"):
            out /= weight
        out[..., weight < _MIN_WEIGHT] = np.nan  # (boolean assignment: no np.where copies)
    out = np.array(out, dtype=np.float32, copy=False)
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
