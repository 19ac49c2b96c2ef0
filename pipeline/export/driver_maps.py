"""The map job's one writer: per province (or per AOI, or nationally), the parts of its
tiles merged into events and written as a driver-map GeoPackage with its side outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import rasterio
from shapely.geometry.base import BaseGeometry

from forestnet_model.bundle_meta import package_versions
from pipeline.core.atomic import atomic_output
from pipeline.core.provinces import select_provinces, slug
from pipeline.export.driver_grid import dominant_driver_grid, write_dominant_grid
from pipeline.export.driver_raster import driver_raster_grid, write_driver_cog
from pipeline.export.geopackage import add_area_ha, empty_driver_frame, write_driver_geopackage
from pipeline.export.summary_map import write_driver_png
from pipeline.mapping.area_of_interest import read_aoi
from pipeline.mapping.event_drivers import (
    IMPUTED,
    bundle_scalars,
    event_driver_probabilities,
    imputed_fractions,
    imputed_inputs,
)
from pipeline.mapping.fusion_inputs import scalar_names
from pipeline.mapping.parts import part_provinces, read_pieces
from pipeline.mapping.piece_merge import driver_fields, drop_small_events, merge_pieces

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


def province_events(parts: list[Path], province: str, min_pixels: int, bundle: Path,
                    aoi: BaseGeometry | None = None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """One province's pieces merged into events, with the drivers ``bundle`` gives them
    (its fusion head included) and their areas.

    Returns the mappable events and the events with no usable imagery, which are kept out
    of the driver layer (never a guessed driver) but counted in the summary and listed in
    the layer's metadata.
    """
    pieces = read_pieces(parts, province)
    if aoi is not None and len(pieces):
        pieces = gpd.clip(pieces, aoi, keep_geom_type=True)
    if pieces.empty:
        return empty_driver_frame(), empty_driver_frame()
    features = bundle_scalars(bundle)
    events = drop_small_events(merge_pieces(pieces, scalar_names(features)), min_pixels)
    events[IMPUTED] = imputed_inputs(events, features)
    events = add_area_ha(driver_fields(events, event_driver_probabilities(events, bundle)))
    blind = events["driver_code"] == 0
    return events[~blind], events[blind]


def write_driver_maps(parts: list[Path], bundle: Path, provinces: list[str], aoi: Path | None,
                      national: bool, out_dir: Path, provenance: dict[str, str],
                      outputs: MapOutputs) -> tuple[list[Path], list[Path], gpd.GeoDataFrame]:
    """Write one GeoPackage per province, or one for the AOI, plus a national one when
    ``national``, with the drivers ``bundle`` (the one that made the parts) gives the
    events; ``provenance`` (its ``run_id`` too) goes into each layer's metadata.
    Returns the GeoPackages, the side outputs and every event (those without
    imagery included, ``driver_code`` 0) for the run summary."""
    by_province, features = parts_by_province(parts), bundle_scalars(bundle)
    area = read_aoi(aoi).union_all() if aoi is not None else None
    written, extras, frames, blinds = [], [], [], []
    for province in provinces if area is None else sorted(by_province):
        events, blind = province_events(by_province.get(province, []), province,
                                        outputs.min_event_pixels, bundle, area)
        events = events.assign(run_id=provenance["run_id"])
        frames.append(events)
        blinds.append(blind)
        if area is None:
            path = out_dir / f"{slug(province)}.gpkg"
            written.append(_write_one(events, blind, path, province, provenance, features))
            extras += write_side_outputs(events, path, select_provinces([province]), outputs)
    merged, blind = _concat(frames), _concat(blinds)
    if area is not None or national:
        name = Path(aoi).stem if aoi is not None else NATIONAL_NAME
        path = out_dir / f"{slug(name)}.gpkg"
        written.append(_write_one(merged, blind, path, name, provenance, features))
        outline = read_aoi(aoi) if aoi is not None else select_provinces(provinces)
        extras += write_side_outputs(merged, path, outline, outputs)
    return written, extras, gpd.GeoDataFrame(pd.concat([merged, blind], ignore_index=True),
                                             crs="EPSG:4326")



def publish_driver_maps(parts: list[Path], bundle: Path, provinces: list[str],
                        aoi: Path | None, national: bool, out_dir: Path,
                        provenance: dict[str, str], outputs: MapOutputs,
                        events_path: Path) -> dict[str, list[str]]:
    """``write_driver_maps``, with every event saved (atomically) as GeoParquet at
    ``events_path``; returns the paths alone, so a Dask worker can run it and send back
    a few names instead of the events."""
    gpkgs, extras, events = write_driver_maps(parts, bundle, provinces, aoi, national,
                                              out_dir, provenance, outputs)
    with atomic_output(Path(events_path)) as tmp:
        events.to_parquet(tmp)
    return {"geopackages": [str(p) for p in gpkgs], "extras": [str(p) for p in extras],
            "events": [str(events_path)]}

def _write_one(events: gpd.GeoDataFrame, blind: gpd.GeoDataFrame, path: Path, name: str,
               provenance: dict[str, str], features: tuple[str, ...]) -> Path:
    # How much of each fusion input was imputed: a reader of the layer can tell a map made
    # from its inputs from one made mostly from training means.
    imputed = {"fusion_inputs_missing_fraction": json.dumps(imputed_fractions(events, features))
               } if features else {}
    return write_driver_geopackage(events, path, metadata={
        **provenance, "province": name, "events_without_imagery": ",".join(blind["event_id"]),
        **imputed})


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    if not frames:
        return empty_driver_frame()
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")


def write_side_outputs(events: gpd.GeoDataFrame, gpkg: Path, outline: gpd.GeoDataFrame | None,
                       outputs: MapOutputs) -> list[Path]:
    """The quick-look PNG beside a GeoPackage, and the optional COG and 1 km grid."""
    first, last = outputs.years
    written = [write_driver_png(events, outline, gpkg.with_suffix(".png"),
                                f"{gpkg.stem}: forest loss drivers {first}-{last}")]
    if outputs.driver_raster and len(events):
        # The raster covers the mapped events, not the whole province: a national run
        # would otherwise write province-sized rasters of nodata.
        written.append(write_driver_cog(events, gpkg.with_name(f"{gpkg.stem}-drivers.tif"),
                                        grid=driver_raster_grid(events)))
    if outputs.dominant_grid:
        written.append(write_dominant_grid(dominant_driver_grid(events),
                                           gpkg.with_name(f"{gpkg.stem}-dominant-1km.gpkg")))
    return [Path(p) for p in written]
