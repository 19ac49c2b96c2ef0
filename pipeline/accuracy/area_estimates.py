"""Area by class and map accuracy, with standard errors, from a stratified reference sample.

The estimators are Stehman's (2014, IJRS 35(13):4923-4939) for stratified random sampling
whose strata need not be the map classes (a ``driver,province`` stratification, or a sample
designed on one map and reused for another). When the strata are the map classes they
reduce to those of Olofsson et al. (2014, RSE 148:42-57).

Every estimate is a stratified total of a unit-level variable ``y_u``:
``Y = sum_h N_h ybar_h`` with ``Var(Y) = sum_h N_h^2 s2_yh / n_h``, where ``N_h`` is the
stratum's size (an area, e.g. ha), ``n_h`` its labelled units and ``s2_yh`` the sample
variance (ddof=1). The finite population correction ``(1 - n_h/N_h)`` is omitted: sizes
are areas, not unit counts, and the fraction of a pixel population that is sampled is
negligible (Olofsson's worked example omits it too). Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Normal quantile of a two-sided 95% confidence interval.
Z95 = 1.96
#: Index name of the error matrix: rows are map classes, columns reference classes.
MATRIX_AXES = "map\\reference"
AREA_COLUMNS = ["class", "mapped_area", "area", "se", "ci95_low", "ci95_high"]
ACCURACY_COLUMNS = ["class", "users", "users_se", "producers", "producers_se"]
OVERALL = "overall"


@dataclass(frozen=True)
class Design:
    """A labelled stratified sample: each unit's stratum index and the strata's N_h, n_h."""

    strata: tuple[str, ...]
    unit_stratum: np.ndarray  # int index into ``strata``, one per unit
    size: np.ndarray  # N_h
    n: np.ndarray  # n_h

    @classmethod
    def of(cls, sample: pd.DataFrame, strata: pd.DataFrame) -> Design:
        """Design of ``sample`` (column ``stratum``) over ``strata`` (``stratum, size``)."""
        names = tuple(strata["stratum"])
        codes = pd.Categorical(sample["stratum"], categories=names).codes
        if (codes < 0).any():
            unknown = sorted(set(sample["stratum"][codes < 0]))
            raise ValueError(f"sample strata not in the strata table: {unknown}")
        n = np.bincount(codes, minlength=len(names))
        if (n < 2).any():
            few = [s for s, k in zip(names, n, strict=True) if k < 2]
            raise ValueError(f"strata with fewer than 2 sample units (no variance): {few}")
        return cls(names, codes, strata["size"].to_numpy(float), n)

    @property
    def total_size(self) -> float:
        """N, the population's size."""
        return float(self.size.sum())

    def _means(self, y: np.ndarray) -> np.ndarray:
        return np.bincount(self.unit_stratum, weights=y, minlength=len(self.n)) / self.n

    def total(self, y: np.ndarray) -> tuple[float, float]:
        """Estimated total of ``y`` and its variance (no finite population correction)."""
        means = self._means(y)
        dev = y - means[self.unit_stratum]
        s2 = np.bincount(self.unit_stratum, weights=dev * dev, minlength=len(self.n))
        s2 /= self.n - 1
        return float(self.size @ means), float(np.sum(self.size**2 * s2 / self.n))

    def ratio(self, y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
        """Ratio estimate R = Y/X and its standard error; NaN, NaN where X is 0.

        Var(R) = (1/X^2) sum_h N_h^2 (s2_yh + R^2 s2_xh - 2 R s_xyh) / n_h, which is the
        variance of the total of the residual ``e_u = y_u - R x_u`` over X^2: computed
        that way it is a sum of squares, never negative through rounding.
        """
        y_total, _ = self.total(y)
        x_total, _ = self.total(x)
        if x_total == 0:
            return float("nan"), float("nan")
        r = y_total / x_total
        _, var_e = self.total(y - r * x)
        return r, float(np.sqrt(var_e)) / x_total


def class_order(sample: pd.DataFrame, strata: pd.DataFrame) -> list[str]:
    """Map classes in order of first appearance (strata order, then sample order), then
    classes seen only in the reference labels, in sample order."""
    rank = {name: i for i, name in enumerate(strata["stratum"])}
    ordered = sample.iloc[np.argsort(sample["stratum"].map(rank).to_numpy(), kind="stable")]
    mapped = list(dict.fromkeys(ordered["map_class"]))
    return mapped + [c for c in dict.fromkeys(ordered["reference_class"]) if c not in mapped]


def mapped_areas(sample: pd.DataFrame, strata: pd.DataFrame,
                 classes: list[str]) -> pd.Series | None:
    """Mapped area per class, or None where the strata do not tell it.

    Defined when every stratum's sample units share one map class (strata are the map
    classes, or map class x region): then the class's mapped area is the sum of N_h over
    its strata, and 0 for a class mapped in no stratum. A stratum mixing map classes
    (a sample reused over another map) gives None.
    """
    per_stratum = sample.groupby("stratum", sort=False)["map_class"].unique()
    if (per_stratum.map(len) > 1).any():
        return None
    map_of = per_stratum.map(lambda v: v[0])
    sizes = strata.set_index("stratum")["size"].astype(float)
    totals = sizes.groupby(map_of.reindex(sizes.index)).sum()
    return totals.reindex(classes, fill_value=0.0)


@dataclass(frozen=True)
class AreaAccuracy:
    """Every estimate of one sample: tables ready to write, and the design's figures."""

    area: pd.DataFrame  # AREA_COLUMNS
    accuracy: pd.DataFrame  # ACCURACY_COLUMNS, last row OVERALL
    error_matrix: pd.DataFrame  # area proportions, index map class, columns reference class
    strata: pd.DataFrame  # stratum, size, n
    total_size: float

    @property
    def overall(self) -> tuple[float, float]:
        """Overall accuracy and its standard error."""
        row = self.accuracy.iloc[-1]
        return float(row["users"]), float(row["users_se"])


def estimate(sample: pd.DataFrame, strata: pd.DataFrame) -> AreaAccuracy:
    """Area, user's/producer's/overall accuracy and the error matrix of a labelled sample.

    ``sample`` has columns ``stratum, map_class, reference_class`` (one row per labelled
    unit), ``strata`` has ``stratum, size`` for every stratum of the population.
    """
    design = Design.of(sample, strata)
    classes = class_order(sample, strata)
    mapped = sample["map_class"].to_numpy()
    ref = sample["reference_class"].to_numpy()
    n_total = design.total_size

    area_rows, acc_rows = [], []
    for k in classes:
        is_map, is_ref = (mapped == k).astype(float), (ref == k).astype(float)
        total, var = design.total(is_ref)
        se = float(np.sqrt(var))
        area_rows.append([k, total, se, total - Z95 * se, total + Z95 * se])
        users = design.ratio(is_map * is_ref, is_map)
        producers = design.ratio(is_map * is_ref, is_ref)
        acc_rows.append([k, *users, *producers])

    area = pd.DataFrame(area_rows, columns=[c for c in AREA_COLUMNS if c != "mapped_area"])
    per_class = mapped_areas(sample, strata, classes)
    area.insert(1, "mapped_area", np.nan if per_class is None else per_class.to_numpy())

    correct, var = design.total((mapped == ref).astype(float))
    overall, overall_se = correct / n_total, float(np.sqrt(var)) / n_total
    acc_rows.append([OVERALL, overall, overall_se, overall, overall_se])
    accuracy = pd.DataFrame(acc_rows, columns=ACCURACY_COLUMNS)

    matrix = pd.DataFrame(
        [[design.total(((mapped == i) & (ref == j)).astype(float))[0] / n_total
          for j in classes] for i in classes],
        index=pd.Index(classes, name=MATRIX_AXES), columns=classes)
    table = pd.DataFrame({"stratum": list(design.strata), "size": design.size, "n": design.n})
    return AreaAccuracy(area, accuracy, matrix, table, n_total)
