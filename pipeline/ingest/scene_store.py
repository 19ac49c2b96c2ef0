"""The scene store's write side: atomic scene groups, their completeness check, leftovers.

A scene group is written under a temporary name and renamed into place after its last
chunk and its completion marker, so a killed run leaves either nothing or a temporary
that the next run removes. Whether a group is whole is decided from the store itself:
the marker, the source it came from, the array shapes, and every chunk being present.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
import zarr
from odc.geo.xr import xr_coords
from zarr.errors import ContainsGroupError

from pipeline.core.atomic import atomic_output, clean_stale_temporaries
from pipeline.ingest.landsat import qa_flag, usable_mask
from pipeline.ingest.scene_grids import GEOTRANSFORM, geotransform_attr
from pipeline.ingest.scene_parts import Part
from pipeline.ingest.scene_reader import (
    QA_ALL_CLEAR,
    READ_OPTIONS,
    SceneLayout,
    read_strips,
    store_chunks,
)
from pipeline.ingest.zarr_shards import row_shards, strip_writer

#: The layout this code writes. 3: each full-width row of chunks is one shard file.
STORE_FORMAT = 3
#: Layouts read as they are (2: one file per chunk); a group of any other is rewritten.
READABLE_FORMATS = (2, STORE_FORMAT)
COMPLETE_ATTR = "forestnet_complete"


@dataclass(frozen=True)
class GroupState:
    """What the store says about one scene's group."""

    exists: bool
    complete: bool = False  # marker set and the layout is current
    source: str = ""  # the origin it was ingested from
    shapes: dict | None = None  # array name -> shape
    all_chunks: bool = False  # every chunk of every array is on disk
    part: tuple[int, int, int, int] | None = None  # the part of the product held (None: all)


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
            attrs.get("forestnet_format") in READABLE_FORMATS
        )
        arrays = dict(group.arrays())
        shapes = {name: tuple(a.shape) for name, a in arrays.items()}
        all_chunks = bool(arrays) and all(
            a.nchunks_initialized == a.nchunks for a in arrays.values()
        )
        part = attrs.get("part")
        return GroupState(True, complete, str(attrs.get("forestnet_source", "")), shapes,
                          all_chunks, tuple(part) if part else None)
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return GroupState(exists=True)


def scene_attrs_of(store: Path, scene_id: str) -> dict:
    """A scene group's attributes (no arrays opened)."""
    return dict(zarr.open_group(str(Path(store) / scene_id), mode="r", zarr_format=3).attrs)


def is_whole(state: GroupState, expected: dict[str, tuple[int, ...]]) -> bool:
    """True when a group is complete and matches the source's sizes chunk for chunk."""
    if not (state.complete and state.all_chunks and state.shapes):
        return False
    return all(state.shapes.get(name) == shape for name, shape in expected.items())


def clear_killed_temporaries(store: Path, scene_id: str, min_age_s: float = 6 * 3600) -> int:
    """Remove this scene's temporary groups left by killed runs; return how many went.

    A temporary's name carries its writer's pid and host: one whose writer is gone on
    this host is removed at once; others only once untouched for ``min_age_s``.
    """
    return clean_stale_temporaries(Path(store), min_age_s, pattern=f".{scene_id}.tmp-*")


def write_scene(layout: SceneLayout, store: Path, scene_id: str, origin: str,
                earlier: Part | None = None) -> float:
    """Write one scene group atomically; return its clear fraction (counted while writing).

    The arrays are created with zarr's API (metadata only), then each band file is copied
    into them strip by strip: a strip is one row of store chunks, so writes are
    chunk-aligned and no two writers touch one chunk. The QA strips also feed the
    clear-pixel counts, so the clear fraction costs no second read. ``earlier`` is the
    part the group holds now, inside ``layout.part``: its pixels are copied from the
    group, not read from the band files again.
    """
    ensure_root(store)
    previous = _open_arrays(Path(store) / scene_id, layout) if earlier else None
    with atomic_output(Path(store) / scene_id) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes=layout.attrs)
        arrays = create_arrays(group, layout)
        n_valid, n_clear = write_pixels(arrays, layout, previous and (earlier, previous))
        fraction = float(n_clear / n_valid) if n_valid else 0.0
        group.attrs.update({
            "clear_fraction": fraction,
            "forestnet_source": origin,
            "forestnet_format": STORE_FORMAT,
            COMPLETE_ATTR: True,  # last: a group with the marker has everything before it
        })
    return fraction


def _open_arrays(group: Path, layout: SceneLayout) -> dict[str, zarr.Array]:
    return {name: zarr.open_array(str(group / name), mode="r", zarr_format=3)
            for name in layout.sources}


