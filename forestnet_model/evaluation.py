"""Evaluation of a model bundle on a chip-store split: scores and per-event predictions.

``forestnet_model.report`` turns the result into ``report.md``; this module runs the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from forestnet_model.bundle_meta import BundleMeta, read_bundle_meta
from forestnet_model.calibration import (
    bundle_temperature,
    expected_calibration_error,
    negative_log_likelihood,
    probabilities,
    reliability_bins,
)
from forestnet_model.data import event_scalars, split_indices
from forestnet_model.metrics import classification_report, per_class_scores
from forestnet_model.predict import predict_event_logits
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.core.radiometry import require_same, store_radiometry
from pipeline.training_set.band_stats import display_band_stats
from pipeline.training_set.chip_store import open_chips


def missing_inputs(meta: BundleMeta, chips: xr.Dataset) -> str | None:
    """What the bundle reads that the store lacks (e.g. "aux bands ['slope']"), or None."""
    spec = meta.model
    for kind, wanted, coord in (("bands", spec.in_bands, "band"),
                                ("aux bands", spec.aux_bands, "aux_band"),
                                ("aux scalars", spec.fusion_features, "feature")):
        missing = sorted(set(wanted) - set(map(str, chips[coord].values)))
        if missing:
            return f"{kind} {missing}"
    return None


def evaluate_bundle(
    bundle: Path, chips_path: Path, split: str, batch_size: int = 32, device: str = "auto"
) -> dict:
    """Scores and per-event predictions of ``bundle`` on the composites of ``split``.

    Only the bundle's bands, aux bands and (fusion bundles) aux scalars are read,
    ``batch_size`` events at a time, so memory does not grow with the split.
    """
    bundle, chips_path = Path(bundle), Path(chips_path)
    meta = read_bundle_meta(bundle)
    chips = open_chips(chips_path)
    bands, aux_bands = list(meta.model.in_bands), list(meta.model.aux_bands)
    features = list(meta.model.fusion_features)
    radiometry = store_radiometry(chips.attrs)
    require_same(radiometry, f"the chip store {chips_path}", meta.radiometry,
                 f"the model bundle {bundle}")
    gap = missing_inputs(meta, chips)
    if gap:
        raise ValueError(f"{chips_path}: the bundle {bundle} needs {gap} that the store lacks")
    indices = split_indices(chips, split)
    if not len(indices):
        raise ValueError(f"{chips_path}: split {split!r} has no labelled events with chips")
    logits, model_id = [], meta.model_id
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        images = chips["image"].isel(event=idx, view=0).sel(band=bands).values
        if aux_bands:
            aux = chips["aux"].isel(event=idx).sel(aux_band=aux_bands).values
            images = np.concatenate([images, aux], axis=1)
        masks = chips["loss_mask"].isel(event=idx).values
        scalars = event_scalars(chips, idx, features) if features else None  # fusion head
        z, model_id = predict_event_logits(bundle, images.astype(np.float32), masks,
                                           batch_size=min(8, batch_size), device=device,
                                           scalars=scalars)
        logits.append(z)
    z = np.concatenate(logits)
    classes = list(DRIVER_CLASSES)
    y_true = np.array([classes.index(str(m)) for m in chips["merged_label"].values[indices]])
    p = probabilities(z, bundle_temperature(meta.calibration))
    y_pred = p.argmax(axis=1)
    report = classification_report(y_true, y_pred, len(classes))
    scores = per_class_scores(np.asarray(report["confusion_matrix"]))
    ids = chips["event_id"].values[indices]
    report.update(
        model_id=model_id, bundle=str(bundle), chips=str(chips_path), split=split,
        radiometry=radiometry, bundle_radiometry=meta.radiometry,
        band_stats=display_band_stats(chips),
        classes=classes, inputs={"bands": bands, "aux_bands": aux_bands},
        precision_per_class=scores["precision"], recall_per_class=scores["recall"],
        support_per_class=scores["support"],
        calibration=calibration_summary(z, y_true, meta.calibration),
        events=[{"event_id": str(e), "true": classes[t], "predicted": classes[q],
                 "probabilities": [round(float(v), 6) for v in row]}
                for e, t, q, row in zip(ids, y_true, y_pred, p, strict=True)],
    )
    return report


def calibration_summary(logits: np.ndarray, labels: np.ndarray, calibration: dict) -> dict:
    """The bundle's calibration and, on these events, the NLL, ECE and reliability bins of
    the raw softmax ("before") and of the calibrated probabilities ("after")."""
    t = bundle_temperature(calibration)
    out = {"method": calibration.get("method", "none"), "temperature": t}
    for name, temperature in (("before", 1.0), ("after", t)):
        p = probabilities(logits, temperature)
        bins = reliability_bins(p, labels)
        out[f"nll_{name}"] = negative_log_likelihood(logits, labels, temperature)
        out[f"ece_{name}"] = expected_calibration_error(p, labels)
        out[f"reliability_{name}"] = {k: v.tolist() for k, v in bins.items()}
    return out
