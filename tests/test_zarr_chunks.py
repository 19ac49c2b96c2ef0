"""Direct chunk writes give exactly the chunk files zarr writes, and read back the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.zarr_chunks import _DirectWriter, strip_writer

BLOSC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")


def make_array(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...],
               compressors=(BLOSC,)) -> zarr.Array:
    return zarr.create_array(str(path), shape=shape, dtype="uint16", chunks=chunks,
                             fill_value=0, compressors=compressors, zarr_format=3,
                             config={"write_empty_chunks": True})


def chunk_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "zarr.json"}


def pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    # Smooth values plus noise, like reflectance DN: compressible but not trivially so.
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(shape[-2]), np.arange(shape[-1])) * 7
    return (ramp + rng.integers(0, 300, shape)).astype(np.uint16)


@pytest.mark.parametrize("band", [None, 1])
def test_direct_chunks_are_byte_identical_to_zarr(tmp_path: Path, band: int | None) -> None:
    # 700 x 900 with 256 x 256 chunks: edge chunks in both directions, padded with fill.
    shape = (700, 900) if band is None else (3, 700, 900)
    chunks = (256, 256) if band is None else (1, 256, 256)
    data = pixels((700, 900))
    reference = make_array(tmp_path / "zarr", shape, chunks)
    direct = make_array(tmp_path / "direct", shape, chunks)
    write = strip_writer(direct, band)
    assert isinstance(write, _DirectWriter)
    for top in range(0, 700, 256):
        strip = data[top:top + 256]
        write(top, strip)
        if band is None:
            reference[top:top + 256] = strip
        else:
            reference[band, top:top + 256] = strip
    assert chunk_files(tmp_path / "direct") == chunk_files(tmp_path / "zarr")
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
