"""Driver probabilities of merged map events, from the bundle that was evaluated.

The events' region statistics (merged across tiles) go through the same step as
evaluation's (``forestnet_model.predict.event_probabilities``), so a fusion bundle's map
comes from its fusion head, never from the bare region-mean logits.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np

from forestnet_model.bundle_meta import read_bundle_meta
from pipeline.mapping.fusion_inputs import AUX_VALUES, BAND_MEAN, BAND_VAR, band_stats
from pipeline.mapping.piece_merge import LOGIT_COLUMNS


def bundle_scalars(bundle: Path) -> tuple[str, ...]:
    """The fusion features of a bundle (empty for a model without them)."""
    return read_bundle_meta(Path(bundle)).model.fusion_features


#: The events-table column naming the fusion features each event lacked (comma-separated):
#: the model saw their training mean instead.
IMPUTED = "imputed_inputs"


def imputed_inputs(events: gpd.GeoDataFrame, features: tuple[str, ...]) -> list[str]:
    """For each event, the fusion features it has no value for, comma-separated."""
    if not features or AUX_VALUES not in events or not len(events):
        return [""] * len(events)
    n = len(features)
    values = np.stack([np.asarray(v, np.float64)[:n] if len(v) >= n else np.full(n, np.nan)
                       for v in events[AUX_VALUES]])
    # One string per pattern of missing features, not one join per event.
    patterns, which = np.unique(~np.isfinite(values), axis=0, return_inverse=True)
    names = [",".join(f for f, gone in zip(features, row, strict=True) if gone)
             for row in patterns]
    return [names[k] for k in which.ravel()]


def imputed_counts(events: gpd.GeoDataFrame, features: tuple[str, ...]) -> dict[str, int]:
    """How many of the events with a driver lacked each fusion feature, and ``""``: how
    many events with a driver there are (counts add up over batches of events)."""
    rows = events[events["driver_code"] > 0] if "driver_code" in events else events
    counts = {f: 0 for f in features} | {"": len(rows)}
    if IMPUTED in rows and len(rows):
        for names, n in rows[IMPUTED].fillna("").astype(str).value_counts().items():
            for f in set(filter(None, names.split(","))) & set(features):
                counts[f] += int(n)
    return counts


def imputed_fractions(events: gpd.GeoDataFrame, features: tuple[str, ...]) -> dict[str, float]:
    """Share of the events with a driver whose value of each fusion feature was imputed."""
    return fractions_of(imputed_counts(events, features), features)


def fractions_of(counts: dict[str, int], features: tuple[str, ...]) -> dict[str, float]:
    """:func:`imputed_fractions` from (summed) :func:`imputed_counts`."""
    total = counts.get("", 0)
    return {f: round(counts.get(f, 0) / total, 4) if total else 0.0 for f in features}


def event_driver_probabilities(events: gpd.GeoDataFrame, bundle: Path) -> np.ndarray:
    """``(events, classes)`` probabilities; NaN rows for events without imagery."""
    # The model stack loads only where events are classified, never where maps are planned.
    from forestnet_model.predict import cached_bundle, event_probabilities

    model, meta = cached_bundle(str(Path(bundle).resolve()), "cpu")
    logits = events[LOGIT_COLUMNS].to_numpy(np.float64)
    probs = np.full(logits.shape, np.nan)
    has = np.isfinite(logits).all(axis=1)
    if not has.any():
        return probs
    rows = events[has]
    stats = band_stats(np.stack(rows[BAND_MEAN].to_numpy()),
                       np.stack(rows[BAND_VAR].to_numpy()))
    n_features = len(meta.model.fusion_features)
    scalars = np.stack(rows[AUX_VALUES].to_numpy())[:, :n_features] if n_features else None
    probs[has] = event_probabilities(model, meta, logits[has], stats, scalars)
    return probs
