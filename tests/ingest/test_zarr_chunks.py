"""Direct chunk writes give exactly the chunk files zarr writes, and read back the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.ingest.zarr_shards import _DirectWriter, row_shards, strip_writer

BLOSC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")


def make_array(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...],
               compressors=(BLOSC,), shards: tuple[int, ...] | None = None) -> zarr.Array:
    return zarr.create_array(str(path), shape=shape, dtype="uint16", chunks=chunks,
                             shards=shards, fill_value=0, compressors=compressors,
                             zarr_format=3, config={"write_empty_chunks": True})


def chunk_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "zarr.json"}


def pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    # Smooth values plus noise, like reflectance DN: compressible but not trivially so.
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(shape[-2]), np.arange(shape[-1])) * 7
    return (ramp + rng.integers(0, 300, shape)).astype(np.uint16)


@pytest.mark.parametrize("sharded", [False, True], ids=["chunk-files", "row-shards"])
@pytest.mark.parametrize("band", [None, 1])
def test_direct_chunks_are_byte_identical_to_zarr(
    tmp_path: Path, band: int | None, sharded: bool
) -> None:
    # 700 x 900 with 256 x 256 chunks: edge chunks in both directions, padded with fill.
    shape = (700, 900) if band is None else (3, 700, 900)
    chunks = (256, 256) if band is None else (1, 256, 256)
    shards = row_shards(shape, chunks) if sharded else None
    data = pixels((700, 900))
    reference = make_array(tmp_path / "zarr", shape, chunks, shards=shards)
    direct = make_array(tmp_path / "direct", shape, chunks, shards=shards)
    write = strip_writer(direct, band)
    assert isinstance(write, _DirectWriter)
    for top in range(0, 700, 256):
        strip = data[top:top + 256]
        write(top, strip)
        if band is None:
            reference[top:top + 256] = strip
        else:
            reference[band, top:top + 256] = strip
    files = chunk_files(tmp_path / "direct")
    assert files == chunk_files(tmp_path / "zarr")
    # One file per chunk, or one per row of chunks (of the band written).
    assert len(files) == (3 if sharded else 3 * 4)
    read_back = zarr.open_array(str(tmp_path / "direct"), mode="r")[...]
    np.testing.assert_array_equal(read_back if band is None else read_back[band], data)


def test_strips_of_two_chunk_rows_are_split_into_chunks(tmp_path: Path) -> None:
    data = pixels((600, 300), seed=1)
    array = make_array(tmp_path / "a", (600, 300), (200, 128))
    write = strip_writer(array)
    write(0, data[:400])
    write(400, data[400:])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[...], data)


def test_misaligned_strip_is_refused_with_the_array_path(tmp_path: Path) -> None:
    array = make_array(tmp_path / "a", (512, 512), (256, 256))
    with pytest.raises(ValueError, match=r"a: strip at row 100 .* not aligned"):
        strip_writer(array)(100, np.zeros((256, 512), np.uint16))


def test_other_codecs_fall_back_to_zarr(tmp_path: Path) -> None:
    data = pixels((300, 300), seed=2)
    array = make_array(tmp_path / "z", (300, 300), (128, 128), compressors=(ZstdCodec(),))
    write = strip_writer(array)
    assert not isinstance(write, _DirectWriter)
    for top in range(0, 300, 128):
        write(top, data[top:top + 128])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "z"), mode="r")[...], data)


def test_row_shards_span_the_padded_width() -> None:
    assert row_shards((700, 900), (256, 256)) == (256, 1024)
    assert row_shards((7, 3200, 3200), (1, 512, 512)) == (1, 512, 3584)
    assert row_shards((512, 512), (512, 512)) == (512, 512)


def test_a_corrupt_shard_index_is_caught_by_its_checksum(tmp_path: Path) -> None:
    data = pixels((300, 300), seed=3)
    array = make_array(tmp_path / "s", (300, 300), (128, 128),
                       shards=row_shards((300, 300), (128, 128)))
    write = strip_writer(array)
    assert isinstance(write, _DirectWriter)
    for top in range(0, 300, 128):
        write(top, data[top:top + 128])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s"), mode="r")[...], data)
    shard = tmp_path / "s" / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # a byte of the index (the last 4 bytes are its CRC32C)
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(str(tmp_path / "s"), mode="r")[128:256]


def test_shards_of_another_shape_fall_back_to_zarr(tmp_path: Path) -> None:
    # Shards of 2 x 2 chunks hold parts of two strips: only zarr can merge them.
    data = pixels((512, 512), seed=4)
    array = make_array(tmp_path / "q", (512, 512), (128, 128), shards=(256, 256))
    write = strip_writer(array)
    assert not isinstance(write, _DirectWriter)
    for top in range(0, 512, 128):
        write(top, data[top:top + 128])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "q"), mode="r")[...], data)
