"""The chip store (``chips.zarr``): a template written once, then chunk-aligned batch writes.

Build protocol (resumable, atomic):
1. ``init_chip_store`` writes the template (coordinates, empty arrays, event chunk = 1) to
   a partial store next to the final path, unless a partial store for the same events
   already exists (a killed run: reuse it).
2. ``write_chip_batch`` fills events ``[start, stop)`` with a region write (always aligned,
   since the event chunk is 1) and then drops a marker in ``<partial>.progress/``.
3. ``finalize_chip_store`` checks every batch is done and renames the store into place.

The ``aux_band`` and ``feature`` coordinates name the aux registry entries the store holds
(chosen by config). Events may carry ``anchor_lon``/``anchor_lat`` columns (the ForestNet
release's chip centres); otherwise a chip is centred on its event's representative point.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask.array as dsa
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from pipeline.core.atomic import atomic_output
from pipeline.core.grid import centred_geobox
from pipeline.core.radiometry import CHIP_SCALING
from pipeline.imagery.views import CHIP_BANDS, ChipSpec, EventChip
from pipeline.training_set.auxiliary import AUX_BANDS, AUX_SCALARS

REFLECTANCE_SCALE = 1e-4
INT16_FILL = -32768


def events_fingerprint(events: gpd.GeoDataFrame, spec: ChipSpec, *extra: object) -> str:
    """Hash of the events, chip spec and ``extra`` (aux choice, attributes): a partial
    store is reused only for the same input."""
    h = hashlib.sha256()
    h.update(repr(spec).encode())
    for item in extra:
        h.update(repr(item).encode())
    for row in events[["event_id", "loss_year"]].itertuples(index=False):
        h.update(f"{row.event_id}|{row.loss_year};".encode())
    h.update(b"".join(g.wkb for g in events.geometry))
    lon, lat = event_anchors(events)
    h.update(np.ascontiguousarray(np.r_[lon, lat], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def event_anchors(events: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Chip centres (lon, lat): ``anchor_lon/anchor_lat`` columns, else representative points."""
    if {"anchor_lon", "anchor_lat"} <= set(events.columns):
        return (events["anchor_lon"].to_numpy(np.float64),
                events["anchor_lat"].to_numpy(np.float64))
    points = events.geometry.representative_point()
    return points.x.to_numpy(np.float64), points.y.to_numpy(np.float64)


def is_complete(final: Path) -> bool:
    """Whether a finished chip store is at ``final`` (it is built beside it, then renamed)."""
    return (Path(final) / "zarr.json").exists()


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def progress_dir(final: Path) -> Path:
    return final.with_name(f".{final.name}.progress")


#: ``source`` of a store imported from the published release (``release_import``).
RELEASE_SOURCE = "forestnet_release"


def init_chip_store(
    final: Path,
    events: gpd.GeoDataFrame,
    spec: ChipSpec,
    aux_bands: tuple[str, ...] = AUX_BANDS,
    aux_features: tuple[str, ...] = AUX_SCALARS,
    attrs: dict | None = None,
) -> Path:
    """Create (or reuse) the partial store for ``events``; return its path.

    ``aux_bands``/``aux_features`` name the aux registry entries stored; ``attrs`` (source,
    scaling, aux provenance) go on the store.
    """
    final = Path(final)
    partial, progress = partial_path(final), progress_dir(final)
    aux_bands, aux_features, attrs = tuple(aux_bands), tuple(aux_features), dict(attrs or {})
    fingerprint = events_fingerprint(events, spec, aux_bands, aux_features,
                                     sorted((k, repr(v)) for k, v in attrs.items()))
    if (partial / "zarr.json").exists():
        try:
            attrs = zarr.open_group(str(partial), mode="r").attrs
            if attrs.get("events_fingerprint") == fingerprint:
                return partial
        except (ValueError, KeyError, FileNotFoundError):
            pass
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(progress, ignore_errors=True)
    progress.mkdir(parents=True, exist_ok=True)
    # The release's chips are centred on their lat/lon as published; built chips sit on the
    # map tiles' lattice (see chip_geobox).
    on_lattice = attrs.get("source") != RELEASE_SOURCE
    template = _template(events, spec, aux_bands, aux_features, on_lattice)
    template.attrs.update(attrs)
    template.attrs["events_fingerprint"] = fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template.to_zarr(str(partial), mode="w", compute=False, zarr_format=3,
                         consolidated=False, encoding=_encoding(spec, len(aux_bands)))
    return partial


