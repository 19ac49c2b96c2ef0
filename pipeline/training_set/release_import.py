"""Import the published ForestNet dataset (``ForestNetDataset`` folder or zip) into chips.zarr.

The store has the same contract as one built from scenes, so training cannot tell the
sources apart:

- each CSV row (train/val/test, split kept, fine label merged) is one event, its chip the
  ``centred_geobox`` of the CSV lat/lon (pixel (166, 166) is that point);
- ``forest_loss_region.pkl`` is a pickled shapely polygon in pixel coordinates, read by
  ``pipeline.training_set.safe_pickle`` (never ``pickle.load``); pixel coordinate (c, r) is
  the centre of pixel (c, r), and ``loss_mask`` holds the pixels whose centre lies inside it;
- view 0 is ``composite``; views 1.. are the ``YYYY_MM_DD_cloud_<N>`` scenes, least cloudy
  first (cloud fraction N / 100), each PNG (red, green, blue) with the infrared ``.npy`` of
  the same stem (nir, swir1, swir2); a scene without its pair is skipped with a note.

**Radiometry.** The release is Landsat 8 surface reflectance exported with the Descartes
Labs "display" scaling, which differs by band group (evidence: the Descartes Labs band
metadata for Landsat 8, ``display_range`` [0, 4000] for red/green/blue and [0, 10000] for
nir/swir1/swir2; a Stanford-lineage downloader calling ``scenes.stack(...,
scaling="display", processing_level="surface")``; the published per-band means in 0-255
units, red 19.9 ... nir 82.1, which fit vegetated land only as surface reflectance). So:

============  ==========================  ==============================================
file          holds                       reflectance (0-1) =
============  ==========================  ==============================================
PNG (r, g, b) 0-255 over 0-0.4            value * 0.4 / 255   (:data:`VISIBLE_SCALE`)
NPY (nir,     0-255 over 0-1.0; uint8, or value / 255         (:data:`INFRARED_SCALE`)
swir1, swir2) uint16 holding 0-255        (a value above 255 is an error naming the file)
============  ==========================  ==============================================

**Auxiliary files** are read as the release publishes them by
:mod:`pipeline.training_set.release_aux` (its docstring has the table of forms and units):
terrain from ``srtm.npy`` or per-band files, tree cover, NCEP temperature from ``ncep.npy``
(kelvin * 100), street/city distances as the geodesic km from the CSV lat/lon to the
Nominatim places in ``osm.json``, peat from ``peat.json``'s true/false. A file the importer
does not know, and a value it cannot read, are reported by file name with a count
(:func:`~pipeline.training_set.release_aux.unknown_aux_counts`,
:func:`~pipeline.training_set.release_aux.unreadable_aux_counts`), never dropped silently.

An example with a missing folder or polygon is left out at planning; one with a missing
image is kept with ``chip_ok = 0`` and the reason. Both are reported, the rest imported.
"""

from __future__ import annotations

import io
import posixpath
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from PIL import Image
from shapely.geometry.base import BaseGeometry

from pipeline.core.errors import ForestNetError
from pipeline.core.grid import centred_geobox
from pipeline.core.radiometry import DISPLAY_MAX
from pipeline.imagery.views import CHIP_BANDS, ChipSpec, EventChip, rasterize_region
from pipeline.training_set.auxiliary import MAX_DISTANCE_KM
from pipeline.training_set.chip_store import RELEASE_SOURCE
from pipeline.training_set.events import event_id, finish_events, read_forestnet_csvs
from pipeline.training_set.release_aux import (
    AUX_JSON,
    AUX_NPY,
    AuxFileError,
    load_npy,
    read_aux,
)
from pipeline.training_set.release_reader import ReleaseError, ReleaseReader
from pipeline.training_set.safe_pickle import UnsafePickleError, loads_geometry

VISIBLE_SCALE = DISPLAY_MAX["red"] / 255.0
INFRARED_SCALE = DISPLAY_MAX["nir"] / 255.0


def display_units(reflectance: np.ndarray, scale: float) -> np.ndarray:
    """Reflectance in the release's display units: ``reflectance / scale`` clipped to
    0-255 (``VISIBLE_SCALE`` or ``INFRARED_SCALE``); NaN stays NaN."""
    return np.clip(np.asarray(reflectance, np.float64) / scale, 0, 255)


