"""The real Landsat C2 crops of tests/data and small readers that bypass the ingest code."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr

DATA = Path(__file__).parents[1] / "data" / "landsat"
L1_ID = "LC08_L1TP_017051_20151205_20200908_02_T1"
L2_ID = "LC08_L2SP_017051_20151205_20200908_02_T1"
L1_DIR = DATA / f"{L1_ID}-cropped"
L2_DIR = DATA / f"{L2_ID}-cropped"
BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]  # the crops have no coastal B1
L1_FILES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir1": "B6", "swir2": "B7"}
L2_FILES = {name: f"SR_{code}" for name, code in L1_FILES.items()}

#: Sample pixels (row, col): corners, centre and a few arbitrary ones.
PIXELS = [(0, 0), (0, 466), (332, 0), (332, 466), (166, 233), (17, 301), (250, 42), (123, 456)]


def mtl_value(folder: Path, key: str) -> str:
    """A raw value from a product's MTL text, read without the module under test."""
    text = next(folder.glob("*_MTL.txt")).read_text()
    match = re.search(rf"^\s*{key} = \"?([^\"\n]+)\"?\s*$", text, flags=re.MULTILINE)
    assert match, key
    return match.group(1)


def mtl_float(folder: Path, key: str) -> float:
    return float(mtl_value(folder, key))


def raw_dn(folder: Path, product_id: str, suffix: str) -> np.ndarray:
    with rasterio.open(folder / f"{product_id}_{suffix}.TIF") as src:
        return src.read(1)


def open_scene(store: Path, scene_id: str) -> xr.Dataset:
    return xr.open_zarr(store, group=scene_id, consolidated=False)


def copy_product(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for path in [dst, *dst.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the test data is read-only
    return dst


def temporaries(store: Path) -> list[str]:
    return [p.name for p in store.iterdir() if ".tmp-" in p.name] if store.exists() else []
