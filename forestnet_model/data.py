"""Torch Dataset over ``chips.zarr`` with scene data augmentation (SDA) and random crops.

Samples are read straight from the Zarr arrays (not through xarray): only the drawn view,
the needed bands and the crop window are decoded into float32, which keeps the data path
well below the cost of a training step. The store is opened lazily in each process, so
DataLoader workers never share a Zarr handle (or its IO thread) across a fork.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import xarray as xr
import zarr
from torch.utils.data import Dataset, Sampler

from forestnet_model.losses import IGNORE_INDEX
from forestnet_model.model_inputs import (
    display_clip,
    event_window,
    normalise,
    normalise_scalars,
    pad_to_multiple,
)
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.core.lru_cache import ByteBoundedLRU
from pipeline.core.radiometry import DISPLAY_MAX
from pipeline.training_set.chip_store import consolidated_metadata_quiet, open_chips

#: A dataset key: an index (augmented from the dataset's own generator) or an index and a
#: per-sample seed (see :class:`EpochSampler`), which makes augmentation independent of
#: worker count and of where a run was resumed.
Key = int | tuple[int, int]


def split_indices(chips: xr.Dataset, split: str) -> np.ndarray:
    """Labelled events of a split whose chip was built (``chip_ok``).

    Unlabelled events (GFC-sourced, label "") can sit in a store; they never train.
    """
    ok = chips["chip_ok"].values.astype(bool)
    labelled = np.array([str(m) in DRIVER_CLASSES for m in chips["merged_label"].values], bool)
    return np.flatnonzero((chips["split"].values == split) & ok & labelled)


def normalisation_stats(
    chips: xr.Dataset, indices: np.ndarray, bands: tuple[str, ...], aux_bands: tuple[str, ...]
) -> dict[str, list]:
    """Per-channel mean/std of the training composites (and aux), stored in the bundle
    with the display range each band is clipped to first (``model_inputs.normalise``)."""
    idx = indices[: min(len(indices), 256)]
    display_max = [DISPLAY_MAX.get(b) for b in bands]
    image = chips["image"].isel(event=idx, view=0).sel(band=list(bands)).values
    image = display_clip(image.swapaxes(0, 1), display_max).swapaxes(0, 1)
    channels = [image[:, i] for i in range(image.shape[1])]
    if aux_bands:
        aux = chips["aux"].isel(event=idx).sel(aux_band=list(aux_bands)).values
        channels += [aux[:, i] for i in range(aux.shape[1])]
    mean = [float(np.nanmean(c)) if np.isfinite(c).any() else 0.0 for c in channels]
    std = [float(np.nanstd(c)) if np.isfinite(c).any() else 1.0 for c in channels]
    return {"mean": mean, "std": [s if s > 1e-6 else 1.0 for s in std],
            "display_max": display_max}


def check_features(chips: xr.Dataset, features: Sequence[str]) -> None:
    """Raise ValueError naming fusion features the store lacks, and those it has."""
    have = [str(f) for f in chips["feature"].values]
    missing = [f for f in features if f not in have]
    if missing:
        raise ValueError(f"fusion_features {missing} are not in the chip store's aux_scalar "
                         f"features; available: {', '.join(have) or 'none'}")


def event_scalars(chips: xr.Dataset, indices: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """Raw aux scalars ``(len(indices), len(features))`` in ``features`` order."""
    if not features:
        return np.zeros((len(indices), 0), np.float32)
    check_features(chips, features)
    values = chips["aux_scalar"].isel(event=indices).sel(feature=list(features)).values
    return np.asarray(values, np.float32)


def scalar_stats(values: np.ndarray) -> dict[str, list[float]]:
    """Mean/std of each scalar feature over the training events (NaN ignored)."""
    mean, std = [], []
    for column in np.asarray(values, np.float64).T:
        finite = column[np.isfinite(column)]
        mean.append(float(finite.mean()) if finite.size else 0.0)
        s = float(finite.std()) if finite.size else 1.0
        std.append(s if s > 1e-6 else 1.0)
    return {"scalar_mean": mean, "scalar_std": std}


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)``; the draw is a pure function of (seed, epoch).

    A resumed run therefore sees exactly the crops, views and flips an uninterrupted run
    would have, whatever the number of DataLoader workers.
    """

    def __init__(self, n: int, num_samples: int | None, seed: int) -> None:
        self.n, self.num_samples, self.seed, self.epoch = n, num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples or self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.num_samples is None:
            order = rng.permutation(self.n)
        else:  # several crops per event and epoch: draws with replacement
            order = rng.integers(0, self.n, size=self.num_samples)
        seeds = rng.integers(0, 2**62, size=len(order))
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python and numpy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ChipDataset(Dataset):
    """Events of one split. Training: random view (SDA), random crop, flips, rot90, jitter.
    Evaluation: the composite view in the event's window (:func:`event_window`).

    Items hold ``image (C, H, W)`` (normalised bands then aux bands), ``mask``, ``label``,
    ``event``, ``scalars (F,)`` (normalised ``scalar_features``) and, with ``target_band``,
    ``target (H, W)``: that aux band as integer classes (0 and NaN become IGNORE_INDEX),
    the per-pixel labels of land-cover pre-training. ``cache_mb`` > 0 keeps decoded
    events in memory (per process, least recently used out first).
    """

    def __init__(
        self, path: str, split: str, bands: tuple[str, ...], aux_bands: tuple[str, ...],
        stats: dict[str, list], train: bool, crop: int = 224, sda: bool = True,
        seed: int = 0, scalar_features: tuple[str, ...] = (), target_band: str | None = None,
        cache_mb: float = 0, event_context: int | None = None,
    ) -> None:
        self.path, self.split, self.bands, self.aux_bands = str(path), split, bands, aux_bands
        self.stats, self.train, self.crop, self.sda = stats, train, crop, sda
        self.event_context = event_context  # evaluation only: see event_window
        self.target_band = target_band
        chips = open_chips(self.path)
        self.indices = split_indices(chips, split)
        classes = list(DRIVER_CLASSES)
        self.labels = np.array([classes.index(str(m)) if str(m) in classes else -1
                                for m in chips["merged_label"].values])
        self.view_dates = chips["view_date"].values
        self.band_index = _positions(chips["band"].values, bands, "band")
        aux_names = list(aux_bands) + ([target_band] if target_band else [])
        self.aux_index = _positions(chips["aux_band"].values, tuple(aux_names), "aux band")
        self.scalars = normalise_scalars(
            event_scalars(chips, np.arange(chips.sizes["event"]), scalar_features), stats
        ) if scalar_features else np.zeros((chips.sizes["event"], 0), np.float32)
        enc = chips["image"].encoding
        self.scale = float(enc.get("scale_factor", 1.0))
        self.offset = float(enc.get("add_offset", 0.0))
        self.fill = enc.get("_FillValue")
        self.rng = np.random.default_rng(seed)
        self._group: tuple[int, zarr.Group] | None = None
        self.cache = ByteBoundedLRU(int(cache_mb * 2**20)) if cache_mb > 0 else None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def chips(self) -> xr.Dataset:
        return open_chips(self.path)

    @property
    def group(self) -> zarr.Group:
        # Keyed by process id: a forked worker opens its own store.
        if self._group is None or self._group[0] != os.getpid():
            with consolidated_metadata_quiet():
                self._group = (os.getpid(), zarr.open_group(self.path, mode="r"))
        return self._group[1]

    def _key(self, key: Key) -> tuple[int, np.random.Generator]:
        if isinstance(key, tuple | list):
            return int(key[0]), np.random.default_rng(int(key[1]))
        return int(key), self.rng

    def _view(self, event: int, rng: np.random.Generator) -> int:
        if not (self.train and self.sda):
            return 0
        available = [0] + [v for v in range(1, self.view_dates.shape[1])
                           if self.view_dates[event, v] > 0]
        return int(rng.choice(available))

    def window_shapes(self) -> list[tuple[int, int]]:
        """The evaluation window's shape of each item, in item order (for batching)."""
        masks = self.group["loss_mask"]
        shapes = []
        for event in self.indices:
            mask = masks[int(event)].astype(bool)
            shapes.append(mask[event_window(mask, self.event_context)].shape)
        return shapes

    def _window(self, mask: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
        if not self.train:
            return event_window(mask, self.event_context)
        h, w = mask.shape
        c = min(self.crop, h, w)
        for _ in range(10):  # keep crops that see the loss region
            top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            if mask[top:top + c, left:left + c].any():
                break
        else:
            top, left = (h - c) // 2, (w - c) // 2
        return slice(top, top + c), slice(left, left + c)

    def _cached(self, event: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Every view of the needed bands ``(view, band, y, x)``, the aux bands and the loss
        mask of one event, decoded once and then served from memory.

        Zarr decodes a whole event chunk (every view and band) whatever part is asked for,
        so keeping it makes later samples of the event a memory slice.
        """
        arrays = self.cache.get(event)
        if arrays is None:
            group = self.group
            image = group["image"][event][:, self.band_index]
            aux = group["aux"][event][self.aux_index] if len(self.aux_index) else None
            arrays = self.cache.put(event, (image, aux, group["loss_mask"][event].astype(bool)))
        return arrays

    def _read_window(self, event: int, view: int, rows: slice, cols: slice
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """One view's needed bands and the aux bands in a window, straight from Zarr."""
        raw = self.group["image"][event, view, :, rows, cols][self.band_index]
        aux = (self.group["aux"][event, :, rows, cols][self.aux_index]
               if len(self.aux_index) else None)
        return raw, aux

    def _decode(self, raw: np.ndarray, aux: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Reflectance (NaN for fill) with the aux bands appended, and the target band."""
        x = raw.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.fill is not None:
            x[raw == self.fill] = np.nan
        target = None
        if aux is not None:
            aux = aux.astype(np.float32)
            if self.target_band:
                aux, target = aux[:-1], aux[-1]
            if len(aux):
                x = np.concatenate([x, aux])
        return x, target

    def __getstate__(self) -> dict:
        # A worker process gets the settings, not the parent's cache or Zarr handle.
        state = dict(self.__dict__)
        state["_group"] = None
        state["cache"] = ByteBoundedLRU(self.cache.max_bytes) if self.cache is not None else None
        return state

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        i, rng = self._key(key)
        event = int(self.indices[i])
        view = self._view(event, rng)
        if self.cache is not None:
            image, aux, full_mask = self._cached(event)
            rows, cols = self._window(full_mask, rng)
            raw, aux = image[view, :, rows, cols], None if aux is None else aux[:, rows, cols]
        else:
            full_mask = self.group["loss_mask"][event].astype(bool)
            rows, cols = self._window(full_mask, rng)
            raw, aux = self._read_window(event, view, rows, cols)
        x, target = self._decode(raw, aux)
        x, mask = normalise(x, self.stats), full_mask[rows, cols]
        planes = [mask] + ([_classes(target)] if target is not None else [])
        if self.train:
            x, planes = _flip_rotate(x, planes, rng)
            # Small radiometric jitter: gain and offset per channel, in standardised units.
            gain = 1.0 + rng.normal(0, 0.05, size=(x.shape[0], 1, 1)).astype(np.float32)
            offset = rng.normal(0, 0.05, size=(x.shape[0], 1, 1)).astype(np.float32)
            x = x * gain + offset
        else:
            x = pad_to_multiple(x)
            planes = [_pad_plane(p) for p in planes]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(planes[0])),
            "label": torch.tensor(self.labels[event]),
            "event": torch.tensor(event),
            "scalars": torch.from_numpy(self.scalars[event]),
        }
        if target is not None:
            item["target"] = torch.from_numpy(np.ascontiguousarray(planes[1]))
        return item


def _positions(have: np.ndarray, wanted: tuple[str, ...], kind: str) -> np.ndarray:
    names = [str(v) for v in have]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"chip store lacks {kind}s {missing}; it has {', '.join(names)}")
    return np.array([names.index(w) for w in wanted], dtype=np.int64)


def _classes(band: np.ndarray) -> np.ndarray:
    """A categorical aux band as int64 classes; 0 (no data) and NaN are ignored."""
    out = np.where(np.isfinite(band), band, 0).astype(np.int64)
    out[out <= 0] = IGNORE_INDEX
    return out


def _pad_plane(plane: np.ndarray) -> np.ndarray:
    if plane.dtype == np.int64:  # targets: the padding is ignored, not class 0
        return pad_to_multiple(plane - IGNORE_INDEX) + IGNORE_INDEX
    return pad_to_multiple(plane)


def _flip_rotate(
    x: np.ndarray, planes: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    k = int(rng.integers(0, 4))
    x, planes = np.rot90(x, k, axes=(1, 2)), [np.rot90(p, k) for p in planes]
    if rng.random() < 0.5:
        x, planes = x[:, :, ::-1], [p[:, ::-1] for p in planes]
    return x, planes
