"""Per-event loss-region statistics from a chip store: the random-forest baseline's inputs.

ForestNet's random-forest baselines (Irvin et al. 2020) see summary statistics of the
composite inside the loss region, not pixels. Two feature sets mirror theirs:

- ``visible``: min/max/mean/std/median of red, green and blue;
- ``visible+aux``: the same for nir, swir1, swir2 and NDVI as well, plus every per-event
  aux scalar the store holds (region statistics of terrain and tree cover, distances,
  peat, climate).

Statistics ignore NaN pixels (no data). An event whose loss mask is empty falls back to
the whole chip, so it still gets features instead of a row of NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from forestnet_model.data import split_indices
from pipeline.core.drivers import DRIVER_CLASSES

STATS: tuple[str, ...] = ("min", "max", "mean", "std", "median")
VISIBLE_BANDS: tuple[str, ...] = ("red", "green", "blue")
INFRARED_BANDS: tuple[str, ...] = ("nir", "swir1", "swir2")


@dataclass(frozen=True)
class FeatureSet:
    """What one feature set reads from the store."""

    bands: tuple[str, ...]
    ndvi: bool  # NDVI is computed from ``bands``, which must then hold red and nir
    aux_scalars: bool

    def __post_init__(self) -> None:
        if self.ndvi and not {"red", "nir"} <= set(self.bands):
            raise ValueError(f"NDVI needs red and nir among the bands, not {self.bands}")


FEATURE_SETS: dict[str, FeatureSet] = {
    "visible": FeatureSet(VISIBLE_BANDS, ndvi=False, aux_scalars=False),
    "visible+aux": FeatureSet(VISIBLE_BANDS + INFRARED_BANDS, ndvi=True, aux_scalars=True),
}


@dataclass(frozen=True)
class FeatureTable:
    """Features of one split: ``X (events, features)``, class indices ``y``, names, ids."""

    X: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]
    event_ids: tuple[str, ...]


def feature_set(name: str) -> FeatureSet:
    """Look up a feature set; an unknown name lists the valid ones."""
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; valid: {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """(nir - red) / (nir + red); NaN where the sum is not positive (no vegetation signal)."""
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (nir - red) / total, np.nan).astype(np.float32)


def region_stats(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Statistics (``STATS`` order) of each band ``(B, H, W)`` over the region ``mask``.

    NaN pixels are left out; an empty region uses the whole chip; a band with no finite
    pixel gets NaN (the baseline imputes it).
    """
    inside = np.asarray(mask, bool)
    if not inside.any():
        inside = np.ones_like(inside)
    pixels = values[:, inside].astype(np.float64)  # (B, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands: NaN is the answer
        return np.stack([
            np.nanmin(pixels, axis=1),
            np.nanmax(pixels, axis=1),
            np.nanmean(pixels, axis=1),
            np.nanstd(pixels, axis=1),
            np.nanmedian(pixels, axis=1),
        ], axis=1)


def feature_names(spec: FeatureSet, aux_features: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Column names, in the order ``event_features`` fills them."""
    bands = spec.bands + (("ndvi",) if spec.ndvi else ())
    names = [f"{band}_{stat}" for band in bands for stat in STATS]
    if spec.aux_scalars:
        # Prefixed: the store's aux scalars include their own ``ndvi_mean`` etc.
        names += [f"aux_{f}" for f in aux_features]
    return tuple(names)


def event_features(
    chips: xr.Dataset, indices: np.ndarray, name: str, batch_size: int = 32
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Feature rows of the events ``indices`` (composite, view 0), read in batches so
    memory stays bounded by ``batch_size`` chips."""
    spec = feature_set(name)
    missing = [b for b in spec.bands if b not in set(map(str, chips["band"].values))]
    if missing:
        raise ValueError(f"chip store lacks bands {missing} needed by feature set {name!r}")
    aux_features = tuple(map(str, chips["feature"].values)) if spec.aux_scalars else ()
    names = feature_names(spec, aux_features)
    rows = []
    for start in range(0, len(indices), batch_size):
        idx = np.asarray(indices[start:start + batch_size])
        image = chips["image"].isel(event=idx, view=0).sel(band=list(spec.bands)).values
        if spec.ndvi:
            red, nir = image[:, spec.bands.index("red")], image[:, spec.bands.index("nir")]
            image = np.concatenate([image, ndvi(red, nir)[:, None]], axis=1)
        masks = chips["loss_mask"].isel(event=idx).values
        stats = np.stack([region_stats(im, mk).ravel() for im, mk in zip(image, masks,
                                                                           strict=True)])
        if aux_features:
            stats = np.concatenate(
                [stats, chips["aux_scalar"].isel(event=idx).values.astype(np.float64)], axis=1)
        rows.append(stats)
    X = np.concatenate(rows) if rows else np.zeros((0, len(names)))
    return X, names


def split_features(chips: xr.Dataset, split: str, name: str) -> FeatureTable:
    """Features and class indices of a split's labelled, built events."""
    indices = split_indices(chips, split)
    X, names = event_features(chips, indices, name)
    classes = list(DRIVER_CLASSES)
    y = np.array([classes.index(str(m)) for m in chips["merged_label"].values[indices]], int)
    ids = tuple(str(e) for e in chips["event_id"].values[indices])
    return FeatureTable(X=X, y=y, names=names, event_ids=ids)
