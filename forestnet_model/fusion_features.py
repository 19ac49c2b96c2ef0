"""Which aux scalars may feed the fusion head, decided once on the training events.

A scalar that is constant over the training events carries no information, and one that is
missing on most of them is mostly the imputed mean: either would reach the head as a
near-constant input whose normalisation statistics then amplify any other value met at map
time. Both are dropped before the model is built; the bundle records which and why, and
every kept feature's missing fraction, so the map can say how much of it was imputed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Missing on more than this share of the training events: dropped from the fusion inputs.
MAX_MISSING_TO_TRAIN = 0.5
#: Missing on more than this share of the events (training or mapped): a warning.
WARN_MISSING = 0.2
#: A feature whose spread is below this, relative to its magnitude (at least 1), is constant.
CONSTANT_TOLERANCE = 1e-6


def missing_fractions(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Share of rows of ``values (N, len(names))`` where each feature is not finite."""
    values = np.asarray(values, np.float64).reshape(-1, len(names))
    if not len(values):
        return {name: 0.0 for name in names}
    missing = 1.0 - np.isfinite(values).mean(axis=0)
    return {name: round(float(m), 4) for name, m in zip(names, missing, strict=True)}


def unusable_features(values: np.ndarray, names: Sequence[str]) -> dict[str, str]:
    """``{feature: reason}`` for the features the fusion head must not see: constant over
    the training events, or missing on more than :data:`MAX_MISSING_TO_TRAIN` of them."""
    values = np.asarray(values, np.float64).reshape(-1, len(names))
    dropped: dict[str, str] = {}
    for name, column, missing in zip(names, values.T, missing_fractions(values, names).values(),
                                     strict=True):
        finite = column[np.isfinite(column)]
        if missing > MAX_MISSING_TO_TRAIN:
            dropped[name] = f"missing on {missing:.0%} of the training events"
        elif finite.size and finite.std() <= CONSTANT_TOLERANCE * max(1.0, np.abs(finite).max()):
            dropped[name] = f"constant ({finite[0]:.6g}) over the training events"
    return dropped


def choose_fusion_features(values: np.ndarray, names: Sequence[str]) -> dict:
    """The fusion inputs of a training run: ``kept`` names, ``dropped`` with reasons and
    the ``missing_fraction`` of every requested feature; each drop, and each kept feature
    missing on more than :data:`WARN_MISSING` of the events, is logged as a warning."""
    dropped = unusable_features(values, names)
    missing = missing_fractions(values, names)
    for name, reason in dropped.items():
        log.warning("fusion feature %s dropped: %s", name, reason)
    kept = tuple(n for n in names if n not in dropped)
    for line in missing_warnings(missing, kept, "training events"):
        log.warning(line)
    return {"kept": list(kept), "dropped": dropped, "missing_fraction": missing}


def missing_warnings(missing: dict[str, float], names: Sequence[str], what: str) -> list[str]:
    """A warning per feature of ``names`` missing on more than :data:`WARN_MISSING` of
    ``what``: the model saw those values as their training mean."""
    return [f"fusion feature {name} is missing on {missing[name]:.0%} of the {what} "
            "(imputed with its training mean)" for name in names
            if missing.get(name, 0.0) > WARN_MISSING]
