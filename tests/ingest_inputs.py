"""Test inputs for ingest: USGS-style tars, STAC Items in two layouts, MTL json/xml.

Written here from the files themselves (regular expressions over the MTL text), not with
the modules under test, so a parser bug cannot hide in both the input and the check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr

DATA = Path(__file__).parent / "data" / "landsat"
L1_ID = "LC08_L1TP_017051_20151205_20200908_02_T1"
L2_ID = "LC08_L2SP_017051_20151205_20200908_02_T1"
L1_DIR = DATA / f"{L1_ID}-cropped"
L2_DIR = DATA / f"{L2_ID}-cropped"

#: Band file suffix -> (Earth Search key, USGS-style key, eo:bands common name).
BANDS = {
    "B1": ("coastal", "B1", "coastal"), "B2": ("blue", "B2", "blue"),
    "B3": ("green", "B3", "green"), "B4": ("red", "B4", "red"),
    "B5": ("nir08", "B5", "nir08"), "B6": ("swir16", "B6", "swir16"),
    "B7": ("swir22", "B7", "swir22"), "B8": ("pan", "B8", "pan"),
    "QA_PIXEL": ("qa_pixel", "QA_PIXEL", None),
}


def products(world_manifest: Path, level: str | None = "L1TP") -> list[Path]:
    """The sample world's product folders of one processing level (every level with
    ``None``), by date."""
    return sorted(p for p in (world_manifest.parent / "landsat").iterdir()
                  if p.is_dir() and (level is None or f"_{level}_" in p.name))


def copy_product(src: Path, dst_parent: Path, name: str | None = None) -> Path:
    """A writable copy of a product folder (the test data is read-only)."""
    dst = dst_parent / (name or src.name)
    shutil.copytree(src, dst)
    for path in [dst, *dst.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


def clone_product(src: Path, parent: Path, new_id: str, folder: str | None = None) -> Path:
    """A copy of a product under another product id (file names and MTL rewritten)."""
    old_id = src.name
    dst = parent / (folder or new_id)
    dst.mkdir(parents=True)
    for path in src.iterdir():
        target = dst / path.name.replace(old_id, new_id)
        if path.name.endswith("_MTL.txt"):
            target.write_text(path.read_text().replace(old_id, new_id))
        else:
            shutil.copyfile(path, target)
    return dst


def new_product_id(pid: str, processed: str) -> str:
    """The same scene, another (valid) processing date: a distinct product id."""
    parts = pid.split("_")
    parts[4] = processed
    return "_".join(parts)


#: MTL size keys, scaled when ``derived_product`` tiles a scene.
SIZE_KEYS = ("REFLECTIVE_LINES", "REFLECTIVE_SAMPLES", "PANCHROMATIC_LINES",
             "PANCHROMATIC_SAMPLES", "THERMAL_LINES", "THERMAL_SAMPLES")


def derived_product(src: Path, out: Path, tile: int = 1, copy: int = 0) -> Path:
    """A product folder made from ``src``: rasters tiled ``tile`` x ``tile``, and for
    ``copy`` > 0 another product id (processing date + copy days), so copies are not
    duplicates of each other. Used by ``bench/bench_ingest.py`` and the run-loss tests."""
    old_id = src.name
    parts = old_id.split("_")
    parts[4] = f"{int(parts[4]) + copy:08d}"
    new_id = "_".join(parts)
    dst = out / new_id
    dst.mkdir(parents=True)
    for path in src.iterdir():
        target = dst / path.name.replace(old_id, new_id)
        if path.name.endswith("_MTL.txt"):
            text = path.read_text().replace(old_id, new_id)
            for key in SIZE_KEYS:
                text = re.sub(rf"({key} = )(\d+)", lambda m: f"{m[1]}{int(m[2]) * tile}", text)
            target.write_text(text)
        elif path.suffix == ".TIF" and tile > 1:
            with rasterio.open(path) as r:
                data, profile = r.read(1), r.profile
            profile.update(height=data.shape[0] * tile, width=data.shape[1] * tile)
            with rasterio.open(target, "w", **profile) as w:
                w.write(np.tile(data, (tile, tile)), 1)
        else:
            shutil.copyfile(path, target)
    return dst


def make_tar(product: Path, out: Path) -> Path:
    """A USGS-style bundle: a flat, uncompressed tar of the product's files."""
    with tarfile.open(out, "w") as tar:
        for path in sorted(product.iterdir()):
            tar.add(path, arcname=path.name)
    return out


