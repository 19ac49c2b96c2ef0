"""The map job's one writer: per province (or per AOI, or nationally), the parts of its
tiles merged into events and written as a driver-map GeoPackage with its side outputs.

It streams, so that a national map of millions of events fits in a worker: each
province's parts are merged a batch at a time (``pipeline.mapping.seam_stream``: an event
is merged once, whole, even across batches), its events get their drivers and areas, and
go to a spill on disk (``event_spill``). Every output is then written from the spill,
batch by batch: the GeoPackages (``write_driver_geopackage_batches``), the quick-look
PNG, the optional COG and 1 km grid, and ``events.parquet``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from shapely.geometry.base import BaseGeometry

from forestnet_model.bundle_meta import package_versions
from pipeline.core.atomic import temp_sibling
from pipeline.core.provinces import select_provinces, slug
from pipeline.export.driver_grid import dominant_driver_grid_batches, write_dominant_grid
from pipeline.export.driver_raster import lonlat_raster_grid, write_driver_cog_batches
from pipeline.export.event_spill import EventSpill
from pipeline.export.geopackage import (
    add_area_ha,
    empty_driver_frame,
    write_driver_geopackage_batches,
)
from pipeline.export.summary_map import write_driver_png_batches
from pipeline.mapping.area_of_interest import read_aoi
from pipeline.mapping.event_drivers import (
    IMPUTED,
    bundle_scalars,
    event_driver_probabilities,
    fractions_of,
    imputed_counts,
    imputed_inputs,
)
from pipeline.mapping.fusion_inputs import scalar_names
from pipeline.mapping.parts import part_index, part_provinces
from pipeline.mapping.piece_merge import driver_fields, drop_small_events
from pipeline.mapping.seam_stream import stream_events

#: The GeoPackage name of a national (``mapping.all``) run.
NATIONAL_NAME = "indonesia"


#: Layer metadata item holding the lattice of the loss pixels the events were cut from, so
#: a reference sample can draw those pixels (``pipeline.accuracy.loss_pixel_grid``).
LOSS_GRID_KEY = "loss_pixel_grid"


def layer_provenance(run_id: str, model_id: str, config_json: str,
                     lossyear: Path | None = None) -> dict[str, str]:
    """The metadata every driver-map layer carries: which run, model, config and packages,
    and (given the ``lossyear`` raster) the loss pixels' lattice."""
    out = {
        "run_id": run_id, "model_id": model_id, "created": datetime.now(UTC).isoformat(),
        "config": config_json, "package_versions": json.dumps(package_versions()),
        "tile_rule": "UTM zone tiles of 332 px at 15 m; pixels by centre; see pipeline/mapping",
    }
    if lossyear is not None:
        with rasterio.open(lossyear) as src:
            out[LOSS_GRID_KEY] = json.dumps({"crs": src.crs.to_string(),
                                             "transform": list(src.transform)[:6]})
    return out


@dataclass(frozen=True)
class MapOutputs:
    """What the map writes beside each GeoPackage, and its title's years."""

    years: tuple[int, int]
    min_event_pixels: int = 1
    driver_raster: bool = False
    dominant_grid: bool = False


def parts_by_province(parts: list[Path]) -> dict[str, list[Path]]:
    """The finished parts holding pieces of each province (a border tile serves both)."""
    found: dict[str, list[Path]] = {}
    for path in parts:
        for province in part_provinces(path):
            found.setdefault(province, []).append(path)
    return found


def province_event_batches(index: pd.DataFrame, province: str, min_pixels: int, bundle: Path,
                           area: BaseGeometry | None = None,
                           batch_pieces: int | None = None) -> Iterator[gpd.GeoDataFrame]:
    """One province's events, a batch at a time: its pieces in the parts of ``index``
    (``parts.part_index``) merged into events, speckle dropped, with the drivers
    ``bundle`` gives them (its fusion head included) and their areas. Events with no
    usable imagery keep ``driver_code`` 0 (never a guessed driver). Batches hold about
    ``batch_pieces`` pieces (default ``seam_stream.BATCH_PIECES``)."""
    features = bundle_scalars(bundle)
    for merged in stream_events(index, province, scalar_names(features), area, batch_pieces):
        events = drop_small_events(merged, min_pixels)
        if events.empty:
            continue
        events[IMPUTED] = imputed_inputs(events, features)
        yield add_area_ha(driver_fields(events, event_driver_probabilities(events, bundle)))


