"""The design of a stratified random reference sample over driver maps (Olofsson et al. 2014).

The sampling unit is one loss pixel of the mapped events. Strata are the mapped driver (or
driver and province); each stratum's pixels are drawn at random without replacement, all
with the same inclusion probability ``n_h / N_h``. Plain functions over attribute tables:
where a drawn pixel lies is asked of a ``locate`` callback, so that only the events drawn
are ever rasterized (:mod:`pipeline.accuracy.reference_gpkg` supplies it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import numpy as np
import pandas as pd

from pipeline.core.errors import ForestNetError

logger = logging.getLogger(__name__)


class SampleDesignError(ForestNetError, ValueError):
    """A sample that cannot be designed from these maps and settings; the message says why."""


#: ``--strata`` values -> the map fields that make a stratum.
STRATIFICATIONS: dict[str, tuple[str, ...]] = {
    "driver": ("driver",),
    "driver,province": ("driver", "province"),
}
#: Olofsson et al. (2014) suggest 50 to 100 units per stratum for rare classes.
MIN_PER_STRATUM = 50
#: Map fields the design reads.
DESIGN_FIELDS = ("event_id", "province", "loss_year", "driver", "area_ha", "n_pixels")

#: ``locate(rows, ks)``: centres (x, y) of the ``ks[i]``-th pixel (row-major) of the event in
#: row ``rows[i]`` of the features table, NaN where the event has fewer pixels.
Locate = Callable[[np.ndarray, np.ndarray], np.ndarray]


def check_choice(name: str, value: str, valid: Collection[str]) -> None:
    """Raise a :class:`SampleDesignError` listing the valid values if ``value`` is not one."""
    if value not in valid:
        raise SampleDesignError(f"unknown {name} {value!r}; expected one of {', '.join(valid)}")


def stratum_labels(features: pd.DataFrame, strata: str) -> pd.Series:
    """The stratum of each feature: its driver, or ``"<driver> | <province>"``."""
    check_choice("--strata", strata, STRATIFICATIONS)
    fields = STRATIFICATIONS[strata]
    labels = features[fields[0]].astype(str)
    for field in fields[1:]:
        labels = labels + " | " + features[field].astype(str)
    return labels.rename("stratum")


def strata_table(features: pd.DataFrame, strata: str) -> pd.DataFrame:
    """Per stratum, sorted by name: mapped loss area ``size_ha`` (already equal-area) and
    loss pixel count ``n_pixels`` (the population N_h)."""
    grouped = features.assign(stratum=stratum_labels(features, strata)).groupby(
        "stratum", sort=True)
    table = pd.DataFrame({"size_ha": grouped["area_ha"].sum().astype("float64"),
                          "n_pixels": grouped["n_pixels"].sum().astype("int64")})
    return table.reset_index()


def apportion(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """``total`` units over strata in proportion to ``weights``, none above its cap.

    A stratum whose share reaches its cap takes the cap, and the rest is shared again over
    the others; the integer parts go by largest remainder (ties to the first stratum), so
    the result sums to ``min(total, caps.sum())`` exactly.
    """
    weights = np.asarray(weights, np.float64)
    caps = np.asarray(caps, np.int64)
    total = min(int(total), int(caps.sum()))
    capped = caps <= 0
    while True:
        free = ~capped
        rest = total - int(caps[capped].sum())
        if not free.any():
            quota = np.zeros(0)
            break
        w = weights[free] if weights[free].sum() > 0 else np.ones(int(free.sum()))
        quota = rest * w / w.sum()
        over = quota >= caps[free]
        if not over.any():
            break
        capped[np.flatnonzero(free)[over]] = True
    out = np.where(capped, np.maximum(caps, 0), 0)
    floors = np.floor(quota).astype(np.int64)
    out[free] = floors
    leftover = total - int(out.sum())
    # Stable sort on the negated remainder: equal remainders go in stratum order.
    order = np.argsort(-(quota - floors), kind="stable")[:leftover]
    out[np.flatnonzero(free)[order]] += 1
    return out


def _proportional(size_ha: np.ndarray, n_pixels: np.ndarray, n: int) -> np.ndarray:
    return apportion(n, size_ha, n_pixels)


def _equal(size_ha: np.ndarray, n_pixels: np.ndarray, n: int) -> np.ndarray:
    return apportion(n, np.ones(len(size_ha)), n_pixels)


def _min50(size_ha: np.ndarray, n_pixels: np.ndarray, n: int) -> np.ndarray:
    base = np.minimum(MIN_PER_STRATUM, n_pixels)
    if base.sum() > n:
        logger.warning("a sample of %d cannot give each of %d strata %d units; "
                       "allocating it equally", n, len(n_pixels), MIN_PER_STRATUM)
        return _equal(size_ha, n_pixels, n)
    return base + apportion(n - int(base.sum()), size_ha, n_pixels - base)


#: ``--allocation`` values -> f(size_ha, n_pixels, n) -> sample size per stratum.
ALLOCATIONS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "min50": _min50,
    "equal": _equal,
    "proportional": _proportional,
}


def allocate(table: pd.DataFrame, n: int, allocation: str = "min50") -> np.ndarray:
    """Sample size per stratum (rows of :func:`strata_table`), summing to ``n`` (or to all
    pixels when there are fewer): ``min50`` gives each stratum min(50, N_h) and the rest in
    proportion to area; ``equal`` n/H each; ``proportional`` in proportion to area."""
    check_choice("--allocation", allocation, ALLOCATIONS)
    if n < len(table):
        raise SampleDesignError(f"a sample of {n} cannot cover the {len(table)} strata; "
                                f"ask for at least {len(table)} (one per stratum)")
    size_ha = table["size_ha"].to_numpy(np.float64)
    n_pixels = table["n_pixels"].to_numpy(np.int64)
    return ALLOCATIONS[allocation](size_ha, n_pixels, n).astype(np.int64)


def draw_stratum(
    n_pixels: np.ndarray, n: int, rng: np.random.Generator, locate: Locate
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct pixels drawn uniformly from events holding ``n_pixels`` pixels each.

    A global pixel index over ``sum(n_pixels)`` names an event (by the cumulative counts)
    and the pixel within it; ``locate`` places the pixels. Indices past an event's actual
    pixels (its count disagrees with its polygon) are dropped and drawn again, so every
    pixel that exists keeps the same chance. Returns the event positions and the (n, 2)
    centres in draw order; fewer than ``n`` (with a warning) if the events run out.
    """
    n_pixels = np.asarray(n_pixels, np.int64)
    ends = np.cumsum(n_pixels)
    total = int(ends[-1]) if len(ends) else 0
    seen: set[int] = set()
    rows: list[np.ndarray] = []
    points: list[np.ndarray] = []
    taken = 0
    while taken < n and len(seen) < total:
        # A random ordered subset holds at least ``need`` unseen indices; its unseen ones,
        # in order, continue one random permutation of all indices.
        need = n - taken
        drawn = rng.choice(total, size=min(total, need + len(seen)), replace=False)
        fresh = np.array([g for g in drawn.tolist() if g not in seen], np.int64)[:need]
        seen.update(fresh.tolist())
        event = np.searchsorted(ends, fresh, side="right")
        xy = locate(event, fresh - (ends[event] - n_pixels[event]))
        found = ~np.isnan(xy).any(axis=1)
        rows.append(event[found])
        points.append(xy[found])
        taken += int(found.sum())
    if taken < n:
        logger.warning("drew %d of %d pixels: the events' polygons hold fewer pixels than "
                       "their n_pixels on the loss pixel grid", taken, n)
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 2))
    return np.concatenate(rows), np.concatenate(points)


