"""Torch Dataset over ``chips.zarr`` with scene data augmentation (SDA) and random crops."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from pipeline.chip_store import open_chips
from pipeline.drivers import DRIVER_CLASSES


def split_indices(chips: xr.Dataset, split: str) -> np.ndarray:
    """Labelled events of a split whose chip was built (``chip_ok``).

    Unlabelled events (GFC-sourced, label "") can sit in a store; they never train.
    """
    ok = chips["chip_ok"].values.astype(bool)
    labelled = np.array([str(m) in DRIVER_CLASSES for m in chips["merged_label"].values], bool)
    return np.flatnonzero((chips["split"].values == split) & ok & labelled)


def normalisation_stats(
    chips: xr.Dataset, indices: np.ndarray, bands: tuple[str, ...], aux_bands: tuple[str, ...]
) -> dict[str, list[float]]:
    """Per-channel mean/std of the training composites (and aux), stored in the bundle."""
    idx = indices[: min(len(indices), 256)]
    image = chips["image"].isel(event=idx, view=0).sel(band=list(bands)).values
    channels = [image[:, i] for i in range(image.shape[1])]
    if aux_bands:
        aux = chips["aux"].isel(event=idx).sel(aux_band=list(aux_bands)).values
        channels += [aux[:, i] for i in range(aux.shape[1])]
    mean = [float(np.nanmean(c)) if np.isfinite(c).any() else 0.0 for c in channels]
    std = [float(np.nanstd(c)) if np.isfinite(c).any() else 1.0 for c in channels]
    return {"mean": mean, "std": [s if s > 1e-6 else 1.0 for s in std]}


def normalise(x: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Standardise ``(C, H, W)`` channels; NaN (no data) becomes 0, the channel mean."""
    mean = np.asarray(stats["mean"], np.float32)[:, None, None]
    std = np.asarray(stats["std"], np.float32)[:, None, None]
    return np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def pad_to_multiple(x: np.ndarray, multiple: int = 32) -> np.ndarray:
    """Zero-pad the last two axes up to a multiple (encoders downsample by 32)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pad = [(0, 0)] * (x.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
    return np.pad(x, pad)


class ChipDataset(Dataset):
    """Events of one split. Training: random view (SDA), random crop, flips, rot90, jitter.

    The Zarr store is opened lazily in each process, so DataLoader workers never share a
    file handle across forks.
    """

    def __init__(
        self, path: str, split: str, bands: tuple[str, ...], aux_bands: tuple[str, ...],
        stats: dict[str, list[float]], train: bool, crop: int = 224, sda: bool = True,
        seed: int = 0,
    ) -> None:
        self.path, self.split, self.bands, self.aux_bands = str(path), split, bands, aux_bands
        self.stats, self.train, self.crop, self.sda = stats, train, crop, sda
        chips = open_chips(self.path)
        self.indices = split_indices(chips, split)
        classes = list(DRIVER_CLASSES)
        self.labels = np.array([classes.index(str(m)) if str(m) in classes else -1
                                for m in chips["merged_label"].values])
        self.view_dates = chips["view_date"].values
        self.rng = np.random.default_rng(seed)
        self._chips: xr.Dataset | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def chips(self) -> xr.Dataset:
        if self._chips is None:
            self._chips = open_chips(self.path)
        return self._chips

    def _view(self, event: int) -> int:
        if not (self.train and self.sda):
            return 0
        available = [0] + [v for v in range(1, self.view_dates.shape[1])
                           if self.view_dates[event, v] > 0]
        return int(self.rng.choice(available))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        event = int(self.indices[i])
        ev = self.chips.isel(event=event)
        x = ev["image"].isel(view=self._view(event)).sel(band=list(self.bands)).values
        if self.aux_bands:
            x = np.concatenate([x, ev["aux"].sel(aux_band=list(self.aux_bands)).values])
        x = normalise(x.astype(np.float32), self.stats)
        mask = ev["loss_mask"].values.astype(bool)
        if self.train:
            x, mask = self._augment(x, mask)
        else:
            x, mask = pad_to_multiple(x), pad_to_multiple(mask)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "label": torch.tensor(self.labels[event]),
            "event": torch.tensor(event),
        }

    def _augment(self, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = mask.shape
        c = min(self.crop, h, w)
        for _ in range(10):  # keep crops that see the loss region
            top, left = self.rng.integers(0, h - c + 1), self.rng.integers(0, w - c + 1)
            if mask[top:top + c, left:left + c].any():
                break
        else:
            top, left = (h - c) // 2, (w - c) // 2
        x, mask = x[:, top:top + c, left:left + c], mask[top:top + c, left:left + c]
        k = int(self.rng.integers(0, 4))
        x, mask = np.rot90(x, k, axes=(1, 2)), np.rot90(mask, k)
        if self.rng.random() < 0.5:
            x, mask = x[:, :, ::-1], mask[:, ::-1]
        # Small radiometric jitter: gain and offset per channel, in standardised units.
        gain = 1.0 + self.rng.normal(0, 0.05, size=(x.shape[0], 1, 1)).astype(np.float32)
        offset = self.rng.normal(0, 0.05, size=(x.shape[0], 1, 1)).astype(np.float32)
        return x * gain + offset, mask
