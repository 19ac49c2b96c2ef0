"""Temperature scaling: the fit recovers a known over-confidence, ECE by hand, and the
bundle's temperature reaches evaluation's and the map's probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from forestnet_model.bundle import MANIFEST, read_bundle_meta
from forestnet_model.calibration import (
    bundle_temperature,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    probabilities,
)
from forestnet_model.predict import predict_event_logits, predict_events


def calibrated_source(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution: labels drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 4))
    p = probabilities(logits)
    labels = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("factor", [0.5, 2.5])
def test_the_fit_gives_back_a_known_sharpening(factor: float) -> None:
    logits, labels = calibrated_source(20000)
    fitted = fit_temperature(logits * factor, labels)
    assert fitted == pytest.approx(factor, rel=0.05)


def test_calibration_lowers_the_nll_and_ece_of_an_overconfident_model() -> None:
    logits, labels = calibrated_source(5000, seed=1)
    record = calibrate(logits * 3.0, labels)
    assert record["method"] == "temperature" and record["n_val"] == 5000
    assert record["val_nll_after"] < record["val_nll_before"]
    assert record["val_ece_after"] < 0.03 < record["val_ece_before"]


def test_expected_calibration_error_by_hand() -> None:
    # Two events at confidence 0.9 (bin 14), one right, one wrong: |0.5 - 0.9| = 0.4;
    # two at 0.6 (bin 9), both right: |1.0 - 0.6| = 0.4. ECE = (2 * 0.4 + 2 * 0.4) / 4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_probabilities_are_a_stable_softmax_of_scaled_logits() -> None:
    logits = np.array([[1000.0, 999.0], [0.0, 0.0]])
    p = probabilities(logits, 2.0)
    assert np.isfinite(p).all()
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-0.5)))
    assert p[1].tolist() == [0.5, 0.5]


def test_a_bundle_without_calibration_is_temperature_one() -> None:
    assert bundle_temperature({}) == 1.0
    assert bundle_temperature(None) == 1.0
    assert bundle_temperature({"method": "temperature", "temperature": 1.7}) == 1.7


def test_the_bundle_temperature_reaches_predicted_probabilities(tmp_path: Path) -> None:
    from tests.map_job import untrained_bundle

    plain = untrained_bundle(tmp_path / "plain")
    hot = tmp_path / "hot"
    shutil.copytree(plain, hot)
    manifest = json.loads((hot / MANIFEST).read_text())
    manifest["calibration"] = {"method": "temperature", "temperature": 3.0}
    (hot / MANIFEST).write_text(json.dumps(manifest))
    assert read_bundle_meta(hot).model_id == read_bundle_meta(plain).model_id
    rng = np.random.default_rng(0)
    images = rng.normal(0.1, 0.05, (3, 6, 64, 64)).astype(np.float32)
    masks = np.zeros((3, 64, 64), np.uint8)
    masks[:, 20:40, 24:44] = 1
    logits, _ = predict_event_logits(plain, images, masks, device="cpu")
    raw, _ = predict_events(plain, images, masks, device="cpu")
    cooled, _ = predict_events(hot, images, masks, device="cpu")
    np.testing.assert_allclose(raw, probabilities(logits), atol=1e-5)
    np.testing.assert_allclose(cooled, probabilities(logits, 3.0), atol=1e-5)
    assert (cooled.argmax(1) == raw.argmax(1)).all()
    # Calibrated again in place (same weights, so the same model id): applied at once, by
    # a process that has already loaded the bundle.
    manifest = json.loads((plain / MANIFEST).read_text())
    manifest["calibration"] = {"method": "temperature", "temperature": 2.0}
    (plain / MANIFEST).write_text(json.dumps(manifest))
    again, _ = predict_events(plain, images, masks, device="cpu")
    np.testing.assert_allclose(again, probabilities(logits, 2.0), atol=1e-5)


def test_an_error_free_val_split_keeps_a_finite_temperature() -> None:
    """A val split classified without error (the model was chosen on it): plain NLL would
    send T to its bound and every probability to 0 or 1; with the rule of succession the
    true class keeps a probability below 1, near (n + 1) / (n + 2) = 0.97 on average."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 32)
    logits = rng.normal(0.0, 1.0, (32, 4))
    logits[np.arange(32), labels] += 4.0  # every event right, by a margin
    t = fit_temperature(logits, labels)
    assert 0.2 < t < 5.0
    p_true = probabilities(logits, t)[np.arange(32), labels]
    assert 0.9 < p_true.mean() < 0.99 and p_true.max() < 0.9999
    assert fit_temperature(logits, labels) == t  # deterministic
