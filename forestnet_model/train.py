"""Training loop: Adam, gradient clipping, early stopping on validation macro F1, resumable.

AMP is bf16 on CUDA and off on the CPU; channels_last on CUDA. The best weights are kept
and written as a model bundle.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, RandomSampler

from forestnet_model.bundle import save_bundle
from forestnet_model.data import ChipDataset, normalisation_stats, split_indices
from forestnet_model.losses import region_cross_entropy
from forestnet_model.metrics import classification_report
from forestnet_model.model import ModelSpec, build_model, region_mean_logits
from forestnet_model.runtime import tune_malloc_for_tensors
from pipeline.chip_store import open_chips
from pipeline.drivers import DRIVER_CLASSES

log = logging.getLogger(__name__)


class TrainSpec(BaseModel):
    """Training hyper-parameters (ForestNet defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(8, ge=1, description="events per batch")
    crop: int = Field(224, ge=32, description="random crop size (multiple of 32)")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    grad_clip: float = Field(0.5, gt=0, description="gradient norm clip")
    patience: int = Field(5, ge=1, description="early stopping patience, in epochs")
    seed: int = Field(0, description="seed for torch, numpy and python")
    sda: bool = Field(True, description="scene data augmentation: a random view per sample")
    device: str = Field("auto", description="auto, cpu or cuda")
    num_threads: int | None = Field(None, description="torch CPU threads (None: torch default)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    max_batches_per_epoch: int | None = Field(None, description="cap for quick runs")
    samples_per_epoch: int | None = Field(
        None, ge=1, description="random crops drawn per epoch (None: one per training event)"
    )

    @field_validator("crop")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"crop {v} is not a multiple of 32 (encoders downsample by 32)")
        return v


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when asked for or available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available on this worker")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model, loader, device) -> tuple[dict, np.ndarray]:
    """Event-level report and probabilities on the composite view."""
    model.eval()
    y_true, probs = [], []
    with torch.inference_mode():
        for batch in loader:
            x = batch["image"].to(device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
            pooled = region_mean_logits(logits.float(), batch["mask"].to(device))
            probs.append(torch.softmax(pooled, 1).cpu().numpy())
            y_true.append(batch["label"].numpy())
    if not probs:
        return classification_report([], [], len(DRIVER_CLASSES)), np.zeros((0, 4))
    p = np.concatenate(probs)
    return classification_report(np.concatenate(y_true), p.argmax(1), len(DRIVER_CLASSES)), p


def train_model(chips_path: Path, out_dir: Path, model_spec: ModelSpec, spec: TrainSpec) -> Path:
    """Train on the chip store's train split, select on val, write ``out_dir/bundle``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.seed)
    tune_malloc_for_tensors()
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    device = pick_device(spec.device)
    chips = open_chips(chips_path)
    train_idx = split_indices(chips, "train")
    if len(train_idx) == 0:
        raise ValueError(f"{chips_path}: no usable training events (split 'train', chip_ok)")
    stats = normalisation_stats(chips, train_idx, model_spec.in_bands, model_spec.aux_bands)
    common = dict(bands=model_spec.in_bands, aux_bands=model_spec.aux_bands, stats=stats)
    train_ds = ChipDataset(str(chips_path), "train", train=True, crop=spec.crop, sda=spec.sda,
                           seed=spec.seed, **common)
    val_ds = ChipDataset(str(chips_path), "val", train=False, **common)
    test_ds = ChipDataset(str(chips_path), "test", train=False, **common)
    gen = torch.Generator().manual_seed(spec.seed)
    # Several random crops (and SDA views) per event and epoch: small training sets
    # otherwise give too few optimiser steps per epoch for early stopping to mean much.
    sampler = RandomSampler(train_ds, replacement=spec.samples_per_epoch is not None,
                            num_samples=spec.samples_per_epoch, generator=gen)
    n_draws = spec.samples_per_epoch or len(train_ds)
    train_dl = DataLoader(train_ds, batch_size=spec.batch_size, sampler=sampler,
                          num_workers=spec.num_workers, drop_last=n_draws > spec.batch_size)
    val_dl = DataLoader(val_ds, batch_size=spec.batch_size, num_workers=spec.num_workers)
    test_dl = DataLoader(test_ds, batch_size=spec.batch_size, num_workers=spec.num_workers)

    model = build_model(model_spec).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=spec.lr)
    counts = np.bincount(train_ds.labels[train_ds.indices], minlength=len(DRIVER_CLASSES))
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)

    ckpt, best_path, metrics_path = (out_dir / "checkpoint.pt", out_dir / "best.safetensors",
                                     out_dir / "metrics.jsonl")
    start_epoch, best_f1, stale = 0, -1.0, 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start_epoch, best_f1, stale = state["epoch"] + 1, state["best_f1"], state["stale"]
        log.info("resuming training at epoch %d (best val macro F1 %.3f)", start_epoch, best_f1)

    for epoch in range(start_epoch, spec.epochs):
        if stale >= spec.patience:
            break
        model.train()
        losses = []
        started = time.perf_counter()
        for i, batch in enumerate(train_dl):
            if spec.max_batches_per_epoch and i >= spec.max_batches_per_epoch:
                break
            x = batch["image"].to(device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = region_cross_entropy(logits, batch["mask"].to(device),
                                        batch["label"].to(device), weights.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            optimiser.step()
            losses.append(float(loss.detach()))
        report, _ = evaluate(model, val_dl, device) if len(val_ds) else ({"macro_f1": 0.0}, None)
        f1 = report["macro_f1"] if np.isfinite(report["macro_f1"]) else 0.0
        improved = f1 > best_f1
        if improved:
            best_f1, stale = f1, 0
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(best_path))
        else:
            stale += 1
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                  "val_accuracy": report.get("accuracy"), "val_macro_f1": f1,
                  "best_val_macro_f1": best_f1,
                  "seconds": round(time.perf_counter() - started, 2)}
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        log.info("epoch %d: loss %.4f, val macro F1 %.3f%s", epoch, record["train_loss"] or 0,
                 f1, " (best)" if improved else "")
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                    "epoch": epoch, "best_f1": best_f1, "stale": stale}, ckpt)

    if best_path.exists():
        model.load_state_dict(load_file(str(best_path), device=str(device)))
    val_report, _ = evaluate(model, val_dl, device)
    test_report, _ = evaluate(model, test_dl, device)
    meta = {
        "model": model_spec,
        "normalisation": stats,
        "training": spec.model_dump(),
        "metrics": {"val": val_report, "test": test_report, "best_val_macro_f1": best_f1},
        "data_hash": str(chips.attrs.get("events_fingerprint", "")),
    }
    return save_bundle(model.cpu(), meta, out_dir / "bundle")
