"""Chunk-aligned strip writes into a local Zarr v3 array, encoded with the array's own codecs.

Ingest copies each band file into its array one row of chunks at a time. Through
``zarr.Array.__setitem__`` each chunk also pays for the async codec pipeline and store
round trips; on a 3,200 px band that doubled the cost of the write (bench/bench_ingest.py).
For the layout ingest writes (a local store, a regular chunk grid, little-endian bytes
then Blosc) this module encodes each chunk with the very Blosc settings in the array's
metadata and writes it under the array's own chunk key, so the bytes are those zarr would
write (``tests/test_zarr_chunks.py`` compares them). Any other layout falls back to
``__setitem__``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

#: ``write(top, strip)``: write rows ``top:top + len(strip)`` of the array (or of one band).
StripWriter = Callable[[int, np.ndarray], None]

_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
            "bitshuffle": numcodecs.Blosc.BITSHUFFLE}


def strip_writer(array: zarr.Array, band: int | None = None) -> StripWriter:
    """A writer of full-width row strips into ``array`` (``array[band]`` when 3-D).

    Strips must start on a chunk row and span whole chunk rows (the last may be short).
    """
    blosc = _direct_blosc(array)
    if blosc is None:
        return _setitem_writer(array, band)
    return _DirectWriter(array, band, blosc)


def _setitem_writer(array: zarr.Array, band: int | None) -> StripWriter:
    def write(top: int, strip: np.ndarray) -> None:
        if band is None:
            array[top:top + strip.shape[0]] = strip
        else:
            array[band, top:top + strip.shape[0]] = strip

    return write


def _direct_blosc(array: zarr.Array) -> numcodecs.Blosc | None:
    """The Blosc encoder equal to the array's codecs, or None when they are anything else."""
    meta = array.metadata
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(array.store_path.store,
                                                                  LocalStore):
        return None
    codecs = tuple(meta.codecs)
    if (len(codecs) != 2 or not isinstance(codecs[0], BytesCodec)
            or not isinstance(codecs[1], BloscCodec) or array.dtype.byteorder == ">"):
        return None
    if getattr(codecs[0].endian, "value", "little") != "little":
        return None
    blosc = codecs[1]
    return numcodecs.Blosc(cname=blosc.cname.value, clevel=blosc.clevel,
                           shuffle=_SHUFFLE[blosc.shuffle.value], blocksize=blosc.blocksize,
                           typesize=blosc.typesize)


class _DirectWriter:
    """Encodes and writes each chunk of a strip as its own chunk file."""

    def __init__(self, array: zarr.Array, band: int | None, blosc: numcodecs.Blosc) -> None:
        self.array, self.band, self.blosc = array, band, blosc
        self.chunks = tuple(array.chunks[-2:])
        self.root = Path(array.store_path.store.root) / array.store_path.path
        self.fill = array.metadata.fill_value

    def __call__(self, top: int, strip: np.ndarray) -> None:
        rows, cols = self.chunks
        height, width = self.array.shape[-2:]
        if top % rows or strip.shape[1] != width or (
                top + strip.shape[0] != height and strip.shape[0] % rows):
            raise ValueError(f"{self.root}: strip at row {top} of shape {strip.shape} is not "
                             f"aligned to the {self.chunks} chunks")
        strip = strip.astype(self.array.dtype, copy=False)
        for r0 in range(0, strip.shape[0], rows):
            for c0 in range(0, width, cols):
                self._write_chunk((top + r0) // rows, c0 // cols,
                                  strip[r0:r0 + rows, c0:c0 + cols])

    def _write_chunk(self, i: int, j: int, block: np.ndarray) -> None:
        rows, cols = self.chunks
        if block.shape != (rows, cols):  # edge chunks are stored whole, padded with fill
            padded = np.full((rows, cols), self.fill, dtype=block.dtype)
            padded[:block.shape[0], :block.shape[1]] = block
            block = padded
        # zarr hands Blosc the chunk's little-endian bytes as a uint8 array: do the same.
        raw = np.ascontiguousarray(block).astype("<" + block.dtype.str[1:], copy=False)
        encoded = self.blosc.encode(raw.view(np.uint8).reshape(-1))
        coords = (i, j) if self.band is None else (self.band, i, j)
        path = self.root / self.array.metadata.encode_chunk_key(coords)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded)
