"""The scene group's write layout: row shards on disk, and the same pixels however many
threads copy them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

import pipeline.ingest.scene_reader
from pipeline.ingest import scene_store
from pipeline.ingest.landsat import SceneMetadata
from pipeline.ingest.scene_ingest import ingest_scene
from pipeline.ingest.scene_reader import plan_product, present_bands
from pipeline.ingest.sources import band_locations, folder_source, read_source_metadata
from tests.ingest_inputs import assert_same_scene, products


def _layout(product: Path):
    source = folder_source(product)
    meta: SceneMetadata = read_source_metadata(source)
    with rasterio.Env():
        return plan_product(present_bands(*band_locations(source, meta)), meta)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_pieces_cover_every_row_of_every_band_once(
    tiny_world: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    monkeypatch.setattr(pipeline.ingest.scene_reader, "CHUNK", 64)
    layout = _layout(products(tiny_world)[0])  # Level-1: pan at twice the rows
    pieces = scene_store._pieces(layout, threads)
    for name, paths in layout.sources.items():
        height = layout.shape(name)[-2]
        for band in range(len(paths)):
            mine = sorted((p.start, p.stop) for p in pieces
                          if p.name == name and (p.band or 0) == band)
            assert mine[0][0] == 0 and mine[-1][1] == height
            assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))
            assert len(mine) <= threads
            strip = 128 if name == "pan" else 64
            assert all(start % strip == 0 for start, _ in mine)
    assert [p.size for p in pieces] == sorted((p.size for p in pieces), reverse=True)
    assert pieces[0].name == "pan"


def test_each_row_of_chunks_is_one_shard_file(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline.ingest.scene_reader, "CHUNK", 64)
    product = products(tiny_world)[0]
    store = tmp_path / "scenes.zarr"
    assert ingest_scene(product, store).status == "ingested"
    group = zarr.open_group(str(store / product.name), mode="r")
    for name in ("multispectral", "qa_pixel", "pan"):
        array = group[name]
        rows = math.ceil(array.shape[-2] / array.chunks[-2])
        bands = array.shape[0] if array.ndim == 3 else 1
        files = [p for p in (store / product.name / name / "c").rglob("*") if p.is_file()]
        assert len(files) == bands * rows, name
        assert array.nchunks_initialized == array.nchunks > len(files)


def test_one_thread_and_many_write_the_same_scene(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline.ingest.scene_reader, "CHUNK", 64)
    product = products(tiny_world)[0]
    stores = {}
    for threads in (1, 3):
        monkeypatch.setattr(scene_store, "scene_threads", lambda n=threads: n)
        stores[threads] = tmp_path / f"t{threads}.zarr"
        assert ingest_scene(product, stores[threads]).status == "ingested"
    assert_same_scene(stores[1], stores[3], product.name)
    pan = zarr.open_array(str(stores[3] / product.name / "pan"), mode="r")[...]
    assert np.count_nonzero(pan) > 0.9 * pan.size
