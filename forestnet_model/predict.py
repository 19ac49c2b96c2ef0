"""Event-level driver probabilities from a bundle; the model loads once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from forestnet_model.bundle import BundleMeta, load_bundle
from forestnet_model.data import normalise, pad_to_multiple
from forestnet_model.model import region_mean_logits
from forestnet_model.runtime import tune_malloc_for_tensors
from forestnet_model.train import pick_device


@lru_cache(maxsize=2)
def cached_bundle(path: str, device: str) -> tuple[torch.nn.Module, BundleMeta]:
    """Load a bundle once per worker process (keyed by path and device)."""
    tune_malloc_for_tensors()
    model, meta = load_bundle(Path(path))
    return model.to(device), meta


def predict_events(
    bundle: Path, images: np.ndarray, masks: np.ndarray, batch_size: int = 8,
    device: str = "auto",
) -> tuple[np.ndarray, str]:
    """Class probabilities ``(N, n_classes)`` for chips ``(N, C, H, W)`` with loss masks.

    ``images`` hold the bundle's input channels in its band order, unnormalised.
    Returns the probabilities and the bundle's model_id.
    """
    dev = pick_device(device)
    model, meta = cached_bundle(str(Path(bundle).resolve()), dev.type)
    expected = meta.model.in_channels
    if images.shape[1] != expected:
        raise ValueError(f"{bundle}: model expects {expected} input channels "
                         f"({meta.model.in_bands + meta.model.aux_bands}), got {images.shape[1]}")
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = np.stack([pad_to_multiple(normalise(im, meta.normalisation))
                          for im in images[start:start + batch_size]])
            m = np.stack([pad_to_multiple(mk) for mk in masks[start:start + batch_size]])
            xt = torch.from_numpy(x).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(xt)
            pooled = region_mean_logits(logits.float(), torch.from_numpy(m).to(dev))
            out.append(torch.softmax(pooled, dim=1).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, meta.model.n_classes), np.float32)
    return probs, meta.model_id
