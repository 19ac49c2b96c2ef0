"""Write chips in the published ForestNet release's layout and scaling: the importer's inverse.

It lets the release's whole path (``import-forestnet`` -> ``train`` -> ``map``) run on chips
whose truth is known, and lets users hand chips to tools written against the release.
Every file is what ``release_import`` documents, with the same display scaling:

- ``examples/<lat>_<lon>/images/visible/composite.png`` and ``<YYYY_MM_DD>_cloud_<N>.png``
  (red, green, blue: reflectance * 255 / 0.4, clipped at 0.4), with the infrared
  ``images/infrared/<stem>.npy`` (nir, swir1, swir2: reflectance * 255, clipped at 1.0;
  uint8 for the composite, uint16 holding 0-255 for the scenes, as both occur);
- ``forest_loss_region.pkl``: the loss mask as a shapely polygon in pixel coordinates
  (pixel (c, r) centred on (c, r)), so that importing it gives back the same mask;
- ``auxiliary/`` in the published forms (``release_aux`` reads them back):
  ``srtm.npy`` (altitude m, aspect and slope in 1/100 degree), ``treecover2000.npy``;
  ``ncep.npy``, the release's 84 NCEP values with the chip's temperature as ``tavg``,
  ``tmax`` and ``tmin`` in kelvin * 100 (the chips know no other NCEP variable: NaN);
  ``osm.json``, the closest street and city as Nominatim reverse-geocoding results whose
  lat/lon (strings, 7 decimals) lie the chip's distance due north of the event's lat/lon,
  so that the importer's geodesic distance gives it back within centimetres;
  ``peat.json``, ``{"peat": true|false}``: the release's peat is binary, so a peat
  fraction comes back as 1.0 (>= 0.5) or 0.0;
- ``train.csv``/``val.csv``/``test.csv`` with ``label, merged_label, latitude, longitude,
  year, example_path``.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio.features
import xarray as xr
from affine import Affine
from PIL import Image
from pyproj import Geod
from shapely.geometry import MultiPolygon, shape

from pipeline.core.atomic import atomic_output
from pipeline.training_set.release_aux import NCEP_TEMPERATURES, NCEP_VALUES
from pipeline.training_set.release_import import (
    INFRARED_SCALE,
    POLYGON_FILE,
    VISIBLE_SCALE,
    display_units,
)
from pipeline.training_set.release_reader import SPLIT_FILES

CSV_COLUMNS = ["label", "merged_label", "latitude", "longitude", "year", "example_path"]
#: Where the written closest street/city lie from the event: due north (any fixed bearing
#: gives the same distance back).
PLACE_AZIMUTH = 0.0
_GEOD = Geod(ellps="WGS84")
#: Nominatim-style fields of the written places, by kind (the release's "raw" results).
_PLACE_KINDS = {
    "street": {"osm_type": "way", "class": "highway", "type": "unclassified",
               "place_rank": 26, "addresstype": "road", "name": "Jalan Desa"},
    "city": {"osm_type": "relation", "class": "boundary", "type": "administrative",
             "place_rank": 16, "addresstype": "city", "name": "Kota Contoh"},
}


def write_release(chips: xr.Dataset, out: Path) -> Path:
    """Write every usable event of ``chips`` under ``out/ForestNetDataset``; return it."""
    base = Path(out) / "ForestNetDataset"
    rows: dict[str, list[dict]] = {name[:-4]: [] for name in SPLIT_FILES}
    bands = list(map(str, chips["band"].values))
    for i in np.flatnonzero(chips["chip_ok"].values == 1):
        event = chips.isel(event=int(i))
        lat, lon = float(event["lat"]), float(event["lon"])
        folder = f"examples/{lat:.5f}_{lon:.5f}"
        _write_example(event, bands, base / folder)
        split = str(event["split"].values)
        if split in rows:
            rows[split].append({"label": str(event["label"].values),
                                "merged_label": str(event["merged_label"].values),
                                "latitude": lat, "longitude": lon,
                                "year": int(event["loss_year"]), "example_path": folder})
    for split, split_rows in rows.items():
        with atomic_output(base / f"{split}.csv") as tmp:
            pd.DataFrame(split_rows, columns=CSV_COLUMNS).to_csv(tmp, index=False)
    return base


def _write_example(event: xr.Dataset, bands: list[str], folder: Path) -> None:
    image = event["image"].values  # (view, band, y, x)
    visible = [bands.index(b) for b in ("red", "green", "blue")]
    infrared = [bands.index(b) for b in ("nir", "swir1", "swir2")]
    for view, date, cloud in zip(range(len(image)), event["view_date"].values,
                                 event["view_cloud_fraction"].values, strict=True):
        if view and not date:
            continue  # an empty single-scene slot
        stem = "composite" if view == 0 else (
            f"{str(date)[:4]}_{str(date)[4:6]}_{str(date)[6:]}_cloud_{round(100 * cloud)}")
        rgb = display_values(image[view, visible], VISIBLE_SCALE).astype(np.uint8)
        ir = display_values(image[view, infrared], INFRARED_SCALE)
        _write_bytes(folder / "images" / "visible" / f"{stem}.png",
                     _png(rgb.transpose(1, 2, 0)))
        _write_bytes(folder / "images" / "infrared" / f"{stem}.npy",
                     _npy(ir.transpose(1, 2, 0).astype(np.uint8 if view == 0 else np.uint16)))
    _write_bytes(folder / POLYGON_FILE, pickle.dumps(mask_polygon(event["loss_mask"].values)))
    _write_aux(event, folder / "auxiliary")


def display_values(reflectance: np.ndarray, scale: float) -> np.ndarray:
    """Reflectance as the release's 0-255 display values (``value * scale`` gives it back)."""
    return np.rint(np.nan_to_num(display_units(reflectance, scale), nan=0.0))


