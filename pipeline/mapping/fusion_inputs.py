"""A map piece's fusion-head inputs, kept as statistics that merge across tiles.

The fusion head sees an event's region-mean logits, the region mean and std of each
normalised input channel (``forestnet_model.model.region_band_stats``) and its aux scalars.
A map event may span tiles, so each piece keeps moments (mean and variance per channel)
and its scalars; :func:`merge_fusion_inputs` combines the pieces of one event, pixel
weighted, into what one chip over the whole event would give.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.training_set.auxiliary import AUX_FEATURE_REGISTRY, AuxContext

BAND_MEAN, BAND_VAR, AUX_VALUES = "band_mean", "band_var", "aux_values"
FUSION_COLUMNS = [BAND_MEAN, BAND_VAR, AUX_VALUES]
#: Added to the variance before the square root, as ``region_band_stats`` does.
STD_EPSILON = 1e-6


def scalar_names(features: Sequence[str]) -> tuple[str, ...]:
    """The scalars a piece keeps: the fusion features, then the region mean of the band of
    each std feature that lacks it (a std merges through its mean)."""
    names = list(features)
    for name in features:
        entry = AUX_FEATURE_REGISTRY[name]
        companion = f"{entry.source}_mean"
        if entry.merge == "std" and companion not in names:
            names.append(companion)
    return tuple(names)


def region_means(
    values: np.ndarray, labels: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each channel ``(n, C)`` over the pixels labelled 1..n (the pooled pixel
    logits, or band values), and the pixel counts."""
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)[1:n + 1].astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=c.ravel(), minlength=n + 1)[1:n + 1]
                     for c in values], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts


def piece_band_moments(x: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance ``(n, C)`` of each channel of ``x (C, H, W)`` over the
    pixels labelled 1..n."""
    values = x.astype(np.float64)
    mean, _ = region_means(values, labels, n)
    squares, _ = region_means(values * values, labels, n)
    return mean, np.maximum(squares - mean ** 2, 0.0)


def piece_scalars(ctx: AuxContext, regions: Sequence, masks: Sequence[np.ndarray],
                  names: Sequence[str]) -> np.ndarray:
    """Scalars ``(pieces, names)`` of each piece: its region (in the chip's CRS) and its
    pixels ``masks[k]``, over the context's chip (rasters are read once)."""
    out = np.full((len(regions), len(names)), np.nan)
    for k, region in enumerate(regions):
        piece = ctx.for_region(region, masks[k])
        out[k] = [piece.scalar(name) for name in names]
    return out


def merge_fusion_inputs(
    weights: np.ndarray, band_mean: np.ndarray, band_var: np.ndarray, aux: np.ndarray,
    names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event's moments and scalars from its pieces' (rows), weighted by pixel count."""
    mean, var, merged = merge_fusion_groups(np.zeros(1, np.int64), weights, band_mean,
                                            band_var, aux, names)
    return mean[0], var[0], merged[0]


def merge_fusion_groups(
    starts: np.ndarray, weights: np.ndarray, band_mean: np.ndarray, band_var: np.ndarray,
    aux: np.ndarray, names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`merge_fusion_inputs` of many events at once: rows are pieces sorted by event,
    ``starts`` the first row of each; returns ``(events, C)``, ``(events, C)`` and
    ``(events, len(names))``. NaN scalars do not vote; an all-NaN scalar stays NaN."""
    starts = np.asarray(starts, np.int64)
    event = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(weights)]))
    weights = np.asarray(weights, np.float64)
    w = weights / np.add.reduceat(weights, starts)[event]
    band_mean, band_var = np.asarray(band_mean, np.float64), np.asarray(band_var, np.float64)
    mean = np.add.reduceat(w[:, None] * band_mean, starts)
    var = np.maximum(np.add.reduceat(w[:, None] * (band_var + band_mean ** 2), starts)
                     - mean ** 2, 0.0)
    aux = np.asarray(aux, np.float64)
    merged = np.full((len(starts), len(names)), np.nan)
    for j, name in enumerate(names):
        values, rule = aux[:, j], AUX_FEATURE_REGISTRY[name].merge
        ok = np.isfinite(values)
        voted = np.add.reduceat(ok.astype(np.int64), starts) > 0
        if rule in ("min", "max"):
            fill = np.inf if rule == "min" else -np.inf
            reduce = np.minimum if rule == "min" else np.maximum
            merged[:, j] = np.where(voted, reduce.reduceat(np.where(ok, values, fill), starts),
                                    np.nan)
            continue
        kept = np.where(ok, w, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = kept / np.add.reduceat(kept, starts)[event]
        share = np.where(ok, share, 0.0)
        if rule == "mean":
            result = np.add.reduceat(share * np.where(ok, values, 0.0), starts)
        else:  # std: through the band's region mean, kept beside it (scalar_names)
            means = aux[:, list(names).index(f"{AUX_FEATURE_REGISTRY[name].source}_mean")]
            means, values = np.where(ok, means, 0.0), np.where(ok, values, 0.0)
            total = np.add.reduceat(share * means, starts)
            result = np.sqrt(np.maximum(
                np.add.reduceat(share * (values ** 2 + means ** 2), starts) - total ** 2, 0.0))
        merged[:, j] = np.where(voted, result, np.nan)
    return mean, var, merged


def band_stats(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``(N, 2C)``: the means, then the stds, as ``region_band_stats`` lays them out."""
    return np.concatenate([mean, np.sqrt(var + STD_EPSILON)], axis=-1)