def create_arrays(group: zarr.Group, layout: SceneLayout) -> dict[str, zarr.Array]:
    """The group's arrays and coordinates, laid out as ``xr.open_zarr`` decodes them;
    returns the (still empty) pixel arrays by name.

    Pixel arrays are uint16 DN with CF attributes; ``y``/``x`` (and ``y_pan``/``x_pan``)
    hold pixel-centre coordinates, ``spatial_ref`` the CRS and transform (CF grid mapping).
    """
    cy, cx = store_chunks(tuple(layout.geobox.shape))
    coords = xr_coords(layout.geobox, crs_coord_name="spatial_ref")
    for dim in ("y", "x"):
        _write_coord(group, dim, coords[dim].values, coords[dim].attrs)
    # Its one value equals the fill value: written all the same, so the chunk exists.
    ref = group.create_array("spatial_ref", shape=(), dtype="int32",
                             attributes=dict(coords["spatial_ref"].attrs),
                             config={"write_empty_chunks": True})
    ref[...] = 0
    # Variable-length strings ("string" in zarr v3), as xarray writes a band coordinate.
    band = group.create_array("band", shape=(len(layout.bands),), dtype=str,
                              dimension_names=("band",))
    band[...] = np.array(layout.bands, dtype=object)
    pixel_attrs = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}
    specs = {"multispectral": ((1, cy, cx), ("band", "y", "x")), "qa_pixel": ((cy, cx), ("y", "x"))}
    pan_attrs = {}
    if layout.pan_box is not None:
        pan = xr_coords(layout.pan_box, crs_coord_name="spatial_ref")
        _write_coord(group, "y_pan", pan["y"].values, {})
        _write_coord(group, "x_pan", pan["x"].values, {})
        specs["pan"] = ((cy * 2, cx * 2), ("y_pan", "x_pan"))
        pan_attrs = {GEOTRANSFORM: geotransform_attr(layout.pan_box.affine)}
    # Kept, not looked up again: each group lookup re-reads the array's metadata.
    arrays = {}
    for name, (chunks, dims) in specs.items():
        shape = layout.shape(name)
        arrays[name] = group.create_array(
            name, shape=shape, dtype="uint16", chunks=chunks, shards=row_shards(shape, chunks),
            fill_value=0, compressors=_compressors(), dimension_names=dims,
            attributes={**layout.array_attrs.get(name, {}), **pixel_attrs,
                        **(pan_attrs if name == "pan" else {})},
            # Every chunk is written, so none needs checking for "all fill" first.
            config={"write_empty_chunks": True},
        )
    return arrays


def _write_coord(group: zarr.Group, name: str, values: np.ndarray, attrs: dict) -> None:
    array = group.create_array(name, shape=values.shape, dtype=values.dtype,
                               dimension_names=(name,), attributes=dict(attrs))
    array[...] = values


@dataclass(frozen=True)
class _Piece:
    """Rows ``start:stop`` of one band file, copied into its array strip by strip."""

    name: str  # the array
    band: int | None  # the band of a 3-D array
    path: str | None  # None: the all-clear QA of a product without one
    start: int
    stop: int
    strip_rows: int  # one row of the array's chunks

    @property
    def size(self) -> int:
        return (self.stop - self.start) * (2 if self.name == "pan" else 1)


