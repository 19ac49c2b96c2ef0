"""Calibrated class probabilities: temperature scaling of the event logits (Guo et al. 2017).

A briefly trained model is over- or under-confident, so its softmax does not say "9 in 10"
when it says 0.9. One temperature, fitted on the val split's event logits by negative
log-likelihood (with the targets of :func:`succession_targets`), rescales the logits; the
argmax (and so accuracy) is unchanged.
:func:`probabilities` is the one "logits -> probabilities" step that evaluation and the map
share. Pure numpy and scipy: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar

#: Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15
#: The fitted temperature is searched within [1/20, 20]: beyond, the val split is too small
#: or too separable for the fit to mean anything.
LOG_T_BOUND = float(np.log(20.0))


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logits (N, classes) / temperature``, computed stably."""
    return np.exp(log_probabilities(logits, temperature))


def bundle_temperature(calibration: Mapping | None) -> float:
    """A bundle's temperature; 1 (the raw softmax) for a bundle without calibration."""
    return float((calibration or {}).get("temperature", 1.0))


def log_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Log of :func:`probabilities`, computed stably (no log of an underflowed 0)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray,
                            temperature: float = 1.0) -> float:
    """Mean NLL of the true classes under ``probabilities(logits, temperature)``."""
    log_p = log_probabilities(logits, temperature)
    return float(-log_p[np.arange(len(labels)), np.asarray(labels, int)].mean())


def succession_targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Soft targets ``(N, classes)``: the true class ``(n + 1) / (n + 2)``, the rest shared.

    The val split is where early stopping chose the model, so it is often classified
    without error, and then its NLL falls for ever as T -> 0: every probability becomes 0
    or 1 (the demo's val split fitted T = 0.05). Laplace's rule of succession (after n
    successes, the next is one with probability (n + 1) / (n + 2)) keeps the fit finite;
    on a val split of hundreds of events it changes T by well under 1%.
    """
    n = len(labels)
    wrong = 1.0 / (n + 2)
    targets = np.full((n, n_classes), wrong / max(n_classes - 1, 1))
    targets[np.arange(n), np.asarray(labels, int)] = 1.0 - wrong
    return targets


def cross_entropy(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of soft ``targets`` under ``probabilities(logits, temperature)``."""
    return float(-(targets * log_probabilities(logits, temperature)).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the cross-entropy of :func:`succession_targets` (the NLL
    of ``labels``, kept finite on an error-free split; searched on log T, bounded)."""
    targets = succession_targets(labels, np.shape(logits)[1])
    result = minimize_scalar(
        lambda log_t: cross_entropy(logits, targets, float(np.exp(log_t))),
        bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
                     ) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: events, mean confidence and accuracy (NaN if empty)."""
    probs = np.asarray(probs, np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels, int)).astype(np.float64)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of 0 joins the first.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=bins) / count
        acc = np.bincount(which, weights=correct, minlength=bins) / count
    return {"count": count, "confidence": conf, "accuracy": acc,
            "edges": np.linspace(0.0, 1.0, bins + 1)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE: the event-weighted mean |accuracy - confidence| over equal-width bins."""
    table = reliability_bins(probs, labels, bins)
    filled = table["count"] > 0
    if not filled.any():
        return float("nan")
    gap = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float((table["count"][filled] * gap).sum() / table["count"].sum())


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> dict:
    """Fit the temperature on val; the bundle's ``calibration`` record, with the val NLL and
    ECE before and after. No val events: temperature 1, recorded as not fitted."""
    n = len(val_labels)
    if n == 0:
        return {"method": "none", "temperature": 1.0, "n_val": 0}
    t = fit_temperature(val_logits, val_labels)
    return {
        "method": "temperature", "temperature": t, "n_val": int(n),
        "targets": "rule of succession: the true class (n + 1) / (n + 2)",
        "val_nll_before": negative_log_likelihood(val_logits, val_labels),
        "val_nll_after": negative_log_likelihood(val_logits, val_labels, t),
        "val_ece_before": expected_calibration_error(probabilities(val_logits), val_labels),
        "val_ece_after": expected_calibration_error(probabilities(val_logits, t), val_labels),
    }
