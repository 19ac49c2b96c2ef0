"""Arrays as the model sees them: standardised, padded to the encoder's stride, and cut to
each event's window. Pure numpy, shared by training, evaluation and mapping; no torch, so
the processes that plan and check work never load the model stack.
"""

from __future__ import annotations

import numpy as np


def display_clip(x: np.ndarray, display_max: list[float | None]) -> np.ndarray:
    """Clip the leading ``(C, ...)`` channels that have a display range to ``[0, max]``
    (``pipeline.core.radiometry.DISPLAY_MAX``); None and the channels after them (aux
    bands) are left alone, and NaN stays NaN."""
    n = len(x)
    top = np.full(n, np.inf, np.float32)
    bottom = np.full(n, -np.inf, np.float32)
    for i, m in enumerate(display_max[:n]):
        if m is not None:
            top[i], bottom[i] = m, 0.0
    shape = (n,) + (1,) * (x.ndim - 1)
    return np.clip(x, bottom.reshape(shape), top.reshape(shape))


def normalise(x: np.ndarray, stats: dict[str, list]) -> np.ndarray:
    """Standardise ``(C, H, W)`` channels; NaN (no data) becomes 0, the channel mean.

    Bands are first clipped to the release's display range where the statistics record
    one (``display_max``): the release holds nothing brighter (clouds, haze and bright
    soil saturate at 255), so a model sees the same numbers from the release and from
    chips built from scenes. Bundles from before the clip record none.
    """
    if "display_max" in stats:
        x = display_clip(x, stats["display_max"])
    mean = np.asarray(stats["mean"], np.float32)[:, None, None]
    std = np.asarray(stats["std"], np.float32)[:, None, None]
    return np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def normalise_scalars(values: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Standardise ``(..., F)`` scalars with the bundle's training statistics; NaN -> 0."""
    values = np.asarray(values, np.float32)
    if values.shape[-1] == 0:
        return values
    mean = np.asarray(stats["scalar_mean"], np.float32)
    std = np.asarray(stats["scalar_std"], np.float32)
    return np.nan_to_num((values - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)


def pad_to_multiple(x: np.ndarray, multiple: int = 32) -> np.ndarray:
    """Zero-pad the last two axes up to a multiple (encoders downsample by 32)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pad = [(0, 0)] * (x.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
    return np.pad(x, pad)


def span_about(first: int, stop: int, context: int, stride: int = 32) -> tuple[int, int]:
    """``(start, stop)`` of the pixels ``[first, stop)`` plus ``context`` each side, grown
    to a multiple of ``stride`` about their centre; unbounded (may start below 0)."""
    lo, hi = first - context, stop + context
    length = -(-(hi - lo) // stride) * stride
    start = (lo + hi - length) // 2
    return start, start + length


def event_span(mask: np.ndarray, context: int, stride: int = 32
               ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((row0, row1), (col0, col1))`` of an event's window before it is kept inside the
    array: the loss region's bounding box plus ``context`` pixels each side, grown to a
    multiple of ``stride`` about its centre. May start below 0 or end past the array.

    Its placement relative to the region does not depend on the array's extent (shifting
    the region by d shifts the span by exactly d), so a map tile read with enough halo
    cuts each piece the window an event chip gives it. None when the mask is empty.
    """
    if not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (span_about(int(rows[0]), int(rows[-1]) + 1, context, stride),
            span_about(int(cols[0]), int(cols[-1]) + 1, context, stride))


def event_window(mask: np.ndarray, context: int | None, stride: int = 32
                 ) -> tuple[slice, slice]:
    """Rows and columns of an event's window: :func:`event_span`, kept inside the chip.

    The whole chip when ``context`` is None, the region is empty or the window would not
    fit. A pure function of the mask, so an event's prediction never depends on the other
    events of its batch. Context beyond about 1 km adds cost, not evidence: at 15 m the
    default window is 4-10x fewer pixels than ForestNet's 332 x 332 chip.
    """
    whole = slice(None), slice(None)
    span = None if context is None else event_span(mask, context, stride)
    if span is None:
        return whole
    windows = []
    for (start, stop), size in zip(span, mask.shape, strict=True):
        length = stop - start
        if length >= size:
            return whole
        start = min(max(start, 0), size - length)
        windows.append(slice(start, start + length))
    return windows[0], windows[1]


def same_shape_batches(shapes: list[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices of ``shapes`` in batches of at most ``batch_size`` that share one shape
    (event windows differ in size; each keeps its own, so a batch never pads one)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return [group[s:s + batch_size] for group in groups.values()
            for s in range(0, len(group), batch_size)]