def write_pixels(arrays: dict[str, zarr.Array], layout: SceneLayout,
                 earlier: tuple[Part, dict[str, zarr.Array]] | None = None) -> tuple[int, int]:
    """Copy every band file (the layout's part of it) into its array; return the (valid,
    clear) QA pixel counts. ``earlier``: a part already stored, and its arrays.

    The work runs on ``scene_threads()`` threads: GDAL's decoding, Blosc's encoding and
    file writes all release the GIL, so one thread decodes while another encodes. With
    more than one thread each band is cut into as many row pieces as there are threads,
    biggest first: the pan band alone is a third of a Level-1 scene's pixels, and whole
    bands as jobs left one thread working alone on it at the end.
    """
    threads = scene_threads()
    pieces = _pieces(layout, threads)
    counts = _run(lambda piece: _copy_piece(arrays[piece.name], piece, layout, earlier),
                  pieces, threads)
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _pieces(layout: SceneLayout, per_band: int) -> list[_Piece]:
    """Every band file cut into up to ``per_band`` pieces of whole chunk rows."""
    rows = store_chunks(tuple(layout.geobox.shape))[0]
    pieces = []
    for name, paths in layout.sources.items():
        strip = rows * 2 if name == "pan" else rows
        height = layout.shape(name)[-2]
        strips = -(-height // strip)
        step = -(-strips // max(1, per_band)) * strip
        for i, path in enumerate(paths):
            band = i if name == "multispectral" else None
            pieces += [_Piece(name, band, path, top, min(height, top + step), strip)
                       for top in range(0, height, step)]
    return sorted(pieces, key=lambda p: -p.size)


def _run(work, jobs: list, threads: int) -> list:
    if min(threads, len(jobs)) <= 1:
        return [work(job) for job in jobs]
    return list(_pool(threads).map(work, jobs))


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool per thread count, kept for the process. New threads for every scene each
    got a glibc arena of their own, and with the raised trim threshold
    (``tune_malloc_for_tensors``) every arena kept its peak: a process's memory grew
    with the number of scenes it had ingested (bench/bench_ingest.py)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="scene-write")


def _copy_piece(array: zarr.Array, piece: _Piece, layout: SceneLayout,
                earlier: tuple[Part, dict[str, zarr.Array]] | None) -> tuple[int, int]:
    """Write one piece of a band file into ``array``; QA counts for the QA array.

    Each strip is one row of chunks, encoded and written directly (``strip_writer``).
    """
    n_valid = n_clear = 0
    count_qa = piece.name == "qa_pixel"
    with rasterio.Env(**READ_OPTIONS):  # GDAL settings are per thread
        strips = (_part_strips(piece, layout, earlier) if piece.path
                  else _all_clear(array.shape, piece))
        write = strip_writer(array, piece.band)
        for top, data in strips:
            write(top, data)
            if count_qa:
                valid = ~qa_flag(data, "fill")
                n_valid += int(np.count_nonzero(valid))
                n_clear += int(np.count_nonzero(usable_mask(data) & valid))
    return n_valid, n_clear


def _part_strips(piece: _Piece, layout: SceneLayout,
                 earlier: tuple[Part, dict[str, zarr.Array]] | None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """The piece's strips in the array's rows: read from the band file, except the
    columns an earlier part already holds, which are copied from its array."""
    row0, col0 = layout.offset(piece.name)
    width = layout.shape(piece.name)[-1]
    if earlier is None:  # one open file for the whole piece
        for top, data in read_strips(piece.path, piece.strip_rows, row0 + piece.start,
                                     row0 + piece.stop, (col0, col0 + width)):
            yield top - row0, data
        return
    scale = 2 if piece.name == "pan" else 1
    part, arrays = earlier
    old_rows = (part[0] * scale, part[0] * scale + arrays[piece.name].shape[-2])
    old_cols = (part[1] * scale, part[1] * scale + arrays[piece.name].shape[-1])
    for top in range(piece.start, piece.stop, piece.strip_rows):
        rows = (row0 + top, row0 + min(piece.stop, top + piece.strip_rows))
        if not (old_rows[0] <= rows[0] and rows[1] <= old_rows[1]):
            yield top, _file_strip(piece.path, rows, (col0, col0 + width))
            continue
        segments = []
        if old_cols[0] > col0:
            segments.append(_file_strip(piece.path, rows, (col0, old_cols[0])))
        old = arrays[piece.name]
        window = (slice(rows[0] - old_rows[0], rows[1] - old_rows[0]), slice(None))
        segments.append(np.asarray(old[(piece.band, *window)] if old.ndim == 3 else old[window]))
        if old_cols[1] < col0 + width:
            segments.append(_file_strip(piece.path, rows, (old_cols[1], col0 + width)))
        yield top, np.concatenate(segments, axis=1)


def _file_strip(path: str, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    ((_, data),) = read_strips(path, rows[1] - rows[0], rows[0], rows[1], cols)
    return data


def _all_clear(shape: tuple[int, ...], piece: _Piece) -> Iterator[tuple[int, np.ndarray]]:
    """Strips of the QA written for a product without a QA band: every pixel clear."""
    for top in range(piece.start, piece.stop, piece.strip_rows):
        rows = min(piece.strip_rows, piece.stop - top)
        yield top, np.full((rows, shape[1]), QA_ALL_CLEAR, np.uint16)


def scene_threads() -> int:
    """Threads for one scene's read-and-write.

    In a Dask worker, the worker's own thread count: it is what the cluster gives the
    worker, and scenes already run in parallel, one per worker thread. Two threads per
    scene in one-thread workers did finish a short run's last scene sooner, but cost 9%
    of throughput while every worker was busy (bench/bench_ingest.py, 2 CPUs), which is
    most of a province's run. Elsewhere (a plain call), every CPU.
    """
    try:
        from distributed import get_worker

        return max(1, int(getattr(get_worker(), "nthreads", 1)))
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def _compressors() -> tuple:
    """Blosc LZ4 with bit-shuffle: on one scene's bands (bench/bench_ingest.py data) it
    encoded 2.5x and decoded 3x faster than zstd level 1, and compressed a real Landsat
    crop to 63% against zstd's 70% (bit-shuffle groups the slowly varying high bits)."""
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),)


def read_qa_window(store: Path, scene_id: str, rows: slice, cols: slice) -> np.ndarray:
    """Raw QA_PIXEL values of one window; only the chunks it touches are read."""
    array = zarr.open_array(str(Path(store) / scene_id / "qa_pixel"), mode="r", zarr_format=3)
    return np.asarray(array[rows, cols], dtype=np.uint16)