def design_sample(
    features: pd.DataFrame, n: int, locate: Locate, *, strata: str = "driver",
    allocation: str = "min50", seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stratified sample over ``features`` (:data:`DESIGN_FIELDS`, one row per event).

    Returns the points (``sample_id`` 1..n by stratum then draw, their stratum, the event's
    fields and the pixel centre ``x``, ``y``) and the strata table with the allocated ``n``.
    Strata are drawn in sorted order from one ``default_rng(seed)``: same seed, same sample.
    """
    check_choice("--strata", strata, STRATIFICATIONS)
    check_choice("--allocation", allocation, ALLOCATIONS)
    features = features.reset_index(drop=True)
    labels = stratum_labels(features, strata)
    table = strata_table(features, strata)
    table["n"] = allocate(table, n, allocation)
    rng = np.random.default_rng(seed)
    parts = []
    for stratum, n_h in zip(table["stratum"], table["n"], strict=True):
        members = np.flatnonzero((labels == stratum).to_numpy())
        counts = features["n_pixels"].to_numpy(np.int64)[members]

        def locate_in(local: np.ndarray, ks: np.ndarray, members=members) -> np.ndarray:
            return locate(members[local], ks)

        local, xy = draw_stratum(counts, int(n_h), rng, locate_in)
        part = features.loc[members[local], list(DESIGN_FIELDS[:4])].reset_index(drop=True)
        parts.append(part.assign(stratum=stratum, x=xy[:, 0], y=xy[:, 1]))
    points = pd.concat(parts, ignore_index=True)
    points.insert(0, "sample_id", np.arange(1, len(points) + 1, dtype=np.int32))
    # The strata table reports what was drawn (less than allocated only if events ran out).
    table["n"] = points.groupby("stratum").size().reindex(table["stratum"], fill_value=0).to_numpy()
    return points.rename(columns={"driver": "map_driver"}), table
