"""Classification metrics over events: accuracy, per-class and macro F1, confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 of each class; a class absent from both truth and predictions scores NaN."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def classification_report(y_true, y_pred, n_classes: int) -> dict:
    """Accuracy, macro F1 (over classes present) and the confusion matrix."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    f1 = f1_per_class(cm)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"),
        "f1_per_class": [None if np.isnan(v) else float(v) for v in f1],
        "confusion_matrix": cm.tolist(),
    }


def per_class_scores(cm: np.ndarray) -> dict[str, list]:
    """Precision, recall, F1 and support of each class from a confusion matrix.

    A score whose denominator is zero (a class never predicted, or never true) is None,
    so that a JSON report never holds NaN.
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)

    def listed(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    return {
        "precision": listed(precision),
        "recall": listed(recall),
        "f1": listed(f1_per_class(cm)),
        "support": [int(s) for s in support],
    }