def mtl_groups(text: str) -> dict:
    """The MTL text as nested dicts of strings (quotes stripped), as USGS's JSON has it."""
    root: dict = {}
    stack = [root]
    for line in text.splitlines():
        match = re.match(r"\s*(\w+) = (.*?)\s*$", line)
        if not match:
            continue
        key, value = match.groups()
        if key == "GROUP":
            stack[-1][value] = {}
            stack.append(stack[-1][value])
        elif key == "END_GROUP":
            stack.pop()
        else:
            stack[-1][key] = value.strip('"')
    return root


def write_mtl_json(mtl_txt: Path, out: Path) -> Path:
    out.write_text(json.dumps(mtl_groups(mtl_txt.read_text()), indent=2))
    return out


def write_mtl_xml(mtl_txt: Path, out: Path) -> Path:
    def build(parent: ElementTree.Element, node: dict) -> None:
        for key, value in node.items():
            child = ElementTree.SubElement(parent, key)
            if isinstance(value, dict):
                build(child, value)
            else:
                child.text = value

    (name, body), = mtl_groups(mtl_txt.read_text()).items()
    root = ElementTree.Element(name)
    build(root, body)
    out.write_bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))
    return out


def _suffix(name: str) -> str | None:
    for suffix in BANDS:
        if re.search(rf"_(SR_)?{suffix}\.TIF$", name):
            return suffix
    return None


def write_item(product: Path, item_path: Path, layout: str) -> Path:
    """A STAC Item for a product folder.

    ``earth-search``: common-name keys (``nir08``), ``mtl.txt``, hrefs relative to the item.
    ``usgs``: band-number keys (``B5`` / ``SR_B5``, ``QA_PIXEL``), ``MTL.txt``, absolute
    hrefs, ``eo:bands`` with names and common names.
    """
    pid = re.sub(r"-cropped$", "", product.name)
    assets: dict[str, dict] = {}
    for path in sorted(product.iterdir()):
        href = os.path.relpath(path, item_path.parent) if layout == "earth-search" else str(path)
        if path.name.endswith("_MTL.txt"):
            assets["mtl.txt" if layout == "earth-search" else "MTL.txt"] = {"href": href}
            continue
        suffix = _suffix(path.name)
        if suffix is None:
            continue
        es_key, usgs_key, common = BANDS[suffix]
        sr = "SR_" if "_SR_" in path.name else ""
        key = es_key if layout == "earth-search" else f"{sr}{usgs_key}" if suffix != "QA_PIXEL" \
            else "QA_PIXEL"
        asset: dict = {"href": href, "type": "image/tiff; application=geotiff"}
        if common:
            asset["eo:bands"] = [{"name": f"{sr}{suffix}", "common_name": common}]
        assets[key] = asset
    item = {"type": "Feature", "stac_version": "1.0.0", "id": pid, "properties": {},
            "geometry": None, "links": [], "assets": assets}
    item_path.parent.mkdir(parents=True, exist_ok=True)
    item_path.write_text(json.dumps(item, indent=1))
    return item_path


def assert_same_scene(store_a: Path, store_b: Path, scene_id: str,
                      ignore_attrs: tuple[str, ...] = ()) -> None:
    """Two stores hold the same scene: every array, coordinate and attribute but the source
    (and ``ignore_attrs``)."""
    a = xr.open_zarr(store_a, group=scene_id, consolidated=False, mask_and_scale=False)
    b = xr.open_zarr(store_b, group=scene_id, consolidated=False, mask_and_scale=False)
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        xr.testing.assert_identical(a[name], b[name])  # attrs too (NaN fill equals NaN)
    drop = {"forestnet_source", *ignore_attrs}
    assert {k: v for k, v in a.attrs.items() if k not in drop} == {
        k: v for k, v in b.attrs.items() if k not in drop}


@contextmanager
def threads_cluster() -> Iterator[str]:
    """An in-process Dask cluster (no worker processes to spawn); yields its address.

    The CLI attaches to it with ``--dask-address``, which saves the worker start-up and
    imports (seconds) that a LocalCluster of processes costs in every test.
    """
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def ingest_like_the_flow(entries: list, store: Path) -> list[dict]:
    """The ingest flow's steps, in process and without Prefect: resolve, identify, plan
    against the index, one ``ingest_row`` per scene, write the index. Returns the rows."""
    from pipeline.ingest.catalog import INDEX_NAME, read_index, write_index
    from pipeline.ingest.scene_ingest import identify, ingest_row, plan_ingest
    from pipeline.ingest.sources import resolve_sources

    sources = resolve_sources(entries)
    index = read_index(store) if (store / INDEX_NAME).exists() else None
    todo, rows = plan_ingest(sources, [identify(s) for s in sources], index)
    rows += [ingest_row(source, str(store), status) for source, status in todo]
    write_index(store, rows)
    return rows
