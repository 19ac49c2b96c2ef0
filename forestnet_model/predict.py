"""Event-level driver probabilities from a bundle; the model loads once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from forestnet_model.bundle import BundleMeta, load_bundle, read_bundle_meta
from forestnet_model.calibration import bundle_temperature, probabilities
from forestnet_model.model import as_forestnet, region_band_stats, region_mean_logits
from forestnet_model.model_inputs import (
    event_window,
    normalise,
    normalise_scalars,
    pad_to_multiple,
    same_shape_batches,
)
from forestnet_model.train import pick_device, to_device


def cached_bundle(path: str, device: str) -> tuple[torch.nn.Module, BundleMeta]:
    """Load a bundle once per worker process (keyed by path, device and model id).

    The model id (the weights' hash, in ``bundle.json``) is part of the key: a worker of
    a long-lived cluster reloads a bundle retrained in place instead of serving the old
    one. The manifest is read afresh on every call, so a bundle calibrated again in place
    (same weights, another temperature) is applied as it now stands. The module maps
    ``model(x)`` to pixel logits whatever the bundle holds; a fusion bundle's head is
    reached through :func:`predict_events`.
    """
    meta = read_bundle_meta(Path(path))
    model, _ = _loaded_bundle(path, device, meta.model_id, meta.spec_hash)
    return model, meta


@lru_cache(maxsize=2)
def _loaded_bundle(path: str, device: str, model_id: str, spec_hash: str
                   ) -> tuple[torch.nn.Module, BundleMeta]:
    model, meta = load_bundle(Path(path))
    model = model.to(device, memory_format=torch.channels_last)
    return model, meta


def predict_events(
    bundle: Path, images: np.ndarray, masks: np.ndarray, batch_size: int = 8,
    device: str = "auto", scalars: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Calibrated class probabilities ``(N, n_classes)`` for chips ``(N, C, H, W)`` with
    loss masks (see :func:`predict_event_logits`); returns them and the bundle's model_id."""
    logits, model_id = predict_event_logits(bundle, images, masks, batch_size, device, scalars)
    temperature = bundle_temperature(read_bundle_meta(Path(bundle)).calibration)
    return probabilities(logits, temperature).astype(np.float32), model_id


def predict_event_logits(
    bundle: Path, images: np.ndarray, masks: np.ndarray, batch_size: int = 8,
    device: str = "auto", scalars: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Event logits ``(N, n_classes)`` for chips ``(N, C, H, W)`` with loss masks.

    ``images`` hold the bundle's input channels in its band order, unnormalised. A fusion
    bundle with ``fusion_features`` also needs ``scalars (N, F)``: the raw aux scalars in
    that order (e.g. ``data.event_scalars(chips, indices, meta.model.fusion_features)``).
    Returns the logits and the bundle's model_id.
    """
    dev = pick_device(device)
    model, meta = cached_bundle(str(Path(bundle).resolve()), dev.type)
    spec = meta.model
    if images.shape[1] != spec.in_channels:
        raise ValueError(f"{bundle}: model expects {spec.in_channels} input channels "
                         f"({spec.in_bands + spec.aux_bands}), got {images.shape[1]}")
    check_scalars(bundle, meta, len(images), scalars)
    masks = [np.asarray(mk).astype(bool) for mk in masks]
    windows = [event_window(mk, spec.event_context) for mk in masks]
    logits = np.zeros((len(images), spec.n_classes), np.float32)
    for batch in same_shape_batches([m[w].shape for m, w in zip(masks, windows, strict=True)],
                                    batch_size):
        x = np.stack([pad_to_multiple(normalise(images[i][:, *windows[i]], meta.normalisation))
                      for i in batch])
        m = np.stack([pad_to_multiple(masks[i][windows[i]]) for i in batch])
        pooled, band_stats = region_statistics(model, dev, x, m)
        chunk = None if scalars is None else scalars[batch]
        logits[batch] = event_logits(model, meta, pooled, band_stats, chunk)
    return logits, meta.model_id


def region_statistics(model: torch.nn.Module, dev: torch.device, x: np.ndarray, m: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Region-mean pixel logits and region band statistics of normalised windows."""
    with torch.inference_mode():
        xt = to_device(torch.from_numpy(x), dev, image=True)
        mt = torch.from_numpy(m).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            pixel_logits = as_forestnet(model).net(xt)
        pooled = region_mean_logits(pixel_logits.float(), mt)
        return pooled.cpu().numpy(), region_band_stats(xt, mt).cpu().numpy()


def check_scalars(bundle: Path | str, meta: BundleMeta, n: int, scalars: np.ndarray | None) -> None:
    """A fusion bundle with ``fusion_features`` needs ``(n, F)`` scalars, in that order."""
    features = meta.model.fusion_features
    if features and (scalars is None or np.shape(scalars) != (n, len(features))):
        got = "none" if scalars is None else f"shape {np.shape(scalars)}"
        raise ValueError(f"{bundle}: fusion model needs scalars ({n}, "
                         f"{len(features)}) for {list(features)}; got {got}")


def event_probabilities(
    model: torch.nn.Module, meta: BundleMeta, pooled: np.ndarray, band_stats: np.ndarray,
    scalars: np.ndarray | None = None,
) -> np.ndarray:
    """Calibrated class probabilities ``(N, n_classes)`` of events from their region
    statistics: :func:`event_logits` through the bundle's temperature.

    The one step that evaluation and mapping share, so a map's drivers and probabilities
    come from the model that was evaluated, fusion head and calibration included.
    """
    logits = event_logits(model, meta, pooled, band_stats, scalars)
    return probabilities(logits, bundle_temperature(meta.calibration))


def event_logits(
    model: torch.nn.Module, meta: BundleMeta, pooled: np.ndarray, band_stats: np.ndarray,
    scalars: np.ndarray | None = None,
) -> np.ndarray:
    """Event logits ``(N, n_classes)`` from region statistics: ``pooled (N, classes)``
    region-mean pixel logits, ``band_stats (N, 2C)`` the region mean then std of each
    normalised input channel, ``scalars (N, F)`` the raw aux scalars of
    ``meta.model.fusion_features``."""
    features = meta.model.fusion_features
    n = len(pooled)
    scaled = (normalise_scalars(scalars, meta.normalisation) if features
              else np.zeros((n, 0), np.float32))
    dev = next(model.parameters()).device
    as_tensor = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
    with torch.inference_mode():
        logits = as_forestnet(model).event_logits(as_tensor(pooled), as_tensor(band_stats),
                                                  as_tensor(scaled))
        return logits.float().cpu().numpy()
