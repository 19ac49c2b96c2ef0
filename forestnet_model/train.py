"""Training loop: Adam, gradient clipping, early stopping on validation macro F1, resumable.

AMP is bf16 on CUDA and off on the CPU; images and weights are channels_last on every device
(1.3x faster training steps and 1.4x faster evaluation on the CPU too). After every epoch the
state goes to ``checkpoint.pt`` (written atomically, read with ``weights_only=True``); the
best weights are kept and finally written as a model bundle.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from forestnet_model.bundle import save_bundle
from forestnet_model.calibration import (
    calibrate,
    expected_calibration_error,
    negative_log_likelihood,
    probabilities,
)
from forestnet_model.data import (
    ChipDataset,
    EpochSampler,
    check_features,
    event_scalars,
    normalisation_stats,
    scalar_stats,
    seed_worker,
    split_indices,
)
from forestnet_model.fusion_features import choose_fusion_features
from forestnet_model.losses import class_weight_tensor, event_cross_entropy, make_loss
from forestnet_model.metrics import classification_report
from forestnet_model.model import as_forestnet, build_model
from forestnet_model.model_inputs import same_shape_batches
from forestnet_model.pretrained_weights import weights_provenance
from forestnet_model.progress import EpochBar, MetricsLog, progress_enabled
from forestnet_model.specs import ModelSpec, TrainSpec
from forestnet_model.weight_average import WeightAverage
from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.core.radiometry import require_same, store_radiometry
from pipeline.training_set.chip_store import open_chips

__all__ = ["ModelSpec", "TrainSpec", "TrainStep", "evaluate", "make_loaders", "pick_device",
           "seed_everything", "train_model"]

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when asked for or available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available on this worker")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(x: torch.Tensor, device: torch.device, image: bool = False) -> torch.Tensor:
    """Copy to the device (asynchronously from pinned memory); images in channels_last,
    the layout in which both cuDNN (bf16) and oneDNN (CPU) convolutions are fastest."""
    x = x.to(device, non_blocking=True)
    if image:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class TrainStep:
    """One optimiser step: forward (bf16 autocast on CUDA), region loss (+ fusion event
    loss), backward, gradient clipping, Adam. Shared by the loop and the benchmark."""

    def __init__(self, model: nn.Module, spec: TrainSpec, device: torch.device,
                 class_weights: torch.Tensor | None) -> None:
        self.model, self.spec, self.device = model, spec, device
        self.forestnet = as_forestnet(model)
        self.optimiser = torch.optim.Adam(model.parameters(), lr=spec.lr)
        self.weights = class_weights.to(device) if class_weights is not None else None
        self.pixel_loss = make_loss(spec.loss, self.weights, spec.focal_gamma)

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        x = to_device(batch["image"], self.device, image=True)
        mask, labels = to_device(batch["mask"], self.device), to_device(batch["label"], self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda"):
            if self.forestnet.head is None:
                logits, event_logits = self.forestnet(x), None
            else:
                scalars = to_device(batch["scalars"], self.device)
                logits, event_logits = self.forestnet(x, mask, scalars)
        loss = self.pixel_loss(logits, mask, labels)
        if event_logits is not None and self.spec.fusion_loss_weight > 0:
            loss = loss + self.spec.fusion_loss_weight * event_cross_entropy(
                event_logits, labels, self.weights)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.grad_clip)
        self.optimiser.step()
        return float(loss.detach())


def scheduled_lr(spec: TrainSpec, epoch: int, batch: int, n_batches: int) -> float:
    """Learning rate of a step; a pure function of its position, so resuming needs no
    scheduler state."""
    if spec.lr_schedule == "constant":
        return spec.lr
    progress = (epoch + batch / max(n_batches, 1)) / spec.epochs
    return spec.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device
             ) -> tuple[dict, np.ndarray, np.ndarray]:
    """Event-level report, event logits and true labels on the composite view."""
    model.eval()
    forestnet = as_forestnet(model)
    y_true, logits = [], []
    with torch.inference_mode():
        for batch in loader:
            x = to_device(batch["image"], device, image=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                _, event_logits = forestnet(x, to_device(batch["mask"], device),
                                            to_device(batch["scalars"], device))
            logits.append(event_logits.float().cpu().numpy())
            y_true.append(batch["label"].numpy())
    n_classes = len(DRIVER_CLASSES)
    if not logits:
        return (classification_report([], [], n_classes), np.zeros((0, n_classes)),
                np.zeros(0, int))
    z, y = np.concatenate(logits), np.concatenate(y_true)
    return classification_report(y, z.argmax(1), n_classes), z, y


@dataclass
class Loaders:
    """Datasets and loaders of one chip store, and the normalisation they share."""

    stats: dict[str, list]
    train: DataLoader
    val: DataLoader
    test: DataLoader
    sampler: EpochSampler

    @property
    def train_labels(self) -> np.ndarray:
        ds = self.train.dataset
        return ds.labels[ds.indices]


def make_loaders(chips_path: Path, model_spec: ModelSpec, spec: TrainSpec,
                 device: torch.device) -> Loaders:
    """Normalisation from the train split; train/val/test loaders over the chip store."""
    chips = open_chips(chips_path)
    train_idx = split_indices(chips, "train")
    if len(train_idx) == 0:
        raise ValueError(f"{chips_path}: no usable training events (split 'train', chip_ok)")
    features = model_spec.fusion_features
    check_features(chips, features)
    stats = normalisation_stats(chips, train_idx, model_spec.in_bands, model_spec.aux_bands)
    if features:
        stats.update(scalar_stats(event_scalars(chips, train_idx, features)))
    common = dict(bands=model_spec.in_bands, aux_bands=model_spec.aux_bands, stats=stats,
                  scalar_features=features)
    train_ds = ChipDataset(str(chips_path), "train", train=True, crop=spec.crop, sda=spec.sda,
                           seed=spec.seed, cache_mb=spec.cache_mb, **common)
    context = model_spec.event_context
    val_ds = ChipDataset(str(chips_path), "val", train=False, event_context=context, **common)
    test_ds = ChipDataset(str(chips_path), "test", train=False, event_context=context, **common)
    sampler = EpochSampler(len(train_ds), spec.samples_per_epoch, spec.seed)
    workers = spec.num_workers
    # Workers persist across epochs (no re-fork and store re-open per epoch); pinned memory
    # lets the host-to-GPU copy overlap the previous step.
    loader_args = dict(num_workers=workers, pin_memory=device.type == "cuda",
                       persistent_workers=workers > 0, worker_init_fn=seed_worker,
                       generator=torch.Generator().manual_seed(spec.seed))
    if workers:
        loader_args["prefetch_factor"] = 2
    train_dl = DataLoader(train_ds, batch_size=spec.batch_size, sampler=sampler,
                          drop_last=len(sampler) > spec.batch_size, **loader_args)
    # Evaluation runs once per epoch: its workers need not outlive it (and hold memory).
    # Event windows differ in size: batches hold windows of one shape, as in predict_events.
    eval_args = {**loader_args, "persistent_workers": False}
    val_dl, test_dl = (
        DataLoader(ds, batch_sampler=same_shape_batches(ds.window_shapes(), spec.batch_size),
                   **eval_args) for ds in (val_ds, test_ds))
    return Loaders(stats, train_dl, val_dl, test_dl, sampler)


def training_fusion_inputs(chips_path: Path, model_spec: ModelSpec) -> tuple[ModelSpec, dict]:
    """The model spec with the fusion features the training events can support, and the
    record of that choice (``fusion_features.choose_fusion_features``) for the bundle."""
    if not model_spec.fusion_features:
        return model_spec, {}
    chips = open_chips(chips_path)
    check_features(chips, model_spec.fusion_features)
    values = event_scalars(chips, split_indices(chips, "train"), model_spec.fusion_features)
    chosen = choose_fusion_features(values, model_spec.fusion_features)
    return model_spec.model_copy(update={"fusion_features": tuple(chosen["kept"])}), chosen


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``checkpoint.pt`` atomically: a kill mid-write leaves the previous one."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def save_weights(path: Path, model: nn.Module) -> None:
    with atomic_output(path) as tmp:
        save_file(_state_dict(model), str(tmp))


def train_model(chips_path: Path, out_dir: Path, model_spec: ModelSpec, spec: TrainSpec,
                on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Train on the chip store's train split, select on val, write ``out_dir/bundle``.

    Rerunning with the same ``out_dir`` resumes from ``checkpoint.pt``; the data order of
    every epoch depends only on (seed, epoch), so a resumed run repeats what an
    uninterrupted one would have done. ``on_epoch`` sees each epoch's metrics record as
    it is written (a caller shows progress with it, e.g. where the run's user looks).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.seed)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    device = pick_device(spec.device)
    radiometry = store_radiometry(open_chips(chips_path).attrs)
    model_spec, fusion_inputs = training_fusion_inputs(chips_path, model_spec)
    data = make_loaders(chips_path, model_spec, spec, device)
    model = build_model(model_spec).to(device, memory_format=torch.channels_last)
    weights = class_weight_tensor(spec.class_weights, data.train_labels, model_spec.n_classes)
    step = TrainStep(model, spec, device, weights)
    # The model that is judged on val and kept: the weights' moving average, or the weights.
    average = WeightAverage(model, spec.ema_decay) if spec.ema_decay else None
    judged = average.module if average else model

    ckpt, best_path = out_dir / "checkpoint.pt", out_dir / "best.safetensors"
    metrics = MetricsLog(out_dir, spec.metrics_csv, spec.tensorboard)
    # The kept model: the best val macro F1, ties (frequent on a small val split) to the
    # lower val NLL: the first epoch to classify val perfectly is rarely the best one.
    start_epoch, best_f1, best_nll, stale, best_epoch = 0, -1.0, math.inf, 0, None
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("model_spec") not in (None, model_spec.model_dump_json()):
            raise ValueError(f"{ckpt} was written for another model spec; delete {out_dir} "
                             "or choose another output folder")
        require_same(radiometry, str(chips_path), state.get("radiometry", "toa"),
                     f"the model resumed from {ckpt}")
        model.load_state_dict(state["model"])
        step.optimiser.load_state_dict(state["optimiser"])
        if average is not None:
            if "average" not in state:
                raise ValueError(f"{ckpt} holds no weight average but ema_decay is set; "
                                 f"delete {out_dir} or train without ema_decay")
            average.load_state_dict(state["average"])
        start_epoch, best_f1, stale = state["epoch"] + 1, state["best_f1"], state["stale"]
        best_nll, best_epoch = state.get("best_nll", math.inf), state.get("best_epoch")
        log.info("resuming training at epoch %d (best val macro F1 %.3f)", start_epoch, best_f1)
    metrics.resume(start_epoch)
    show_bar = progress_enabled(spec.progress)

    for epoch in range(start_epoch, spec.epochs):
        if stale >= spec.patience:
            log.info("early stop: val macro F1 has not improved for %d epochs", stale)
            break
        data.sampler.set_epoch(epoch)
        torch.manual_seed(spec.seed * 1_000_003 + epoch)  # dropout masks, per epoch
        model.train()
        losses, images = [], 0
        n_batches = len(data.train)
        if spec.max_batches_per_epoch:
            n_batches = min(n_batches, spec.max_batches_per_epoch)
        started = time.perf_counter()
        with EpochBar(epoch, n_batches, show_bar) as bar:
            for i, batch in enumerate(data.train):
                if i >= n_batches:
                    break
                for group in step.optimiser.param_groups:
                    group["lr"] = scheduled_lr(spec, epoch, i, n_batches)
                losses.append(step(batch))
                if average is not None:
                    average.update(model)
                images += len(batch["label"])
                bar.advance(losses[-1])
        train_s = time.perf_counter() - started
        report, val_z, val_y = evaluate(judged, data.val, device) if len(data.val.dataset) else (
            {"macro_f1": 0.0}, None, None)
        f1 = report["macro_f1"] if np.isfinite(report["macro_f1"]) else 0.0
        nll = negative_log_likelihood(val_z, val_y) if val_z is not None else math.inf
        improved = f1 > best_f1 or (f1 == best_f1 and nll < best_nll)
        if improved:
            best_f1, best_nll, stale, best_epoch = f1, nll, 0, epoch
            save_weights(best_path, judged)
        else:
            stale += 1
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                  "val_accuracy": report.get("accuracy"), "val_macro_f1": f1,
                  "val_nll": round(nll, 5) if math.isfinite(nll) else None,
                  "best_val_macro_f1": best_f1, "best_epoch": best_epoch,
                  "images_per_s": round(images / train_s, 2),
                  "seconds": round(time.perf_counter() - started, 2)}
        metrics.write(record)
        if on_epoch is not None:
            on_epoch(record)
        log.info("epoch %d: loss %.4f, val macro F1 %.3f%s", epoch, record["train_loss"] or 0,
                 f1, " (best)" if improved else "")
        save_checkpoint(ckpt, {"model": model.state_dict(),
                               "optimiser": step.optimiser.state_dict(), "epoch": epoch,
                               **({"average": average.state_dict()} if average else {}),
                               "best_f1": best_f1, "best_nll": best_nll, "stale": stale,
                               "best_epoch": best_epoch,
                               "radiometry": radiometry,
                               "model_spec": model_spec.model_dump_json()})
    metrics.close()

    if best_path.exists():
        model.load_state_dict(load_file(str(best_path), device=str(device)))
    val_report, val_logits, val_labels = evaluate(model, data.val, device)
    test_report, test_logits, test_labels = evaluate(model, data.test, device)
    # One temperature on val (Guo et al. 2017): the map's p_* then mean what they say.
    calibration = calibrate(val_logits, val_labels)
    temperature = calibration["temperature"]
    if len(test_labels):
        calibration["test_ece_before"] = expected_calibration_error(probabilities(test_logits),
                                                                    test_labels)
        calibration["test_ece_after"] = expected_calibration_error(
            probabilities(test_logits, temperature), test_labels)
    log.info("calibration: temperature %.3f (val NLL %s -> %s)", temperature,
             calibration.get("val_nll_before"), calibration.get("val_nll_after"))
    chips = open_chips(chips_path)
    meta = {
        "model": model_spec,
        "normalisation": data.stats,
        "training": spec.model_dump(mode="json"),
        "metrics": {"val": val_report, "test": test_report, "best_val_macro_f1": best_f1,
                    # The held-out headline, where a reader of bundle.json looks first.
                    "test_accuracy": test_report.get("accuracy"),
                    "test_macro_f1": test_report.get("macro_f1"),
                    "epochs_run": len(metrics.records()), "best_epoch": best_epoch,
                    "train_events": len(data.train.dataset)},
        "data_hash": str(chips.attrs.get("events_fingerprint", "")),
        "radiometry": radiometry,
        "calibration": calibration,
        "fusion_inputs": fusion_inputs,
        "provenance": {"chips": str(Path(chips_path).resolve()), "device": device.type,
                       "encoder_weights": weights_provenance(model_spec.encoder_weights,
                                                             model_spec.encoder)},
    }
    return save_bundle(model.cpu(), meta, out_dir / "bundle")
