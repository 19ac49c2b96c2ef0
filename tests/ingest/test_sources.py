"""Resolving SOURCEs (folders, tars, STAC Items) into products, and which products we accept."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from pipeline.ingest.landsat import MTLError
from pipeline.ingest.mtl import (
    UnsupportedProductError,
    check_supported,
    find_mtl,
    mtl_format,
    preferred_mtl,
)
from pipeline.ingest.sources import (
    band_locations,
    folder_source,
    read_source_metadata,
    resolve_sources,
    tar_source,
)
from pipeline.ingest.stac_items import gdal_path, is_url, item_sources, resolve_href
from tests.ingest_inputs import (
    L1_DIR,
    L1_ID,
    L2_DIR,
    L2_ID,
    copy_product,
    make_tar,
    products,
    write_item,
)

ALL = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2", "pan", "qa_pixel"]


# --- URLs and hrefs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("location", "expected"), [
    # http(s) stays a URL: remote_files reads it in ranges (retries, re-signing, counts).
    ("https://landsatlook.usgs.gov/data/x/LC08_B4.TIF",
     "https://landsatlook.usgs.gov/data/x/LC08_B4.TIF"),
    ("http://example.org/a/b.TIF", "http://example.org/a/b.TIF"),
    ("s3://usgs-landsat/collection02/level-2/x/LC08_SR_B4.TIF",
     "/vsis3/usgs-landsat/collection02/level-2/x/LC08_SR_B4.TIF"),
    ("gs://gcp-public-data-landsat/LC08/x_B4.TIF", "/vsigs/gcp-public-data-landsat/LC08/x_B4.TIF"),
    ("file:///data/scenes/x%20y/B4.TIF", "/data/scenes/x y/B4.TIF"),
    ("/data/scenes/B4.TIF", "/data/scenes/B4.TIF"),
])
def test_gdal_path_maps_urls_to_virtual_file_systems(location: str, expected: str) -> None:
    assert gdal_path(location) == expected


def test_gdal_path_refuses_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="ftp"):
        gdal_path("ftp://example.org/B4.TIF")


def test_hrefs_resolve_against_the_item() -> None:
    assert is_url("s3://b/k") and is_url("https://h/x") and not is_url("/tmp/x.json")
    assert resolve_href("../data/B4.TIF", "/stac/items/item.json") == "/stac/data/B4.TIF"
    assert resolve_href("/abs/B4.TIF", "/stac/items/item.json") == "/abs/B4.TIF"
    assert resolve_href("B4.TIF", "https://h/stac/item.json") == "https://h/stac/B4.TIF"
    assert resolve_href("s3://b/k/B4.TIF", "/stac/item.json") == "s3://b/k/B4.TIF"
    assert resolve_href("file:///abs/B4.TIF", "/stac/item.json") == "/abs/B4.TIF"


def test_stac_item_with_urls_maps_assets_to_gdal_paths(tmp_path: Path) -> None:
    base = "https://landsatlook.usgs.gov/data/collection02/level-2/LC08_L2SP_118062"
    assets = {f"SR_B{n}": {"href": f"{base}/{L2_ID}_SR_B{n}.TIF"} for n in range(1, 8)}
    assets["mtl.json"] = {"href": f"s3://usgs-landsat/x/{L2_ID}_MTL.json"}
    item = tmp_path / "item.json"
    item.write_text(json.dumps({"type": "Feature", "id": L2_ID, "assets": assets}))
    (source,) = item_sources(str(item))
    assert source.kind == "stac" and source.origin == str(item) and not source.error
    assert source.metadata == f"s3://usgs-landsat/x/{L2_ID}_MTL.json"  # read with fsspec
    assert source.assets["red"] == f"{base}/{L2_ID}_SR_B4.TIF"
    assert source.assets["swir2"] == f"{base}/{L2_ID}_SR_B7.TIF"


# --- STAC asset layouts -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["earth-search", "usgs"])
def test_stac_layouts_name_every_band(tiny_world: Path, tmp_path: Path, layout: str) -> None:
    product = products(tiny_world)[0]
    item = write_item(product, tmp_path / "items" / "item.json", layout)
    (source,) = resolve_sources([item])
    assert sorted(source.assets) == sorted(ALL)
    for band, suffix in [("coastal", "_B1.TIF"), ("nir", "_B5.TIF"), ("swir2", "_B7.TIF"),
                         ("pan", "_B8.TIF"), ("qa_pixel", "_QA_PIXEL.TIF")]:
        assert source.assets[band] == str(product / f"{product.name}{suffix}")
    assert source.metadata == str(product / f"{product.name}_MTL.txt")


def test_stac_bands_from_eo_bands_and_file_names(tiny_world: Path, tmp_path: Path) -> None:
    """Keys that say nothing: eo:bands common names first, then the USGS file suffix."""
    product = products(tiny_world)[0]
    pid = product.name
    assets = {
        "asset-1": {"href": str(product / f"{pid}_B4.TIF"),
                    "eo:bands": [{"name": "OLI4", "common_name": "red"}]},
        "asset-2": {"href": str(product / f"{pid}_B5.TIF"),
                    "bands": [{"name": "x", "eo:common_name": "nir08"}]},  # STAC 1.1
        "asset-3": {"href": str(product / f"{pid}_B6.TIF")},
        "asset-4": {"href": str(product / f"{pid}_QA_PIXEL.TIF")},
        "metadata": {"href": str(product / f"{pid}_MTL.txt")},
        "thumbnail": {"href": "thumb.jpg"},
    }
    item = tmp_path / "odd.json"
    item.write_text(json.dumps({"type": "Feature", "id": pid, "assets": assets}))
    (source,) = item_sources(str(item))
    assert source.assets == {
        "red": str(product / f"{pid}_B4.TIF"), "nir": str(product / f"{pid}_B5.TIF"),
        "swir1": str(product / f"{pid}_B6.TIF"), "qa_pixel": str(product / f"{pid}_QA_PIXEL.TIF"),
    }
    assert source.metadata.endswith("_MTL.txt")


def test_item_collection_gives_one_source_per_item(tiny_world: Path, tmp_path: Path) -> None:
    features = []
    for product in products(tiny_world):
        path = write_item(product, tmp_path / f"{product.name}.json", "usgs")
        features.append(json.loads(path.read_text()))
        path.unlink()
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    sources = resolve_sources([collection])
    assert [s.origin for s in sources] == [f"{collection}#{p.name}" for p in products(tiny_world)]
    assert [read_source_metadata(s).product_id for s in sources] == [
        p.name for p in products(tiny_world)]


def test_item_without_mtl_is_a_source_error(tmp_path: Path) -> None:
    item = tmp_path / "item.json"
    item.write_text(json.dumps({"type": "Feature", "id": "x", "assets": {
        "red": {"href": "B4.TIF"}}}))
    (source,) = item_sources(str(item))
    assert "no MTL asset" in source.error and str(item) in source.error


# --- Folders and tars -------------------------------------------------------------------------


def test_folder_of_products_tars_and_items(tiny_world: Path, tmp_path: Path) -> None:
    first, second, third = products(tiny_world)
    mixed = tmp_path / "mixed"
    copy_product(first, mixed)
    make_tar(second, mixed / f"{second.name}.tar")
    write_item(third, mixed / "item.json", "earth-search")
    (mixed / "notes.json").write_text('{"not": "an item"}')
    (mixed / ".partial.tar").write_text("ignored: hidden")
    sources = resolve_sources([mixed])
    assert [(s.kind, s.name) for s in sources] == [
        ("folder", first.name), ("tar", second.name), ("stac", third.name)]
    assert [read_source_metadata(s).product_id for s in sources] == [
        first.name, second.name, third.name]
    # The same folder named twice, or also by a product inside it, is one source each.
    again = resolve_sources([mixed, mixed / first.name, str(mixed)])
    assert [s.origin for s in again] == [s.origin for s in sources]


def test_product_folder_and_its_mtl_resolve_to_the_folder() -> None:
    (by_folder,) = resolve_sources([L1_DIR])
    (by_mtl,) = resolve_sources([L1_DIR / f"{L1_ID}_MTL.txt"])
    assert by_folder == by_mtl == folder_source(L1_DIR)
    assert by_folder.kind == "folder" and by_folder.origin == str(L1_DIR)


def test_tar_is_read_in_place(tmp_path: Path) -> None:
    tar = make_tar(L1_DIR, tmp_path / f"{L1_ID}.tar")
    source = tar_source(tar)
    assert source.name == L1_ID and source.metadata == str(tar)
    assert source.metadata_member == f"{L1_ID}_MTL.txt"
    assert source.files[f"{L1_ID}_B4.TIF"] == f"/vsitar/{tar}/{L1_ID}_B4.TIF"
    meta = read_source_metadata(source)
    assert meta.product_id == L1_ID
    found, missing = band_locations(source, meta)
    assert found["red"] == f"/vsitar/{tar}/{L1_ID}_B4.TIF"
    assert "pan" in found and "coastal" in missing and "qa_pixel" in missing
    assert missing["coastal"] == f"{tar}: no member {L1_ID}_B1.TIF"
    assert sorted(p.name for p in tmp_path.iterdir()) == [tar.name]  # nothing extracted


def test_broken_tar_and_missing_source(tmp_path: Path) -> None:
    bad = tmp_path / "broken.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    (source,) = resolve_sources([bad])
    assert source.error.startswith(f"{bad}: unreadable tar")
    with pytest.raises(FileNotFoundError, match="no-such"):
        resolve_sources([tmp_path / "no-such"])


def test_tar_holding_a_subfolder(tmp_path: Path) -> None:
    """Some mirrors re-pack bundles with the product folder inside: members are found by name."""
    tar = tmp_path / "repacked.tar"
    with tarfile.open(tar, "w") as out:
        out.add(L2_DIR, arcname=L2_ID)
    source = tar_source(tar)
    assert source.metadata_member == f"{L2_ID}/{L2_ID}_MTL.txt"
    assert source.files[f"{L2_ID}_SR_B4.TIF"] == f"/vsitar/{tar}/{L2_ID}/{L2_ID}_SR_B4.TIF"


# --- MTL flavours and product types -----------------------------------------------------------


def test_mtl_preference_is_txt_then_json_then_xml(tmp_path: Path) -> None:
    names = ["a_MTL.xml", "a_MTL.json", "a_MTL.txt", "a_B4.TIF"]
    assert preferred_mtl(names) == "a_MTL.txt"
    assert preferred_mtl(names[:2]) == "a_MTL.json"
    assert preferred_mtl(names[:1]) == "a_MTL.xml"
    assert preferred_mtl(["a_B4.TIF"]) is None
    assert mtl_format("X_mtl.JSON") == "json" and mtl_format("X_ANG.txt") is None
    (tmp_path / "p_MTL.xml").write_text("<x/>")
    (tmp_path / "p_MTL.json").write_text("{}")
    assert find_mtl(tmp_path).name == "p_MTL.json"
    with pytest.raises(MTLError, match="no \\*_MTL.txt"):
        find_mtl(tmp_path / "nothing-here")


@pytest.mark.parametrize(("product_id", "reason"), [
    ("LE07_L1TP_118062_20170612_20200922_02_T1", "Landsat 7 ETM+"),
    ("LT05_L1TP_118062_20070612_20200922_02_T1", "Landsat 5 TM"),
    ("LM05_L1GS_118062_19900612_20200922_02_T2", "MSS"),
    ("LC08_L1GS_118062_20170612_20200922_02_T2", "processing level L1GS"),
    ("LT08_L1GT_118062_20170612_20200922_02_T2", "TIRS-only"),
    ("LC08_L1TP_118062_20170612_20200922_01_T1", "Collection 1"),
    ("LANDSAT_8_SCENE", "not a Collection 2 product id"),
])
def test_unsupported_products_are_refused_by_name(product_id: str, reason: str) -> None:
    with pytest.raises(UnsupportedProductError) as info:
        check_supported(product_id, "/data/x_MTL.txt")
    assert product_id in str(info.value) and reason in str(info.value)
    assert info.value.scene_id == product_id


@pytest.mark.parametrize("product_id", [
    "LC08_L1TP_118062_20170612_20200922_02_T1", "LC09_L1GT_118062_20220612_20220613_02_T2",
    "LC08_L2SP_118062_20170612_20200922_02_T1", "LO08_L1TP_118062_20170612_20200922_02_T1",
])
def test_supported_products_pass(product_id: str) -> None:
    check_supported(product_id, "x")


def test_foreign_band_file_is_named(tiny_world: Path, tmp_path: Path) -> None:
    """An item whose MTL is another product's: the first foreign file is named."""
    first, second = products(tiny_world)[:2]
    item = write_item(first, tmp_path / "item.json", "usgs")
    data = json.loads(item.read_text())
    data["assets"]["MTL.txt"]["href"] = str(second / f"{second.name}_MTL.txt")
    item.write_text(json.dumps(data))
    (source,) = item_sources(str(item))
    meta = read_source_metadata(source)
    with pytest.raises(ValueError, match="belongs to another product") as info:
        band_locations(source, meta)
    assert f"{first.name}_B1.TIF" in str(info.value) and second.name in str(info.value)