def province_events(parts: list[Path], province: str, min_pixels: int, bundle: Path,
                    aoi: BaseGeometry | None = None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """One province's events as two whole frames: the mappable events and those with no
    usable imagery (kept out of the driver layer but counted in the summary and listed in
    the layer's metadata). For tests and small maps: a publish streams."""
    batches = list(province_event_batches(part_index(parts), province, min_pixels, bundle,
                                          aoi))
    if not batches:
        return empty_driver_frame(), empty_driver_frame()
    events = gpd.GeoDataFrame(pd.concat(batches, ignore_index=True), crs="EPSG:4326")
    blind = events["driver_code"] == 0
    return events[~blind].reset_index(drop=True), events[blind].reset_index(drop=True)


def publish_driver_maps(parts: list[Path], bundle: Path, provinces: list[str],
                        aoi: Path | None, national: bool, out_dir: Path,
                        provenance: dict[str, str], outputs: MapOutputs,
                        events_path: Path) -> dict[str, list[str]]:
    """Write one GeoPackage per province, or one for the AOI, plus a national one when
    ``national``, with the drivers ``bundle`` (the one that made the parts) gives the
    events; ``provenance`` (its ``run_id`` too) goes into each layer's metadata. Every
    event (those without imagery included, ``driver_code`` 0) is saved (atomically) as
    GeoParquet at ``events_path`` for the run summary.

    Returns the paths alone, so a Dask worker can run it and send back a few names
    instead of the events; memory holds a batch of events, not the map.
    """
    index, features = part_index(parts), bundle_scalars(bundle)
    outline = read_aoi(aoi) if aoi is not None else None
    area = outline.union_all() if outline is not None else None
    chosen = provinces if area is None else sorted(set(index["province"]))
    spill_dir = temp_sibling(Path(events_path))
    spill_dir.mkdir(parents=True)
    try:
        spill, imputed = EventSpill(spill_dir), {}
        written, extras = [], []
        for province in chosen:
            imputed[province] = Counter()
            for events in province_event_batches(index, province, outputs.min_event_pixels,
                                                 bundle, area):
                # Events without imagery carry no run id, as before the writer streamed.
                events["run_id"] = np.where(events["driver_code"] > 0, provenance["run_id"],
                                            None)
                imputed[province].update(imputed_counts(events, features))
                spill.add(province, events)
            if area is None:
                path = Path(out_dir) / f"{slug(province)}.gpkg"
                written.append(_write_one(spill, [province], path, province, provenance,
                                          fractions_of(imputed[province], features), features))
                extras += write_side_outputs(spill, [province], path,
                                             select_provinces([province]), outputs)
        if area is not None or national:
            name = Path(aoi).stem if aoi is not None else NATIONAL_NAME
            path = Path(out_dir) / f"{slug(name)}.gpkg"
            total = sum(imputed.values(), Counter())
            written.append(_write_one(spill, chosen, path, name, provenance,
                                      fractions_of(total, features), features))
            extras += write_side_outputs(spill, chosen, path, outline if outline is not None
                                         else select_provinces(provinces), outputs)
        spill.write_events(Path(events_path))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    return {"geopackages": [str(p) for p in written], "extras": [str(p) for p in extras],
            "events": [str(events_path)]}


def write_driver_maps(parts: list[Path], bundle: Path, provinces: list[str], aoi: Path | None,
                      national: bool, out_dir: Path, provenance: dict[str, str],
                      outputs: MapOutputs) -> tuple[list[Path], list[Path], gpd.GeoDataFrame]:
    """``publish_driver_maps``, with every event loaded back into one frame (for tests and
    small maps): returns the GeoPackages, the side outputs and the events."""
    with tempfile.TemporaryDirectory(prefix="forestnet-events-") as folder:
        events_path = Path(folder) / "events.parquet"
        written = publish_driver_maps(parts, bundle, provinces, aoi, national, out_dir,
                                      provenance, outputs, events_path)
        events = gpd.read_parquet(events_path)
    return ([Path(p) for p in written["geopackages"]], [Path(p) for p in written["extras"]],
            events)


def _write_one(spill: EventSpill, keys: list[str], path: Path, name: str,
               provenance: dict[str, str], missing: dict[str, float],
               features: tuple[str, ...]) -> Path:
    # How much of each fusion input was imputed: a reader of the layer can tell a map made
    # from its inputs from one made mostly from training means.
    imputed = {"fusion_inputs_missing_fraction": json.dumps(missing)} if features else {}
    return write_driver_geopackage_batches(spill.layers(keys), path, metadata={
        **provenance, "province": name,
        "events_without_imagery": ",".join(spill.blind_ids(keys)), **imputed})


def write_side_outputs(spill: EventSpill, keys: list[str], gpkg: Path,
                       outline: gpd.GeoDataFrame | None, outputs: MapOutputs) -> list[Path]:
    """The quick-look PNG beside a GeoPackage, and the optional COG and 1 km grid, from
    the spilled mapped events of ``keys``, a batch at a time."""
    first, last = outputs.years
    bounds = spill.bounds(keys)
    written = [write_driver_png_batches(
        spill.frames(keys, ["driver", "driver_code", "area_ha"]), outline,
        gpkg.with_suffix(".png"), f"{gpkg.stem}: forest loss drivers {first}-{last}",
        bounds=bounds)]
    if outputs.driver_raster and bounds is not None:
        # The raster covers the mapped events, not the whole province: a national run
        # would otherwise write province-sized rasters of nodata.
        written.append(write_driver_cog_batches(
            spill.frames(keys, ["driver_code", "confidence"]),
            gpkg.with_name(f"{gpkg.stem}-drivers.tif"), grid=lonlat_raster_grid(bounds)))
    if outputs.dominant_grid:
        written.append(write_dominant_grid(
            dominant_driver_grid_batches(spill.frames(keys, ["driver_code"])),
            gpkg.with_name(f"{gpkg.stem}-dominant-1km.gpkg")))
    return [Path(p) for p in written]
