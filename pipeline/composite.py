"""The composite view: ForestNet's per-pixel median of a chip's usable scene pixels.

Chip building and mapping both take the median of a few views (the 5 least cloudy, or
every view passing the cloud filter) at every pixel and band. ``np.nanmedian`` dominated
chip building; these are branch-free min/max networks over whole arrays instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # chips imports this module: only the type comes from there
    from pipeline.chips import SceneView


def composite(views: list[SceneView], pool: int) -> np.ndarray:
    """Per-pixel median of usable pixels of the views (the ``pool`` least cloudy if few pass).

    Pixels with no usable observation fall back to the median of all pool values there,
    then to 0 outside every scene, so the model always sees finite values.
    """
    stack = np.stack([v.image for v in views]).astype(np.float32, copy=False)  # (v, b, y, x)
    usable = np.stack([v.usable for v in views])  # (view, y, x)
    # Hidden values become _LAST, which sorts after every reflectance: adding 0 or _LAST
    # per pixel (broadcast over bands) is much cheaper than a masked copy; fmin then maps
    # NaN (outside the scene) to _LAST too.
    hide = (~usable).astype(np.float32) * _LAST
    values = stack + hide[:, None]
    np.fmin(values, _LAST, out=values)
    out = _median_sorted(values, usable.sum(axis=0, dtype=np.int8))
    missing = np.isnan(out)
    if missing.any():
        out[missing] = nanmedian_views(stack[:, missing])
        out[np.isnan(out)] = 0.0
    return out


def _median_sorted(values: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Median of the first ``k`` of ``values (view, band, y, x)`` once sorted along views.

    ``k`` is ``(y, x)``, shared by the bands; values not counted must be ``_LAST``.
    Sorts with a small comparator network (elementwise min/max), then picks the middle
    value(s) arithmetically: row j weighs 1/2 for each of the two middle positions it
    holds (``_LAST * 0`` is 0), so there are no per-pixel branches or masked copies.
    NaN where ``k`` is 0 (or a counted value was ``_LAST``).
    """
    n = values.shape[0]
    rows = list(values)
    if n in _NETWORKS:
        for i, j in _NETWORKS[n]:
            low = np.minimum(rows[i], rows[j])
            np.maximum(rows[i], rows[j], out=rows[j])
            rows[i] = low
    else:
        rows = list(np.sort(values, axis=0))
    lo_at, hi_at = (k - 1) // 2, k // 2  # the middle one or two of the k counted values
    out = np.zeros_like(rows[0])
    for j in range(n // 2 + 1):  # the middle of k <= n values is never past row n // 2
        weight = ((lo_at == j).astype(np.float32) + (hi_at == j)) * np.float32(0.5)
        out += rows[j] * weight
    out[out >= _LAST / 2] = np.nan
    return out


#: Optimal sorting networks (comparator pairs) for up to 5 views: fewer passes than an
#: odd-even transposition sort, and each pass is two full-array min/max operations.
_NETWORKS: dict[int, list[tuple[int, int]]] = {
    1: [], 2: [(0, 1)], 3: [(0, 1), (1, 2), (0, 1)],
    4: [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)],
    5: [(0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)],
}
_LAST = np.float32(3.0e38)  # stands in for NaN so that it sorts last (and 0 * it is 0)


def nanmedian_views(stack: np.ndarray) -> np.ndarray:
    """``np.nanmedian(stack, axis=0)`` for a stack of a few views, without its overhead.

    NaN is replaced by a huge value so it sorts last; the k finite values of a pixel are
    then its first k, and the median is the mean of the middle two (NaN where k = 0). Up
    to 8 views an odd-even transposition network of elementwise min/max sorts them, else
    ``np.sort``; the middle values are picked arithmetically (no per-pixel branches). This
    made the composite ~10x faster than ``np.nanmedian``, which dominated chip building.
    """
    n = stack.shape[0]
    values = np.fmin(stack.astype(np.float32, copy=False), _LAST)  # fmin maps NaN to _LAST
    k = (values < _LAST).sum(axis=0)
    if n <= 8:
        rows = list(values)
        for p in range(n):
            for i in range(p % 2, n - 1, 2):
                rows[i], rows[i + 1] = np.minimum(rows[i], rows[i + 1]), np.maximum(
                    rows[i], rows[i + 1])
    else:
        rows = list(np.sort(values, axis=0))
    lo_at, hi_at = (k - 1) // 2, k // 2
    lo = np.zeros_like(rows[0])
    hi = np.zeros_like(rows[0])
    for j in range(n):
        lo += rows[j] * (lo_at == j)
        hi += rows[j] * (hi_at == j)
    out = (lo + hi) / 2
    out[k == 0] = np.nan
    return out.astype(stack.dtype, copy=False)
