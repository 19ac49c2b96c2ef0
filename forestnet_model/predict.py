"""Event-level driver probabilities from a bundle; the model loads once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from forestnet_model.bundle import BundleMeta, load_bundle
from forestnet_model.data import normalise, normalise_scalars, pad_to_multiple
from forestnet_model.model import as_forestnet
from forestnet_model.train import pick_device, to_device


@lru_cache(maxsize=2)
def cached_bundle(path: str, device: str) -> tuple[torch.nn.Module, BundleMeta]:
    """Load a bundle once per worker process (keyed by path and device).

    The module maps ``model(x)`` to pixel logits whatever the bundle holds; a fusion
    bundle's head is reached through :func:`predict_events`.
    """
    model, meta = load_bundle(Path(path))
    model = model.to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, meta


def predict_events(
    bundle: Path, images: np.ndarray, masks: np.ndarray, batch_size: int = 8,
    device: str = "auto", scalars: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Class probabilities ``(N, n_classes)`` for chips ``(N, C, H, W)`` with loss masks.

    ``images`` hold the bundle's input channels in its band order, unnormalised. A fusion
    bundle with ``fusion_features`` also needs ``scalars (N, F)``: the raw aux scalars in
    that order (e.g. ``data.event_scalars(chips, indices, meta.model.fusion_features)``).
    Returns the probabilities and the bundle's model_id.
    """
    dev = pick_device(device)
    model, meta = cached_bundle(str(Path(bundle).resolve()), dev.type)
    spec = meta.model
    if images.shape[1] != spec.in_channels:
        raise ValueError(f"{bundle}: model expects {spec.in_channels} input channels "
                         f"({spec.in_bands + spec.aux_bands}), got {images.shape[1]}")
    features = spec.fusion_features
    if features and (scalars is None or np.shape(scalars) != (len(images), len(features))):
        got = "none" if scalars is None else f"shape {np.shape(scalars)}"
        raise ValueError(f"{bundle}: fusion model needs scalars ({len(images)}, "
                         f"{len(features)}) for {list(features)}; got {got}")
    scaled = normalise_scalars(scalars, meta.normalisation) if features else (
        np.zeros((len(images), 0), np.float32))
    forestnet = as_forestnet(model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            x = np.stack([pad_to_multiple(normalise(im, meta.normalisation))
                          for im in images[start:stop]])
            m = np.stack([pad_to_multiple(np.asarray(mk).astype(bool)) for mk in masks[start:stop]])
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                _, event_logits = forestnet(to_device(torch.from_numpy(x), dev, image=True),
                                            torch.from_numpy(m).to(dev),
                                            torch.from_numpy(scaled[start:stop]).to(dev))
            out.append(torch.softmax(event_logits.float(), dim=1).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, spec.n_classes), np.float32)
    return probs, meta.model_id