def _template(
    events: gpd.GeoDataFrame, spec: ChipSpec, aux_bands: tuple[str, ...],
    aux_features: tuple[str, ...], on_lattice: bool = True,
) -> xr.Dataset:
    n, v, b, s = len(events), spec.n_views, len(CHIP_BANDS), spec.size
    na, nf = len(aux_bands), len(aux_features)
    lon, lat = event_anchors(events)
    boxes = [centred_geobox(x, y, spec.size, spec.resolution, on_lattice=on_lattice)
             for x, y in zip(lon, lat, strict=True)]
    coords = {
        "event_id": ("event", _text(events["event_id"])),
        "label": ("event", _text(events["label"])),
        "merged_label": ("event", _text(events["merged_label"])),
        "split": ("event", _text(events["split"])),
        "loss_year": ("event", events["loss_year"].astype(np.int16).to_numpy()),
        "lat": ("event", lat),
        "lon": ("event", lon),
        "epsg": ("event", np.array([bx.crs.epsg for bx in boxes], dtype=np.int32)),
        "transform": (("event", "affine"), np.array([tuple(bx.affine)[:6] for bx in boxes])),
        "band": np.array(CHIP_BANDS, dtype=object),
        "aux_band": np.array(aux_bands, dtype=object),
        "feature": np.array(aux_features, dtype=object),
    }

    def lazy(shape, dtype, chunks):
        return dsa.zeros(shape, dtype=dtype, chunks=chunks)

    data = {
        "image": (("event", "view", "band", "y", "x"),
                  lazy((n, v, b, s, s), np.float32, (1, v, b, s, s))),
        "view_date": (("event", "view"), lazy((n, v), np.int32, (1, v))),
        "view_cloud_fraction": (("event", "view"), lazy((n, v), np.float32, (1, v))),
        "loss_mask": (("event", "y", "x"), lazy((n, s, s), np.uint8, (1, s, s))),
        "aux": (("event", "aux_band", "y", "x"), lazy((n, na, s, s), np.float32, (1, na, s, s))),
        "aux_scalar": (("event", "feature"), lazy((n, nf), np.float32, (1, max(nf, 1)))),
        "chip_ok": (("event",), lazy((n,), np.uint8, (1,))),
    }
    ds = xr.Dataset(data, coords=coords)
    ds["view_date"].attrs["description"] = "acquisition date as YYYYMMDD; 0 = composite or empty"
    ds["image"].attrs["description"] = "reflectance; view 0 = composite, 1.. = single scenes"
    ds.attrs.update(chip_size=s, chip_resolution=spec.resolution, n_views=v,
                    radiometry=spec.radiometry, reflectance_scaling=CHIP_SCALING)
    return ds


def _text(values) -> np.ndarray:
    # Variable-length strings: Zarr v3 specifies them; fixed-width numpy unicode it does not.
    return np.asarray([str(v) for v in values], dtype=object)


def _encoding(spec: ChipSpec, n_aux: int) -> dict:
    s, v = spec.size, spec.n_views
    return {
        "image": {"dtype": "int16", "scale_factor": REFLECTANCE_SCALE, "add_offset": 0.0,
                  "_FillValue": INT16_FILL, "chunks": (1, v, len(CHIP_BANDS), s, s)},
        "aux": {"chunks": (1, max(n_aux, 1), s, s)},
        "loss_mask": {"chunks": (1, s, s)},
    }


def batch_marker(final: Path, start: int, stop: int) -> Path:
    return progress_dir(Path(final)) / f"batch-{start:07d}-{stop:07d}.json"


