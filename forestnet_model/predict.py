"""Event-level driver probabilities from a bundle; the model loads once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from forestnet_model.bundle import BundleMeta, load_bundle, read_bundle_meta
from forestnet_model.calibration import bundle_temperature, probabilities
from forestnet_model.fast_forward import NetForward, net_forward
from forestnet_model.model import (
    as_forestnet,
    region_band_stats,
    region_mean_logits,
    segmentation_net,
)
from forestnet_model.model_inputs import (
    event_window,
    normalise,
    normalise_scalars,
    pad_to_multiple,
    same_shape_batches,
)
from forestnet_model.train import pick_device


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


def cached_forward(path: str, device: str, runtime: str = "auto"
                   ) -> tuple[NetForward, BundleMeta]:
    """The bundle's segmentation network as pixel logits of numpy windows, built once per
    worker process (and per model id and thread count) beside :func:`cached_bundle`.

    ``runtime`` (``auto``, ``eager``, ``onnxruntime``) chooses how a CPU runs it: see
    :mod:`forestnet_model.fast_forward`; CUDA always runs eager PyTorch.
    """
    model, meta = cached_bundle(path, device)
    return _built_forward(path, device, runtime, meta.model_id, meta.spec_hash,
                          torch.get_num_threads()), meta


@lru_cache(maxsize=4)
def _built_forward(path: str, device: str, runtime: str, model_id: str, spec_hash: str,
                   threads: int) -> NetForward:
    # A session's thread count is fixed when it is made: ``threads`` keys a new one.
    model, _ = _loaded_bundle(path, device, model_id, spec_hash)
    return net_forward(segmentation_net(model), model_id, torch.device(device), runtime)


def predict_events(
    bundle: Path, images: np.ndarray, masks: np.ndarray, batch_size: int = 8,
    device: str = "auto", scalars: np.ndarray | None = None, cpu_runtime: str = "auto",
) -> tuple[np.ndarray, str]:
    """Calibrated class probabilities ``(N, n_classes)`` for chips ``(N, C, H, W)`` with
    loss masks (see :func:`predict_event_logits`); returns them and the bundle's model_id."""
    logits, model_id = predict_event_logits(bundle, images, masks, batch_size, device, scalars,
                                            cpu_runtime)
    temperature = bundle_temperature(read_bundle_meta(Path(bundle)).calibration)
    return probabilities(logits, temperature).astype(np.float32), model_id


def predict_event_logits(
    bundle: Path, images: np.ndarray, masks: np.ndarray, batch_size: int = 8,
    device: str = "auto", scalars: np.ndarray | None = None, cpu_runtime: str = "auto",
) -> tuple[np.ndarray, str]:
    """Event logits ``(N, n_classes)`` for chips ``(N, C, H, W)`` with loss masks.

    ``images`` hold the bundle's input channels in its band order, unnormalised. A fusion
    bundle with ``fusion_features`` also needs ``scalars (N, F)``: the raw aux scalars in
    that order (e.g. ``data.event_scalars(chips, indices, meta.model.fusion_features)``).
    The network runs as the map runs it (:func:`cached_forward`, ``cpu_runtime``), so an
    evaluated event and a mapped one get the same logits. Returns the logits and the
    bundle's model_id.
    """
    dev = pick_device(device)
    path = str(Path(bundle).resolve())
    model, meta = cached_bundle(path, dev.type)
    forward, _ = cached_forward(path, dev.type, cpu_runtime)
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
        pooled, band_stats = region_statistics(forward, x, m)
        chunk = None if scalars is None else scalars[batch]
        logits[batch] = event_logits(model, meta, pooled, band_stats, chunk)
    return logits, meta.model_id


def region_statistics(forward: NetForward, x: np.ndarray, m: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Region-mean pixel logits and region band statistics of normalised windows."""
    pixel_logits = torch.from_numpy(forward(x))
    with torch.inference_mode():
        xt, mt = torch.from_numpy(x), torch.from_numpy(m)
        pooled = region_mean_logits(pixel_logits.float(), mt)
        return pooled.numpy(), region_band_stats(xt, mt).numpy()


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
