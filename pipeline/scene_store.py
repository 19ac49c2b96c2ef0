"""The scene store's write side: atomic scene groups, their completeness check, leftovers.

A scene group is written under a temporary name and renamed into place after its last
chunk and its completion marker, so a killed run leaves either nothing or a temporary
that the next run removes. Whether a group is whole is decided from the store itself:
the marker, the source it came from, the array shapes, and every chunk being present.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr
import zarr
from zarr.errors import ContainsGroupError

from pipeline.atomic import _remove, atomic_output
from pipeline.landsat import qa_flag, usable_mask
from pipeline.scene_reader import store_chunks

#: Bumped when the group layout changes, so groups of an older layout are rewritten.
STORE_FORMAT = 2
COMPLETE_ATTR = "forestnet_complete"
#: Arrays whose DN 0 is Collection 2 fill, decoded to NaN.
FILL_ZERO = ("multispectral", "pan")


@dataclass(frozen=True)
class GroupState:
    """What the store says about one scene's group."""

    exists: bool
    complete: bool = False  # marker set and the layout is current
    source: str = ""  # the origin it was ingested from
    shapes: dict | None = None  # array name -> shape
    all_chunks: bool = False  # every chunk of every array is on disk


def ensure_root(store: Path) -> None:
    """Create the store's root group once; workers starting together may race here."""
    if (Path(store) / "zarr.json").exists():
        return
    # Another worker may create it between our check and our write: that is fine.
    with contextlib.suppress(ContainsGroupError):
        zarr.open_group(str(store), mode="a", zarr_format=3)


def group_state(store: Path, scene_id: str) -> GroupState:
    """Read a scene group's marker, source, shapes and chunk completeness (no pixels)."""
    path = Path(store) / scene_id
    if not (path / "zarr.json").exists():
        return GroupState(exists=path.exists())
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        attrs = group.attrs
        complete = bool(attrs.get(COMPLETE_ATTR, False)) and (
            attrs.get("forestnet_format") == STORE_FORMAT
        )
        arrays = dict(group.arrays())
        shapes = {name: tuple(a.shape) for name, a in arrays.items()}
        all_chunks = bool(arrays) and all(
            a.nchunks_initialized == a.nchunks for a in arrays.values()
        )
        return GroupState(True, complete, str(attrs.get("forestnet_source", "")), shapes,
                          all_chunks)
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return GroupState(exists=True)


def is_whole(state: GroupState, expected: dict[str, tuple[int, ...]]) -> bool:
    """True when a group is complete and matches the source's sizes chunk for chunk."""
    if not (state.complete and state.all_chunks and state.shapes):
        return False
    return all(state.shapes.get(name) == shape for name, shape in expected.items())


def clear_killed_temporaries(store: Path, scene_id: str, min_age_s: float = 6 * 3600) -> int:
    """Remove this scene's temporary groups left by killed runs; return how many went.

    A temporary's name carries its writer's pid: one whose writer is gone on this host is
    removed at once; others only once untouched for ``min_age_s`` (a writer elsewhere).
    """
    store = Path(store)
    if not store.is_dir():
        return 0
    removed = 0
    for path in store.glob(f".{scene_id}.tmp-*"):
        pid = _writer_pid(path.name)
        if pid == os.getpid():
            continue
        stale = time.time() - path.lstat().st_mtime > min_age_s
        if stale or (pid is not None and not _alive(pid)):
            _remove(path)
            removed += 1
    return removed


def _writer_pid(name: str) -> int | None:
    try:
        return int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def write_scene(ds: xr.Dataset, store: Path, scene_id: str, origin: str) -> float:
    """Write one scene group atomically; return its clear fraction (computed in the same pass).

    The QA chunks read for the write also feed the clear-pixel counts, so the per-scene
    clear fraction costs no second read of the source.
    """
    ensure_root(store)
    with atomic_output(Path(store) / scene_id) as tmp:
        qa = ds["qa_pixel"].data
        valid = qa.map_blocks(lambda b: ~qa_flag(b, "fill"), dtype=bool)
        clear = qa.map_blocks(usable_mask, dtype=bool) & valid
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            write = ds.to_zarr(
                str(tmp), mode="w", zarr_format=3, consolidated=False, compute=False,
                encoding=encoding(ds), write_empty_chunks=True,
            )
            threads = scene_threads()
            _, n_valid, n_clear = dask.compute(
                write, valid.sum(), clear.sum(),
                scheduler="threads" if threads > 1 else "sync", num_workers=threads,
            )
        fraction = float(n_clear / n_valid) if n_valid else 0.0
        group = zarr.open_group(str(tmp), mode="a", zarr_format=3)
        for name in FILL_ZERO:
            if name in group:
                group[name].attrs["_FillValue"] = 0
        group.attrs.update({
            "clear_fraction": fraction,
            "forestnet_source": origin,
            "forestnet_format": STORE_FORMAT,
            COMPLETE_ATTR: True,  # last: a group with the marker has everything before it
        })
    return fraction


def scene_threads() -> int:
    """Threads for one scene's read-and-write.

    In a Dask worker, the worker's own thread count: scenes already run in parallel, one
    per worker thread, and Zarr encodes on its own thread pool besides, so more threads
    per scene would only contend. Elsewhere (a plain call), every CPU.
    """
    try:
        from distributed import get_worker

        return max(1, int(getattr(get_worker(), "nthreads", 1)))
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def encoding(ds: xr.Dataset) -> dict:
    """CF encoding: integer DN on disk, decoded to reflectance; chunks aligned to writes.

    The arrays already hold DN, so scale_factor/add_offset go into the attributes (written
    as they are, applied by readers). In ``encoding`` xarray would instead treat the DN as
    reflectance and store (DN - offset) / scale, wrapped to uint16. ``_FillValue`` (DN 0,
    Collection 2 fill) is set after the write (``write_scene``): given here, xarray would
    run a no-op fillna over every integer pixel, two passes over the scene's memory.
    """
    cy, cx = store_chunks(ds["qa_pixel"].shape)
    codecs = {"compressors": _compressors()}
    enc: dict[str, dict] = {
        "qa_pixel": {"chunks": (cy, cx), **codecs},
        "multispectral": {"chunks": (1, cy, cx), "dtype": "uint16", **codecs},
    }
    if "pan" in ds:
        enc["pan"] = {"chunks": (cy * 2, cx * 2), "dtype": "uint16", **codecs}
    for name in enc:
        ds[name].attrs.update(ds[name].attrs.pop("_cf", {}))
    return enc


def _compressors() -> tuple:
    from zarr.codecs import ZstdCodec

    return (ZstdCodec(level=1),)


def read_qa_window(store: Path, scene_id: str, rows: slice, cols: slice) -> np.ndarray:
    """Raw QA_PIXEL values of one window; only the chunks it touches are read."""
    array = zarr.open_array(str(Path(store) / scene_id / "qa_pixel"), mode="r", zarr_format=3)
    return np.asarray(array[rows, cols], dtype=np.uint16)
