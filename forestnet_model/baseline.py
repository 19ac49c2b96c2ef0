"""Random-forest baselines on loss-region statistics (Irvin et al. 2020's RF rows).

Protocol: fit one forest per grid point on the train split, keep the one with the best
validation macro F1 (ties: the earlier grid point), and report it on val and test. The
forest sees balanced class weights, as ForestNet's classes are far from balanced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import ParameterGrid

from forestnet_model.metrics import classification_report, per_class_scores
from forestnet_model.region_features import FeatureTable, split_features
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.training_set.chip_store import open_chips

#: Small on purpose: 8 fits per feature set keeps the baseline at minutes on 2,756 events.
DEFAULT_GRID: dict[str, Sequence] = {
    "n_estimators": (100, 300),
    "max_depth": (None, 10),
    "max_features": ("sqrt", 0.5),
}


@dataclass(frozen=True)
class BaselineResult:
    """The chosen forest's scores; small and picklable, so it can leave a Dask worker."""

    feature_set: str
    params: dict
    val: dict
    test: dict
    grid_scores: list[dict] = field(default_factory=list)
    n_train: int = 0
    top_features: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def train_medians(X: np.ndarray) -> np.ndarray:
    """Column medians of the training features; 0 for a column with no finite value."""
    with np.errstate(all="ignore"):
        finite = np.isfinite(X).any(axis=0)
        medians = np.zeros(X.shape[1])
        if finite.any():
            medians[finite] = np.nanmedian(X[:, finite], axis=0)
    return medians


def impute(X: np.ndarray, medians: np.ndarray) -> np.ndarray:
    """Replace non-finite entries with the training medians (never val/test statistics)."""
    return np.where(np.isfinite(X), X, medians[None, :])


def _report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    report = classification_report(y_true, y_pred, len(DRIVER_CLASSES))
    scores = per_class_scores(np.asarray(report["confusion_matrix"]))
    report.update(precision_per_class=scores["precision"], recall_per_class=scores["recall"],
                  support_per_class=scores["support"])
    return report


def select_forest(
    tables: Mapping[str, FeatureTable], feature_set: str, seed: int = 0,
    grid: Mapping[str, Sequence] | None = None, n_jobs: int = 1,
) -> BaselineResult:
    """Grid search on train/val feature tables, then score the chosen forest on val and test."""
    train, val, test = tables["train"], tables["val"], tables["test"]
    for split, table in (("train", train), ("val", val)):
        if len(table.y) == 0:
            raise ValueError(f"the {split} split has no labelled events: the random forest "
                             "needs train events to fit and val events to choose")
    medians = train_medians(train.X)
    X_train, X_val, X_test = (impute(t.X, medians) for t in (train, val, test))
    best: tuple[float, dict, RandomForestClassifier] | None = None
    scores = []
    for params in ParameterGrid(dict(grid or DEFAULT_GRID)):
        forest = RandomForestClassifier(class_weight="balanced", random_state=seed,
                                        n_jobs=n_jobs, **params)
        forest.fit(X_train, train.y)
        f1 = _report(val.y, forest.predict(X_val))["macro_f1"]
        scores.append({"params": params, "val_macro_f1": f1})
        if best is None or f1 > best[0]:  # strict: ties keep the earlier grid point
            best = (f1, params, forest)
    assert best is not None  # ParameterGrid of a non-empty grid yields at least one point
    _, params, forest = best
    order = np.argsort(forest.feature_importances_)[::-1][:10]
    return BaselineResult(
        feature_set=feature_set,
        params=dict(params),
        val=_report(val.y, forest.predict(X_val)),
        test=_report(test.y, forest.predict(X_test) if len(test.y) else test.y),
        grid_scores=scores,
        n_train=int(len(train.y)),
        top_features=[(train.names[i], float(forest.feature_importances_[i])) for i in order],
    )


def fit_random_forest(
    chips_path: Path, feature_set: str = "visible", seed: int = 0,
    grid: Mapping[str, Sequence] | None = None, n_jobs: int = 1,
) -> BaselineResult:
    """The random-forest baseline of ``feature_set`` on a chip store's published splits.

    Deterministic for a given seed. ``n_jobs`` stays small: the pipeline runs this on a
    Dask worker next to other work.
    """
    chips = open_chips(Path(chips_path))
    tables = {s: split_features(chips, s, feature_set) for s in ("train", "val", "test")}
    return select_forest(tables, feature_set, seed=seed, grid=grid, n_jobs=n_jobs)
