"""A small ForestNet release in the published layout, generated for the importer's tests.

``ForestNetDataset/{train,val,test}.csv`` and ``examples/<lat>_<lon>/`` folders holding
``images/visible/*.png`` (composite + dated scenes), ``images/infrared/*.npy``,
``auxiliary/*`` and ``forest_loss_region.pkl`` (a shapely polygon in pixel coordinates).
The auxiliary files take their published forms: ``osm.json`` holds Nominatim places
(lat/lon strings), ``peat.json`` true/false, ``ncep.npy`` the 84 NCEP values.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon

from pipeline.training_set.release_writer import ncep_values, nominatim_place

SIZE = 332
CITY_KM = 80.0  # every example's closest city: beyond the 50 km cap


def street_km(i: int) -> float:
    """The distance (km) to the closest street written for example ``i``."""
    return 1.5 + i


def temperature_c(i: int) -> float:
    """The NCEP temperature (C) written for example ``i``."""
    return 26.5 + i


@dataclass(frozen=True)
class Example:
    split: str
    label: str
    merged_label: str
    lat: float
    lon: float
    year: int
    folder: str  # name of the folder actually written
    scenes: tuple[str, ...]  # scene stems, e.g. "2017_06_12_cloud_3"
    polygon: Polygon | MultiPolygon  # pixel coordinates


EXAMPLES = (
    Example("train", "Oil palm plantation", "Plantation", -1.95012, 113.55034, 2014,
            "-1.95012_113.55034", ("2017_06_12_cloud_30", "2016_08_01_cloud_5"),
            Polygon([(140.3, 150.2), (190.7, 148.9), (196.1, 187.4), (150.6, 192.8)])),
    Example("train", "Small-scale agriculture", "Smallholder agriculture", -2.10345, 111.90712,
            2013, "111.90712_-2.10345",  # lon_lat folder name
            ("2015_01_02_cloud_12",),
            MultiPolygon([Polygon([(120.2, 120.4), (160.6, 121.3), (158.8, 170.1)]),
                          Polygon([(170.5, 170.5), (200.3, 171.1), (199.8, 210.9)])])),
    Example("val", "Mining", "Other", 0.51277, 116.40021, 2015, "0.51277_116.40021",
            ("2018_02_03_cloud_1", "2017_05_06_cloud_44", "2016_07_08_cloud_20"),
            Polygon([(100.4, 100.3), (230.2, 110.7), (220.9, 240.6), (110.1, 230.2)])),
    Example("test", "Grassland shrubland", "Grassland shrubland", -3.00042, 104.75011, 2016,
            "-3.00042_104.75011", (),
            Polygon([(160.2, 160.3), (175.6, 161.1), (170.4, 176.2)])),
)


def pixels(seed: int, channels: int = 3) -> np.ndarray:
    """A deterministic (332, 332, channels) uint8 image."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(SIZE, SIZE, channels), dtype=np.uint8)


def write_release(root: Path, examples: tuple[Example, ...] = EXAMPLES) -> Path:
    """Write the release under ``root/ForestNetDataset``; return that folder."""
    base = root / "ForestNetDataset"
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, ex in enumerate(examples):
        folder = base / "examples" / ex.folder
        visible, infrared, aux = (folder / "images" / "visible", folder / "images" / "infrared",
                                  folder / "auxiliary")
        for d in (visible, infrared, aux):
            d.mkdir(parents=True, exist_ok=True)
        for k, stem in enumerate(("composite", *ex.scenes)):
            Image.fromarray(pixels(100 * i + k)).save(visible / f"{stem}.png")
            np.save(infrared / f"{stem}.npy", pixels(100 * i + k + 50))
        np.save(aux / "altitude.npy", np.full((SIZE, SIZE), 120.0 + i, np.float32))
        np.save(aux / "slope.npy", np.full((SIZE, SIZE), 250, np.int16))  # 2.5 degrees
        np.save(aux / "aspect.npy", np.full((SIZE, SIZE), -9000, np.int16))  # 270 degrees
        np.save(aux / "gain.npy", np.zeros((SIZE, SIZE), np.uint8))  # no store equivalent
        np.save(aux / "ncep.npy", ncep_values(temperature_c(i)))
        anchor = (ex.lat, ex.lon)
        (aux / "osm.json").write_text(json.dumps({
            "closest_street": nominatim_place(anchor, street_km(i), "street"),
            "closest_city": nominatim_place(anchor, CITY_KM, "city")}))
        (aux / "peat.json").write_text(json.dumps({"peat": i % 2 == 0}))
        (folder / "forest_loss_region.pkl").write_bytes(pickle.dumps(ex.polygon))
        rows[ex.split].append({
            "label": ex.label, "merged_label": ex.merged_label, "latitude": ex.lat,
            "longitude": ex.lon, "year": ex.year,
            "example_path": f"examples/{ex.lat}_{ex.lon}",  # the CSV always says lat_lon
        })
    for split, split_rows in rows.items():
        pd.DataFrame(split_rows, columns=["label", "merged_label", "latitude", "longitude",
                                          "year", "example_path"]).to_csv(
            base / f"{split}.csv", index=False)
    return base


def zip_release(base: Path, out: Path) -> Path:
    """Zip the release folder with its ``ForestNetDataset/`` prefix, as published."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(base.rglob("*")):
            zf.write(path, path.relative_to(base.parent).as_posix())
    return out
