"""Every input format ingests to the same scene: folders, tars, STAC Items, MTL txt/json/xml.

Also: the index row (with the per-scene clear fraction), the per-window clear fraction,
and pan-sharpening of real Level-1 data on the 15 m grid.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox
from shapely.geometry import box

import pipeline.ingest.scene_reader
from pipeline.imagery.pansharpen import sfim
from pipeline.ingest.catalog import INDEX_COLUMNS, window_clear_fraction
from pipeline.ingest.landsat import clear_fraction
from pipeline.ingest.mtl import read_mtl
from pipeline.ingest.scene_grids import scene_geobox
from pipeline.ingest.scene_ingest import READ_COUNTS, ingest_row, ingest_scene, ingest_source
from pipeline.ingest.sources import resolve_sources
from tests.ingest_inputs import (
    L1_DIR,
    L1_ID,
    L2_DIR,
    L2_ID,
    assert_same_scene,
    copy_product,
    make_tar,
    products,
    write_item,
    write_mtl_json,
    write_mtl_xml,
)


@pytest.fixture(scope="module")
def reference(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plain-folder ingest every other format must equal."""
    store = tmp_path_factory.mktemp("reference") / "scenes.zarr"
    for folder in [products(tiny_world)[0], L1_DIR, L2_DIR]:
        assert ingest_scene(folder, store).status == "ingested"
    return store


def _ingest_only(source_path: Path, store: Path) -> str:
    (source,) = resolve_sources([source_path])
    result = ingest_source(source, store)
    assert result.status == "ingested", result
    return result.scene_id


# --- MTL flavours -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["sample", "real-l1", "real-l2"])
def test_mtl_txt_json_xml_give_equal_metadata(which: str, tiny_world: Path, tmp_path: Path) -> None:
    folder = {"sample": products(tiny_world)[0], "real-l1": L1_DIR, "real-l2": L2_DIR}[which]
    txt = next(folder.glob("*_MTL.txt"))
    stem = txt.name.removesuffix("_MTL.txt")
    from_txt = read_mtl(txt)
    from_json = read_mtl(write_mtl_json(txt, tmp_path / f"{stem}_MTL.json"))
    from_xml = read_mtl(write_mtl_xml(txt, tmp_path / f"{stem}_MTL.xml"))
    assert from_json == from_txt
    assert from_xml == from_txt
    # The comparison covers what the ingest relies on (not vacuous):
    assert from_txt.rescaling and from_txt.band_files and from_txt.corner_ul_xy
    assert dataclasses.asdict(from_json) == dataclasses.asdict(from_txt)


def test_xml_with_a_namespace(tmp_path: Path) -> None:
    xml = write_mtl_xml(L2_DIR / f"{L2_ID}_MTL.txt", tmp_path / f"{L2_ID}_MTL.xml")
    text = xml.read_text().replace("<LANDSAT_METADATA_FILE>",
                                   '<LANDSAT_METADATA_FILE xmlns="https://landsat.usgs.gov/x">')
    xml.write_text(text)
    assert read_mtl(xml) == read_mtl(L2_DIR / f"{L2_ID}_MTL.txt")


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_folder_with_only_json_or_xml_mtl(
    fmt: str, tiny_world: Path, reference: Path, tmp_path: Path
) -> None:
    folder = copy_product(products(tiny_world)[0], tmp_path)
    txt = folder / f"{folder.name}_MTL.txt"
    writer = write_mtl_json if fmt == "json" else write_mtl_xml
    writer(txt, folder / f"{folder.name}_MTL.{fmt}")
    txt.unlink()
    store = tmp_path / "scenes.zarr"
    assert _ingest_only(folder, store) == folder.name
    assert_same_scene(reference, store, folder.name)


