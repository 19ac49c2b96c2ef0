"""Chunk-aligned strip writes into a local Zarr v3 array, encoded with the array's own codecs.

Ingest copies each band file into its array one row of chunks at a time. Through
``zarr.Array.__setitem__`` each chunk also pays for the async codec pipeline and store
round trips; on a 3,200 px band that doubled the cost of the write (bench/bench_ingest.py).
For the layouts ingest writes (a local store, a regular chunk grid, little-endian bytes
then Blosc; optionally sharded with one shard per full-width row of chunks) this module
encodes each chunk with the very Blosc settings in the array's metadata and writes it
under the array's own key, as a chunk file or inside its row's shard with the shard index
zarr expects. The bytes are those zarr would write (``tests/test_zarr_chunks.py``
compares them). Any other layout falls back to ``__setitem__``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    ShardingCodec,
    ShardingCodecIndexLocation,
)
from zarr.storage import LocalStore

#: ``write(top, strip)``: write rows ``top:top + len(strip)`` of the array (or of one band).
StripWriter = Callable[[int, np.ndarray], None]

_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
            "bitshuffle": numcodecs.Blosc.BITSHUFFLE}


def strip_writer(array: zarr.Array, band: int | None = None) -> StripWriter:
    """A writer of full-width row strips into ``array`` (``array[band]`` when 3-D).

    Strips must start on a chunk row and span whole chunk rows (the last may be short).
    """
    plan = _direct_plan(array)
    if plan is None:
        return _setitem_writer(array, band)
    blosc, sharded = plan
    return _DirectWriter(array, band, blosc, sharded)


def row_shards(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Shard shape holding one full-width row of ``chunks`` (one band of a 3-D array).

    A strip of ingest is then one file, not one file per chunk: on a local disk that
    made the writes 2-4x cheaper (creating a file costs more than filling it), and an
    object store is charged per object. Readers still fetch single chunks.
    """
    width = -(-shape[-1] // chunks[-1]) * chunks[-1]
    return (*chunks[:-1], width)


def _setitem_writer(array: zarr.Array, band: int | None) -> StripWriter:
    def write(top: int, strip: np.ndarray) -> None:
        if band is None:
            array[top:top + strip.shape[0]] = strip
        else:
            array[band, top:top + strip.shape[0]] = strip

    return write


def _direct_plan(array: zarr.Array) -> tuple[numcodecs.Blosc, bool] | None:
    """The Blosc encoder equal to the array's codecs and whether chunks go into row
    shards; None when the layout is anything else."""
    meta = array.metadata
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(array.store_path.store,
                                                                  LocalStore):
        return None
    if array.dtype.byteorder == ">":
        return None
    codecs = tuple(meta.codecs)
    sharded = len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)
    if sharded:
        shard = codecs[0]
        index = tuple(shard.index_codecs)
        if (shard.index_location != ShardingCodecIndexLocation.end
                or len(index) != 2 or not _little_bytes(index[0])
                or not isinstance(index[1], Crc32cCodec)
                or tuple(array.shards) != row_shards(array.shape, array.chunks)):
            return None
        codecs = tuple(shard.codecs)
    if len(codecs) != 2 or not _little_bytes(codecs[0]) or not isinstance(codecs[1],
                                                                          BloscCodec):
        return None
    blosc = codecs[1]
    encoder = numcodecs.Blosc(cname=blosc.cname.value, clevel=blosc.clevel,
                              shuffle=_SHUFFLE[blosc.shuffle.value],
                              blocksize=blosc.blocksize, typesize=blosc.typesize)
    return encoder, sharded


def _little_bytes(codec: object) -> bool:
    return isinstance(codec, BytesCodec) and getattr(codec.endian, "value",
                                                     "little") == "little"


class _DirectWriter:
    """Encodes each chunk of a strip and writes it as its own file, or the strip's chunks
    as one row shard (chunks in order, then the CRC32C-checked index of their byte ranges)."""

    def __init__(self, array: zarr.Array, band: int | None, blosc: numcodecs.Blosc,
                 sharded: bool) -> None:
        self.array, self.band, self.blosc, self.sharded = array, band, blosc, sharded
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
            row = (top + r0) // rows
            encoded = [self._encode(strip[r0:r0 + rows, c0:c0 + cols])
                       for c0 in range(0, width, cols)]
            if self.sharded:
                self._write(self._key(row, 0), [*encoded, _shard_index(encoded)])
            else:
                for j, chunk in enumerate(encoded):
                    self._write(self._key(row, j), [chunk])

    def _encode(self, block: np.ndarray) -> bytes:
        rows, cols = self.chunks
        if block.shape != (rows, cols):  # edge chunks are stored whole, padded with fill
            padded = np.full((rows, cols), self.fill, dtype=block.dtype)
            padded[:block.shape[0], :block.shape[1]] = block
            block = padded
        # zarr hands Blosc the chunk's little-endian bytes as a uint8 array: do the same.
        raw = np.ascontiguousarray(block).astype("<" + block.dtype.str[1:], copy=False)
        return self.blosc.encode(raw.view(np.uint8).reshape(-1))

    def _key(self, i: int, j: int) -> Path:
        coords = (i, j) if self.band is None else (self.band, i, j)
        return self.root / self.array.metadata.encode_chunk_key(coords)

    @staticmethod
    def _write(path: Path, parts: list[bytes]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.writelines(parts)


def _shard_index(encoded: list[bytes]) -> bytes:
    """The index of a shard whose chunks are ``encoded``, in order: (offset, length)
    as little-endian uint64 per chunk, then the CRC32C of those bytes (zarr's defaults)."""
    lengths = np.array([len(chunk) for chunk in encoded], dtype="<u8")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("<u8")
    index = np.stack([offsets, lengths], axis=-1).tobytes()
    return index + np.uint32(google_crc32c.value(index)).astype("<u4").tobytes()
