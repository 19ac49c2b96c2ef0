"""Windows of stored scenes as raw DN, through a per-process cache of decoded chunks.

Chip building reads, per event and candidate scene, a ~170 px window of each band: far
less than one 512 px chunk. Decoding whole chunks for every event was most of its time,
so decoded chunks are kept (least recently used first out, bounded in bytes): events are
built in batches of neighbours, which share chunks. DN stay integers here; callers apply
the CF scale/offset (``SceneHandle.decode``) to the few pixels they use.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from odc.geo.geobox import GeoBox

from pipeline.core.lru_cache import ByteBoundedLRU
from pipeline.ingest.scene_grids import stored_grids

#: Bytes of decoded chunks kept per process (a 512 x 512 uint16 chunk is 0.5 MiB).
CACHE_BYTES = int(os.environ.get("FORESTNET_CHUNK_CACHE_MB", "256")) * 2**20


@dataclass(frozen=True)
class SceneHandle:
    """One stored scene opened for window reads: its grids, arrays and CF decoding."""

    key: tuple  # (group path, inode, mtime): a rewritten group gets new cache keys
    geobox: GeoBox
    pan_box: GeoBox | None
    bands: tuple[str, ...]
    arrays: dict[str, zarr.Array]
    scaling: dict[str, tuple[float, float]]  # array -> (scale_factor, add_offset)
    acquired: str  # date of acquisition, YYYY-MM-DD

    def decode(self, name: str, dn: np.ndarray) -> np.ndarray:
        """Reflectance (float32) of DN from array ``name``; DN 0 (fill) becomes NaN."""
        scale, offset = self.scaling.get(name, (1.0, 0.0))
        out = dn.astype(np.float32)
        out *= np.float32(scale)
        out += np.float32(offset)
        out[dn == 0] = np.nan
        return out


def open_scene_handle(store: Path, scene_id: str) -> SceneHandle:
    """The scene's handle; reopened only when its group was rewritten since."""
    group = Path(store) / scene_id
    stat = (group / "zarr.json").stat()
    return _open(str(group), stat.st_ino, stat.st_mtime_ns)


# Every candidate scene of a years window is opened to rank it (80-440 of them over real
# Landsat, each with its Level-1 pan partner): a cache of 64 reopened them all, at 11 ms
# each, for every cell.
@lru_cache(maxsize=2048)
def _open(group_path: str, inode: int, mtime: int) -> SceneHandle:
    group = zarr.open_group(group_path, mode="r", zarr_format=3)
    arrays = {n: group[n] for n in ("multispectral", "qa_pixel", "pan") if n in group}
    geobox, pan_box = stored_grids(group)
    scaling = {}
    for name, array in arrays.items():
        attrs = array.attrs
        if "scale_factor" in attrs:
            scaling[name] = (float(attrs["scale_factor"]), float(attrs.get("add_offset", 0.0)))
    bands = tuple(str(b) for b in group["band"][...])
    acquired = str(pd.Timestamp(group.attrs["acquired"]).date())
    return SceneHandle((group_path, inode, mtime), geobox, pan_box, bands, arrays, scaling,
                       acquired)


CACHE = ByteBoundedLRU(CACHE_BYTES)


def read_window(
    scene: SceneHandle, name: str, rows: slice, cols: slice, bands: tuple[int, ...] = (0,)
) -> np.ndarray:
    """Raw DN of ``array[bands, rows, cols]`` (``(band, y, x)``; 2-D arrays take band 0).

    Chunks come from the cache; those missing are read in one zarr call per band (the
    chunk-aligned box around them, decoded by zarr concurrently) and kept.
    """
    array = scene.arrays[name]
    three_d = array.ndim == 3
    cy, cx = array.chunks[-2:]
    h, w = array.shape[-2:]
    iy = range(rows.start // cy, (rows.stop - 1) // cy + 1)
    ix = range(cols.start // cx, (cols.stop - 1) // cx + 1)
    out = np.empty((len(bands), rows.stop - rows.start, cols.stop - cols.start), array.dtype)
    for k, band in enumerate(bands):
        keys = {(i, j): (scene.key, name, band, i, j) for i in iy for j in ix}
        chunks = {ij: CACHE.get(key) for ij, key in keys.items()}
        missing = [ij for ij, chunk in chunks.items() if chunk is None]
        if missing:
            chunks.update(_load(array, band if three_d else None, missing, (cy, cx), (h, w)))
            for ij in missing:
                CACHE.put(keys[ij], chunks[ij])
        for (i, j), chunk in chunks.items():
            # The part of chunk (i, j) inside the window, in window and chunk coordinates.
            r0, r1 = max(rows.start, i * cy), min(rows.stop, (i + 1) * cy)
            c0, c1 = max(cols.start, j * cx), min(cols.stop, (j + 1) * cx)
            out[k, r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start] = chunk[
                r0 - i * cy:r1 - i * cy, c0 - j * cx:c1 - j * cx]
    return out


def _load(
    array: zarr.Array, band: int | None, missing: list[tuple[int, int]],
    chunk: tuple[int, int], shape: tuple[int, int],
) -> dict[tuple[int, int], np.ndarray]:
    """Decode the ``missing`` chunks (of one band) with one read of their bounding box."""
    (cy, cx), (h, w) = chunk, shape
    i0, i1 = min(i for i, _ in missing), max(i for i, _ in missing) + 1
    j0, j1 = min(j for _, j in missing), max(j for _, j in missing) + 1
    box = (slice(i0 * cy, min(i1 * cy, h)), slice(j0 * cx, min(j1 * cx, w)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = array[(band, *box)] if band is not None else array[box]
    # Copies, so a cached chunk does not keep the whole box alive.
    return {(i, j): data[(i - i0) * cy:(i - i0 + 1) * cy, (j - j0) * cx:(j - j0 + 1) * cx].copy()
            for i, j in missing}
