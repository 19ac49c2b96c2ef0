"""Land-cover pre-training: the driver model's architecture learns per-pixel land cover.

ForestNet pre-trained its encoder on a land-cover segmentation task before learning the
drivers. Here the labels are the chip store's categorical ``landcover`` aux band (every
pixel labelled; code 0 and NaN are no data), only training-split chips are used (the
val/test events stay unseen), and the result is the encoder's state as safetensors, which
``ModelSpec.encoder_weights`` loads into the driver model.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from forestnet_model.data import (
    ChipDataset,
    EpochSampler,
    normalisation_stats,
    seed_worker,
    split_indices,
)
from forestnet_model.losses import IGNORE_INDEX, pixel_cross_entropy
from forestnet_model.model import build_model, segmentation_net
from forestnet_model.progress import EpochBar, progress_enabled
from forestnet_model.specs import ModelSpec, TrainSpec
from forestnet_model.train import pick_device, seed_everything, to_device
from pipeline.core.atomic import atomic_output
from pipeline.training_set.chip_store import open_chips

log = logging.getLogger(__name__)

LANDCOVER_BAND = "landcover"


def landcover_classes(chips_path: Path, indices: np.ndarray, band: str = LANDCOVER_BAND) -> int:
    """Number of output classes: the largest class code in the training chips, plus one."""
    chips = open_chips(chips_path)
    names = [str(b) for b in chips["aux_band"].values]
    if band not in names:
        raise ValueError(f"{chips_path}: no '{band}' aux band (it has {', '.join(names)}); "
                         f"build the store with aux.bands including '{band}' and "
                         f"inputs.{band} set")
    top = 0
    for event in indices:
        codes = chips["aux"].isel(event=int(event)).sel(aux_band=band).values
        if np.isfinite(codes).any():
            top = max(top, int(np.nanmax(codes)))
    if top < 1:
        raise ValueError(f"{chips_path}: the '{band}' band holds no class codes (all no data)")
    return top + 1


def pretrain_encoder(
    chips_path: Path, out: Path, model_spec: ModelSpec, train_spec: TrainSpec,
    band: str = LANDCOVER_BAND, n_classes: int | None = None,
) -> Path:
    """Train ``model_spec``'s architecture on per-pixel land cover; save its encoder to ``out``.

    Uses ``train_spec``'s epochs, samples_per_epoch, batch size, crop, lr, gradient clip,
    seed and SDA. ``n_classes`` defaults to the largest class code found plus one.
    Writes ``out`` (safetensors, encoder tensors only) and a JSON sidecar (``out`` with
    suffix .json) with the class count and the loss of every step.
    """
    out = Path(out)
    seed_everything(train_spec.seed)
    if train_spec.num_threads:
        torch.set_num_threads(train_spec.num_threads)
    device = pick_device(train_spec.device)
    chips = open_chips(chips_path)
    train_idx = split_indices(chips, "train")
    if len(train_idx) == 0:
        raise ValueError(f"{chips_path}: no usable training events (split 'train', chip_ok)")
    n_classes = n_classes or landcover_classes(chips_path, train_idx, band)
    stats = normalisation_stats(chips, train_idx, model_spec.in_bands, model_spec.aux_bands)
    ds = ChipDataset(str(chips_path), "train", model_spec.in_bands, model_spec.aux_bands, stats,
                     train=True, crop=train_spec.crop, sda=train_spec.sda, seed=train_spec.seed,
                     target_band=band, cache_mb=train_spec.cache_mb)
    sampler = EpochSampler(len(ds), train_spec.samples_per_epoch, train_spec.seed)
    loader = DataLoader(ds, batch_size=train_spec.batch_size, sampler=sampler,
                        num_workers=train_spec.num_workers, worker_init_fn=seed_worker,
                        persistent_workers=train_spec.num_workers > 0,
                        pin_memory=device.type == "cuda",
                        drop_last=len(sampler) > train_spec.batch_size)
    spec = model_spec.model_copy(update={"n_classes": n_classes, "fusion": False,
                                         "fusion_features": ()})
    model = segmentation_net(build_model(spec)).to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=train_spec.lr)
    losses: list[float] = []
    show_bar = progress_enabled(train_spec.progress)
    started = time.perf_counter()
    model.train()
    for epoch in range(train_spec.epochs):
        sampler.set_epoch(epoch)
        n_batches = len(loader)
        if train_spec.max_batches_per_epoch:
            n_batches = min(n_batches, train_spec.max_batches_per_epoch)
        with EpochBar(epoch, n_batches, show_bar) as bar:
            for i, batch in enumerate(loader):
                if i >= n_batches:
                    break
                x = to_device(batch["image"], device, image=True)
                target = to_device(batch["target"], device)
                with torch.autocast(device.type, dtype=torch.bfloat16,
                                    enabled=device.type == "cuda"):
                    logits = model(x)
                loss = pixel_cross_entropy(logits, target)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_spec.grad_clip)
                optimiser.step()
                losses.append(float(loss.detach()))
                bar.advance(losses[-1])
        log.info("pre-training epoch %d: loss %.4f", epoch, np.mean(losses[-n_batches:]))
    state = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    with atomic_output(out) as tmp:
        save_file(state, str(tmp), metadata={"task": f"{band} segmentation",
                                             "classes": str(n_classes)})
    summary = {"band": band, "classes": n_classes, "ignore_index": IGNORE_INDEX,
               "model": spec.model_dump(mode="json"),
               "training": train_spec.model_dump(mode="json"),
               "step_losses": losses, "seconds": round(time.perf_counter() - started, 2)}
    with atomic_output(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return out
