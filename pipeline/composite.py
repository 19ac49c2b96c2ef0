"""The composite view: ForestNet's per-pixel median of a chip's usable scene pixels.

Chip building and mapping both take the median of a few views (the 5 least cloudy, or
every view passing the cloud filter) at every pixel and band. ``np.nanmedian`` dominated
chip building; one numba kernel does it in a single pass instead. Per image row it
sorts the views' values with an odd-even transposition network of min/max across the
whole row, then picks each pixel's middle value(s) by its count of usable views. Every
step is branch-free, so it vectorises: a per-pixel insertion sort was 5-10x slower, its
branches mispredicting on every pixel. Measured on 5 views of a 6-band 332 x 332 chip:
2.5 ms whatever the cloud cover, against 12 ms for the numpy min/max networks over
whole arrays that it replaced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.jit import cached_njit

if TYPE_CHECKING:  # chips imports this module: only the type comes from there
    from pipeline.chips import SceneView


def composite(views: list[SceneView], pool: int) -> np.ndarray:
    """Per-pixel median of usable pixels of the views (the ``pool`` least cloudy if few pass).

    Pixels with no usable observation fall back to the median of all pool values there,
    then to 0 outside every scene, so the model always sees finite values.
    """
    stack = np.stack([v.image for v in views]).astype(np.float32, copy=False)  # (v, b, y, x)
    usable = np.stack([v.usable for v in views]).astype(bool, copy=False)  # (view, y, x)
    return _median(stack, usable, np.float32(0.0))


def nanmedian_views(stack: np.ndarray) -> np.ndarray:
    """``np.nanmedian(stack, axis=0)`` for a stack of a few views, without its overhead.

    Computed in float32 and returned in the stack's dtype; NaN where no view has a value.
    """
    n, shape = stack.shape[0], stack.shape[1:]
    if n == 0 or 0 in shape:
        return np.full(shape, np.nan, dtype=stack.dtype)
    width = shape[-1] if shape else 1
    values = np.ascontiguousarray(stack, dtype=np.float32).reshape(n, 1, -1, width)
    # Every view counts; the kernel still leaves NaN values out.
    usable = np.ones((n, *values.shape[2:]), dtype=bool)
    out = _median(values, usable, np.float32(np.nan))
    return out.reshape(shape).astype(stack.dtype, copy=False)


def _median(stack: np.ndarray, usable: np.ndarray, fill: np.float32) -> np.ndarray:
    """``_median_kernel`` on C-ordered float32/bool arrays: one compiled specialisation."""
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    usable = np.ascontiguousarray(usable, dtype=bool)
    out = np.empty(stack.shape[1:], dtype=np.float32)
    _median_kernel(stack, usable, fill, out)
    return out


@cached_njit
def _median_kernel(stack: np.ndarray, usable: np.ndarray, fill: np.float32,
                   out: np.ndarray) -> None:
    """``out[b, y, x]``: median over views of ``stack (view, band, y, x)`` where
    ``usable (view, y, x)`` and the value is not NaN (the mean of the middle two for an
    even count); where no view counts, the median of the non-NaN values of all views;
    where there are none, ``fill``."""
    n, n_bands, height, width = stack.shape
    rows = np.empty((n, width), dtype=np.float32)  # one image row of every view, sorted
    n_usable = np.empty(width, dtype=np.int32)
    n_finite = np.empty(width, dtype=np.int32)
    absent = np.float32(np.inf)  # sorts after every value, so counted values come first
    # Every loop over x is branch-free (bitwise &, |, selects), so it vectorises; the
    # all-cloudy fallback is a select too: a per-pixel branch and sort for it made the
    # kernel 2.5x slower at 13% all-cloudy pixels, and 6x at 60%.
    for b in range(n_bands):
        for y in range(height):
            n_usable[:] = 0
            n_finite[:] = 0
            for v in range(n):
                for x in range(width):
                    value = stack[v, b, y, x]
                    finite = value == value
                    n_usable[x] += np.int32(usable[v, y, x] & finite)
                    n_finite[x] += np.int32(finite)
            for v in range(n):
                row = rows[v]
                for x in range(width):
                    value = stack[v, b, y, x]
                    counted = (value == value) & (usable[v, y, x] | (n_usable[x] == 0))
                    row[x] = value if counted else absent
            for sweep in range(n):  # odd-even transposition: n sweeps sort n values
                for i in range(sweep % 2, n - 1, 2):
                    low, high = rows[i], rows[i + 1]
                    for x in range(width):
                        a, c = low[x], high[x]
                        low[x] = min(a, c)
                        high[x] = max(a, c)
            for x in range(width):
                k = n_usable[x] if n_usable[x] > 0 else n_finite[x]
                at = max(k, 1)  # a valid row even where nothing counts (the value is unused)
                middle = (rows[(at - 1) // 2, x] + rows[at // 2, x]) * np.float32(0.5)
                out[b, y, x] = middle if k > 0 else fill