def mask_polygon(mask: np.ndarray) -> MultiPolygon:
    """The mask's pixels as a polygon in the release's pixel coordinates (pixel centres at
    integers): pixel-edge outlines shifted by half a pixel."""
    shift = Affine.translation(-0.5, -0.5)
    parts = [shape(geom) for geom, value in rasterio.features.shapes(
        mask.astype(np.uint8), mask=mask.astype(bool), transform=shift) if value]
    return MultiPolygon([p for part in parts for p in getattr(part, "geoms", [part])])


def _write_aux(event: xr.Dataset, folder: Path) -> None:
    aux = dict(zip(map(str, event["aux_band"].values), event["aux"].values, strict=True))
    scalars = dict(zip(map(str, event["feature"].values), event["aux_scalar"].values.tolist(),
                       strict=True))
    anchor = (float(event["lat"]), float(event["lon"]))  # the CSV lat/lon, pixel (166, 166)
    if {"elevation", "slope", "aspect"} <= aux.keys():
        # The release's channel order: altitude, aspect, slope (release_aux.SRTM_CHANNELS).
        terrain = np.stack([aux["elevation"], 100 * aux["aspect"], 100 * aux["slope"]], -1)
        _write_bytes(folder / "srtm.npy", _npy(terrain.astype(np.float32)))
    if "treecover2000" in aux:
        _write_bytes(folder / "treecover2000.npy", _npy(aux["treecover2000"].astype(np.float32)))
    if np.isfinite(scalars.get("temperature_c", np.nan)):
        _write_bytes(folder / "ncep.npy", _npy(ncep_values(scalars["temperature_c"])))
    places = {f"closest_{kind}": nominatim_place(anchor, scalars[feature], kind)
              for kind, feature in (("street", "street_dist_km"), ("city", "city_dist_km"))
              if np.isfinite(scalars.get(feature, np.nan))}
    if places:
        _write_bytes(folder / "osm.json", json.dumps(places).encode())
    if np.isfinite(scalars.get("peat_fraction", np.nan)):
        peat = bool(scalars["peat_fraction"] >= 0.5)  # the release's peat is binary
        _write_bytes(folder / "peat.json", json.dumps({"peat": peat}).encode())


def ncep_values(temperature_c: float) -> np.ndarray:
    """The release's 84 ``ncep.npy`` values for a chip that knows only its temperature:
    ``tavg``, ``tmax`` and ``tmin`` in kelvin * 100, every other value NaN."""
    values = np.full(len(NCEP_VALUES), np.nan)
    for name in NCEP_TEMPERATURES:
        values[NCEP_VALUES.index(name)] = (temperature_c + 273.15) * 100.0
    return values


def nominatim_place(anchor: tuple[float, float], km: float, kind: str) -> dict:
    """A Nominatim reverse-geocoding result ("raw") for the closest ``kind`` ("street" or
    "city") ``km`` due north of ``anchor`` (lat, lon), lat/lon as strings like Nominatim's."""
    lon, lat, _ = _GEOD.fwd(anchor[1], anchor[0], PLACE_AZIMUTH, km * 1000.0)
    fields = _PLACE_KINDS[kind]
    lat_s, lon_s = f"{lat:.7f}", f"{lon:.7f}"
    area = "road" if kind == "street" else "city"
    return {
        "place_id": int(abs(lat) * 1e5) * 10 + int(abs(lon) * 10) % 10,
        "licence": "Data © OpenStreetMap contributors, ODbL 1.0. http://osm.org/copyright",
        "osm_id": int(abs(lon) * 1e5), "lat": lat_s, "lon": lon_s, **fields,
        "importance": 0.1, "display_name": f"{fields['name']}, Indonesia",
        "address": {area: fields["name"], "country": "Indonesia", "country_code": "id"},
        "boundingbox": [f"{lat - 0.001:.7f}", f"{lat + 0.001:.7f}", f"{lon - 0.001:.7f}",
                        f"{lon + 0.001:.7f}"],
    }


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # PNG is lossless at every level; level 1 writes 4-5x faster than the default 6.
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