#: What the chip store records of the import's radiometry (see the module docstring).
RELEASE_RADIOMETRY = "surface"
IMAGE_SCALING = ("surface reflectance from the release's display values: PNG (red, green, "
                 "blue) * 0.4 / 255, NPY (nir, swir1, swir2) / 255")
SCENE_STEM = re.compile(r"^(\d{4})_(\d{2})_(\d{2})_cloud_(\d+)$")
POLYGON_FILE = "forest_loss_region.pkl"


def imported_store_attrs(release: str) -> dict:
    """The chip-store attributes of an import: the release, its radiometry and scaling,
    and where each aux band and scalar came from."""
    return {"source": RELEASE_SOURCE, "release": Path(release).name,
            "radiometry": RELEASE_RADIOMETRY, "image_scaling": IMAGE_SCALING,
            "aux_provenance": {
                "npy": {k: v[0] for k, v in AUX_NPY.items()},
                "json": AUX_JSON,
                "osm": "geodesic km (WGS84) from the CSV lat/lon to osm.json's closest_street "
                       f"/ closest_city lat/lon, capped at {MAX_DISTANCE_KM:g} km",
                "ncep": {"ncep.npy tavg (kelvin * 100)": "temperature_c",
                         "tavg.npy (kelvin * 100)": "temperature_c"}}}


class ExampleError(ForestNetError, ValueError):
    """One example cannot be imported; the message is its reason."""


def plan_release(release: str, spec: ChipSpec) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Events of the release (one per CSV row that has a folder and a polygon) + problems."""
    if spec.size != 332 or spec.resolution != 15.0:
        raise ReleaseError(f"the release's chips are 332 x 332 at 15 m, not {spec.size} x "
                           f"{spec.size} at {spec.resolution} m; set chips.size/resolution")
    records, problems = [], []
    with ReleaseReader(release) as reader:
        csvs = {name[:-4]: (reader.describe(name), io.BytesIO(reader.read(name)))
                for name in ("train.csv", "val.csv", "test.csv") if reader.exists(name)}
        table = read_forestnet_csvs(csvs)
        seen: dict[str, int] = {}
        for row in table.itertuples(index=False):
            lat, lon, year = float(row.latitude), float(row.longitude), int(row.year)
            try:
                folder, reason = reader.example_folder(str(row.example_path), lat, lon)
                if folder is None:
                    raise ExampleError(reason)
                pixels = _pixel_polygon(reader, folder)
            except (ExampleError, ReleaseError, UnsafePickleError) as exc:
                problems.append(f"{row.example_path}: {exc}")
                continue
            geobox = centred_geobox(lon, lat, spec.size, spec.resolution)
            region = pixels_to_crs(pixels, geobox)
            eid = event_id(lat, lon, year)
            seen[eid] = seen.get(eid, 0) + 1
            records.append({
                "event_id": eid if seen[eid] == 1 else f"{eid}-{seen[eid]}",
                "loss_year": year, "label": str(row.label), "merged_label": row.merged_label,
                "split": row.split, "source": "forestnet_release",
                "n_pixels": int(rasterize_region(region, geobox).sum()),
                "geometry": gpd.GeoSeries([region], crs=geobox.crs.to_wkt()).to_crs(4326).iloc[0],
                "anchor_lon": lon, "anchor_lat": lat, "example": folder,
            })
    return finish_events(records), problems


def _pixel_polygon(reader: ReleaseReader, folder: str) -> BaseGeometry:
    rel = f"{folder}/{POLYGON_FILE}"
    if not reader.exists(rel):
        raise ExampleError(f"missing {POLYGON_FILE}")
    geom = loads_geometry(reader.read(rel), reader.describe(rel))
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise ExampleError(f"{reader.describe(rel)}: {geom.geom_type} is not a loss polygon")
    return geom


def pixels_to_crs(pixels: BaseGeometry, geobox: GeoBox) -> BaseGeometry:
    """A pixel-coordinate geometry (pixel (c, r) at its centre) in the chip's CRS."""
    a = geobox.affine
    return shapely.transform(pixels, lambda xy: np.column_stack([
        a.c + a.a * (xy[:, 0] + 0.5) + a.b * (xy[:, 1] + 0.5),
        a.f + a.d * (xy[:, 0] + 0.5) + a.e * (xy[:, 1] + 0.5)]))