def write_chip_batch(
    final: Path, start: int, chips: list[EventChip], aux: list[np.ndarray],
    scalars: list[np.ndarray],
) -> dict:
    """Region-write events ``[start, start + len(chips))`` into the partial store."""
    final = Path(final)
    stop = start + len(chips)
    ds = xr.Dataset({
        "view_date": (("event", "view"),
                      np.array([[_yyyymmdd(d) for d in c.view_dates] for c in chips], np.int32)),
        "view_cloud_fraction": (("event", "view"),
                                np.array([c.view_cloud for c in chips], np.float32)),
        "loss_mask": (("event", "y", "x"), np.stack([c.loss_mask for c in chips])),
        "aux": (("event", "aux_band", "y", "x"), _no_data_as_nan(np.stack(aux))),
        "aux_scalar": (("event", "feature"), _no_data_as_nan(np.stack(scalars))),
        "chip_ok": (("event",), np.array([c.status == "ok" for c in chips], np.uint8)),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(str(partial_path(final)), region={"event": slice(start, stop)},
                   zarr_format=3, consolidated=False)
    # The image, by far the largest array, goes in already encoded (one chunk per event,
    # so batches never share a chunk): xarray's whole-batch CF encoding of it was half of
    # a batch's write time, 4x what encode_reflectance takes.
    image = zarr.open_array(str(partial_path(final) / "image"), mode="r+")
    image[start:stop] = encode_reflectance(np.stack([c.image for c in chips]))
    summary = {
        "start": start, "stop": stop,
        "status": [c.status for c in chips],
        "scene_ids": [c.scene_ids for c in chips],
        "notes": [c.notes for c in chips],
    }
    with atomic_output(batch_marker(final, start, stop)) as tmp:
        tmp.write_text(json.dumps(summary))
    return summary


def encode_reflectance(image: np.ndarray) -> np.ndarray:
    """Reflectance ``(..., band, y, x)`` as the store holds it: int16 steps of
    ``REFLECTANCE_SCALE`` (rounded half to even, as CF encoding rounds), clipped to
    [-3.0, 3.2]; NaN is ``INT16_FILL``. One view at a time, in place: whole-batch
    temporaries made this 4x slower."""
    image = np.asarray(image, np.float32)
    out = np.empty(image.shape, np.int16)
    view = np.empty(image.shape[-3:], np.float32)
    for index in np.ndindex(image.shape[:-3]):
        np.clip(image[index], -3.0, 3.2, out=view)
        view /= np.float32(REFLECTANCE_SCALE)  # as CF encoding divides: the same integers
        np.rint(view, out=view)
        np.nan_to_num(view, copy=False, nan=INT16_FILL)
        out[index] = view
    return out


def _no_data_as_nan(values: np.ndarray) -> np.ndarray:
    """float32 with every non-finite value NaN: an infinity in a source (an imported
    release array, say) must read as no data, not skew the normalisation statistics."""
    values = np.asarray(values, np.float32)
    return np.where(np.isfinite(values), values, np.float32(np.nan))


def _yyyymmdd(date: str) -> int:
    return int(date.replace("-", "")) if date and date[0].isdigit() else 0


def finalize_chip_store(
    final: Path, batches: list[tuple[int, int]], extra_attrs: dict | None = None
) -> Path:
    """Check every batch marker, record per-event status, move the store into place."""
    final = Path(final)
    missing = [b for b in batches if not batch_marker(final, *b).exists()]
    if missing:
        raise RuntimeError(f"{final}: {len(missing)} chip batches are not written: {missing[:3]}")
    problems: dict[str, str] = {}
    group = zarr.open_group(str(partial_path(final)), mode="a")
    ids = group["event_id"][:]
    for start, stop in batches:
        summary = json.loads(batch_marker(final, start, stop).read_text())
        for i, status in enumerate(summary["status"]):
            if status != "ok":
                problems[str(ids[start + i])] = status
    group.attrs["skipped_events"] = problems
    group.attrs.update(extra_attrs or {})
    with consolidated_metadata_quiet():
        zarr.consolidate_metadata(str(partial_path(final)))
    with atomic_output(final) as tmp:
        partial_path(final).rename(tmp)
    shutil.rmtree(progress_dir(final), ignore_errors=True)
    return final


@contextmanager
def consolidated_metadata_quiet() -> Iterator[None]:
    """Silence zarr's warning, on every write and read of Zarr v3 consolidated metadata,
    that the v3 spec does not cover it yet: chips.zarr relies on it on purpose (one
    metadata read per open, for training loaders and Dask tasks alike), and the warning
    would otherwise reach a user's terminal on every run. Other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


def open_chips(path: Path) -> xr.Dataset:
    """Open ``chips.zarr`` lazily."""
    with consolidated_metadata_quiet():
        return xr.open_zarr(str(path), consolidated=True, chunks=None)


def store_counts(chips: Path) -> dict:
    """Events per split and events without imagery, read back from a finished store."""
    ds = open_chips(chips)
    splits = pd.Series([str(v) for v in ds["split"].values]).value_counts()
    return {"events": {str(k): int(v) for k, v in sorted(splits.items())},
            "events_without_imagery": len(ds.attrs.get("skipped_events", {}))}