# --- Tars and STAC Items ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["sample", "real-l2"])
def test_tar_ingests_like_the_folder(
    which: str, tiny_world: Path, reference: Path, tmp_path: Path
) -> None:
    folder = products(tiny_world)[0] if which == "sample" else L2_DIR
    scene_id = folder.name if which == "sample" else L2_ID
    tar = make_tar(folder, tmp_path / f"{scene_id}.tar")
    store = tmp_path / "scenes.zarr"
    assert _ingest_only(tar, store) == scene_id
    assert_same_scene(reference, store, scene_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([tar.name, "scenes.zarr"])


@pytest.mark.parametrize("layout", ["earth-search", "usgs"])
def test_stac_item_ingests_like_the_folder(
    layout: str, tiny_world: Path, reference: Path, tmp_path: Path
) -> None:
    folder = products(tiny_world)[0]
    item = write_item(folder, tmp_path / "catalog" / "items" / f"{folder.name}.json", layout)
    store = tmp_path / "scenes.zarr"
    assert _ingest_only(item, store) == folder.name
    assert_same_scene(reference, store, folder.name)


def test_stac_item_of_real_level2(reference: Path, tmp_path: Path) -> None:
    item = write_item(L2_DIR, tmp_path / "item.json", "usgs")
    store = tmp_path / "scenes.zarr"
    assert _ingest_only(item, store) == L2_ID
    assert_same_scene(reference, store, L2_ID)


# --- Index row and clear fractions ------------------------------------------------------------


def _raw_qa(store: Path, scene_id: str) -> np.ndarray:
    return zarr.open_array(str(store / scene_id / "qa_pixel"), mode="r")[:]


def test_index_row_has_every_column_and_the_clear_fraction(
    tiny_world: Path, tmp_path: Path
) -> None:
    folder = products(tiny_world)[1]
    (source,) = resolve_sources([folder])
    row = ingest_row(source, str(tmp_path / "scenes.zarr"))
    assert set(INDEX_COLUMNS) | {"footprint", *READ_COUNTS} == set(row)
    assert (row["bytes_read"], row["bytes_full"]) == (0, 0)  # local files: nothing remote
    assert row["status"] == "ingested" and row["error"] == "" and row["source"] == str(folder)
    assert (row["product"], row["level"], row["epsg"]) == ("LC08", "L1TP", 32649)
    qa = _raw_qa(tmp_path / "scenes.zarr", folder.name)
    assert row["clear_fraction"] == pytest.approx(clear_fraction(qa), abs=1e-12)
    assert 0.0 < row["clear_fraction"] < 1.0
    # A rerun reads the same row back from the store.
    again = ingest_row(source, str(tmp_path / "scenes.zarr"))
    assert again["status"] == "skipped"
    assert again["clear_fraction"] == row["clear_fraction"]
    assert again["footprint"].equals_exact(row["footprint"], 1e-9)


def test_window_clear_fraction_reads_only_the_window(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline.ingest.scene_reader, "CHUNK", 64)  # a 5 x 5 chunk grid
    folder = products(tiny_world)[2]
    store = tmp_path / "scenes.zarr"
    assert ingest_scene(folder, store).status == "ingested"
    ds = xr.open_zarr(store, group=folder.name, consolidated=False)
    grid = scene_geobox(store, folder.name)
    qa = _raw_qa(store, folder.name)
    assert ds["qa_pixel"].encoding["chunks"] == (64, 64)

    # A window of whole pixels, rows 70-129 and columns 10-99: lon/lat polygon and GeoBox.
    window = grid[70:130, 10:100]
    expected = clear_fraction(qa[70:130, 10:100])
    polygon = window.extent.to_crs("EPSG:4326").geom.buffer(-1e-6)  # centres stay inside
    # Spoil every chunk the window does not touch: reading one would fail. Each row of
    # chunks is one shard file; a chunk inside one is overwritten where its index says.
    shards = sorted((store / folder.name / "qa_pixel" / "c").glob("*/0"))
    assert len(shards) == math.ceil(qa.shape[0] / 64)
    spoiled = 0
    for path in shards:
        raw = bytearray(path.read_bytes())
        ranges = shard_chunk_ranges(raw, math.ceil(qa.shape[1] / 64))
        for j, (start, length) in enumerate(ranges):
            if not (1 <= int(path.parent.name) <= 2 and 0 <= j <= 1):
                raw[start:start + length] = b"\xff" * length
                spoiled += 1
        path.write_bytes(bytes(raw))
    assert spoiled == math.ceil(qa.shape[0] / 64) * math.ceil(qa.shape[1] / 64) - 4
    assert window_clear_fraction(store, folder.name, polygon) == pytest.approx(expected)
    assert window_clear_fraction(store, folder.name, window) == pytest.approx(expected)
    assert 0.0 < expected < 1.0

    far = box(100.0, 5.0, 100.1, 5.1)  # Sumatra: outside the scene
    assert window_clear_fraction(store, folder.name, far) == 0.0
    other = GeoBox.from_bbox(far.bounds, "EPSG:4326", resolution=0.001)
    assert window_clear_fraction(store, folder.name, other) == 0.0


def shard_chunk_ranges(shard: bytes, n_chunks: int) -> list[tuple[int, int]]:
    """(offset, length) of each chunk in a shard, from the index at its end."""
    index = np.frombuffer(bytes(shard[-(16 * n_chunks + 4):-4]), dtype="<u8")
    return [(int(o), int(n)) for o, n in index.reshape(n_chunks, 2)]


# --- Pan-sharpening on real data (L2 SR + L1 pan) ------------------------------------------


def test_real_level2_red_sharpened_by_its_level1_pan_keeps_surface_reflectance(
        reference: Path) -> None:
    """USGS's L2SP and L1TP of one acquisition: the L1 pan lends its detail to the SR."""
    sr = xr.open_zarr(reference, group=L2_ID, consolidated=False)["multispectral"]
    pan = xr.open_zarr(reference, group=L1_ID, consolidated=False)["pan"]
    red = sr.sel(band="red").values
    h, w = min(red.shape[0], pan.shape[0] // 2), min(red.shape[1], pan.shape[1] // 2)
    red, fine = red[:h, :w], pan.values[:2 * h, :2 * w]
    sharp = sfim(red[None], fine)[0]
    cells = sharp.reshape(h, 2, w, 2).mean(axis=(1, 3))
    valid = np.isfinite(cells) & np.isfinite(red) & (red > 0.01)
    # Each 30 m cell's mean is the surface reflectance (within 1%), not the TOA of the pan.
    np.testing.assert_allclose(cells[valid], red[valid], rtol=0.01)
    # And it carries the pan's detail: closer to the pan than the blocky upsampled red.
    blocky = np.repeat(np.repeat(red, 2, axis=0), 2, axis=1)
    ok = np.isfinite(sharp) & np.isfinite(fine) & np.isfinite(blocky)
    assert np.corrcoef(sharp[ok], fine[ok])[0, 1] > np.corrcoef(blocky[ok], fine[ok])[0, 1]
    assert float(np.nanmedian(red)) < float(np.nanmedian(fine))  # SR is darker than TOA


def test_reference_store_has_no_temporaries(reference: Path) -> None:
    assert not [p for p in reference.iterdir() if ".tmp-" in p.name]
    shutil.rmtree(reference / "does-not-exist", ignore_errors=True)