def read_example(
    reader: ReleaseReader, row, spec: ChipSpec
) -> tuple[EventChip, dict[str, np.ndarray], dict[str, float]]:
    """One example as an ``EventChip`` plus the aux bands and scalars the release has.

    A missing or unreadable composite makes the chip's status that reason; a bad single
    scene is skipped with a note.
    """
    geobox = centred_geobox(row.anchor_lon, row.anchor_lat, spec.size, spec.resolution)
    region = pixels_to_crs(_pixel_polygon(reader, row.example), geobox)
    image = np.zeros((spec.n_views, len(CHIP_BANDS), spec.size, spec.size), np.float32)
    dates, clouds, notes = [""] * spec.n_views, [1.0] * spec.n_views, []
    status = "ok"
    try:
        image[0] = _view(reader, row.example, "composite", spec.size)
        dates[0] = "composite"
        v = 1
        for stem, date, cloud in _scenes(reader, row.example, notes):
            if v == spec.n_views:
                break
            try:
                image[v] = _view(reader, row.example, stem, spec.size)
            except ExampleError as exc:
                notes.append(f"{stem}: scene skipped ({exc})")
                continue
            dates[v], clouds[v], v = date, cloud, v + 1
        clouds[0] = float(np.mean(clouds[1:v])) if v > 1 else float("nan")
    except (ExampleError, ReleaseError) as exc:
        status = str(exc)
    bands, scalars = read_aux(reader, row.example, spec.size,
                              (float(row.anchor_lat), float(row.anchor_lon)), notes)
    chip = EventChip(geobox, image, dates, clouds, [], rasterize_region(region, geobox), region,
                     status, notes)
    return chip, bands, scalars


def _scenes(reader: ReleaseReader, folder: str, notes: list[str]) -> list[tuple[str, str, float]]:
    """(stem, date, cloud) of the single scenes that have an IR pair, least cloudy first."""
    infrared = set(reader.listdir(f"{folder}/images/infrared"))
    scenes = []
    for name in reader.listdir(f"{folder}/images/visible"):
        stem, ext = posixpath.splitext(name)
        match = SCENE_STEM.match(stem)
        if ext != ".png" or match is None:
            continue
        if f"{stem}.npy" not in infrared:
            notes.append(f"images/visible/{name}: no infrared {stem}.npy; scene skipped")
            continue
        y, m, d, cloud = match.groups()
        scenes.append((min(int(cloud) / 100.0, 1.0), f"{y}-{m}-{d}", stem))
    return [(stem, date, cloud) for cloud, date, stem in sorted(scenes)]


def _view(reader: ReleaseReader, folder: str, stem: str, size: int) -> np.ndarray:
    """``(band, y, x)`` in chip band order, as surface reflectance (module docstring)."""
    rel = f"{folder}/images/visible/{stem}.png"
    for need in (rel, f"{folder}/images/infrared/{stem}.npy"):
        if not reader.exists(need):
            raise ExampleError(f"missing {need.removeprefix(folder + '/')} in "
                               f"{reader.describe(folder)}")
    try:
        with Image.open(io.BytesIO(reader.read(rel))) as im:
            rgb = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    except OSError as exc:
        raise ExampleError(f"{reader.describe(rel)}: not a readable PNG ({exc})") from None
    ir = _display_values(reader, f"{folder}/images/infrared/{stem}.npy")
    if ir.ndim == 3 and ir.shape[-1] == 3:
        ir = ir.transpose(2, 0, 1)
    for what, arr in ((rel, rgb), (f"{folder}/images/infrared/{stem}.npy", ir)):
        if arr.shape != (3, size, size):
            raise ExampleError(f"{reader.describe(what)}: shape {arr.shape}, expected "
                               f"{size} x {size} x 3")
    return np.concatenate([rgb.astype(np.float32) * VISIBLE_SCALE,
                           ir.astype(np.float32) * INFRARED_SCALE])


def _display_values(reader: ReleaseReader, rel: str) -> np.ndarray:
    """An infrared NPY's 0-255 display values: uint8, or a wider integer holding 0-255."""
    values = _npy(reader, rel)
    if values.dtype.kind not in "ui":
        raise ExampleError(f"{reader.describe(rel)}: {values.dtype} values; the release's "
                           "infrared NPYs hold integer display values 0-255")
    if values.size and (values.max() > 255 or values.min() < 0):
        raise ExampleError(f"{reader.describe(rel)}: values {values.min()}..{values.max()} "
                           "outside the display range 0-255")
    return values


def _npy(reader: ReleaseReader, rel: str) -> np.ndarray:
    try:
        return load_npy(reader, rel)
    except AuxFileError as exc:
        raise ExampleError(str(exc)) from None
