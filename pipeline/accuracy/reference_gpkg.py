"""Driver maps in, a reference sample GeoPackage out, ready to label in QGIS.

The maps are read as attribute tables only; the geometries of the few events drawn are
read back by feature id and rasterized on the map's loss pixel grid. The sample file holds
the points to label (``reference_points``, opening with a drop-down of reference classes),
the strata with their sizes and sample sizes (``strata``) and the design's provenance in
the point layer's metadata.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors

from pipeline.accuracy.loss_pixel_grid import GRID_METADATA_KEY, LossPixelGrid, map_loss_grid
from pipeline.accuracy.sample_design import (
    ALLOCATIONS,
    DESIGN_FIELDS,
    STRATIFICATIONS,
    Locate,
    SampleDesignError,
    check_choice,
    design_sample,
)
from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.export.geopackage import DRIVER_MAP_LAYER, GEOMETRY_COLUMN, GPKG_VERSION, OUTPUT_CRS
from pipeline.export.qgis_style import edit_form_qml, write_layer_style

logger = logging.getLogger(__name__)

REFERENCE_LAYER = "reference_points"
STRATA_TABLE = "strata"
#: What an interpreter may answer: the four drivers, no loss at all, or unsure.
REFERENCE_CLASSES: tuple[str, ...] = (*DRIVER_CLASSES, "No forest loss", "Unsure")
#: Fields of the point layer, in order, with their dtypes; the last three are to fill in.
REFERENCE_FIELDS: dict[str, str] = {
    "sample_id": "int32", "stratum": "object", "map_driver": "object", "event_id": "object",
    "loss_year": "int32", "province": "object",
    "reference_class": "object", "interpreter": "object", "notes": "object",
}
_FREE_TEXT = ("interpreter", "notes")


@dataclass(frozen=True)
class DriverMaps:
    """Events of one or more driver maps: ``features`` (:data:`DESIGN_FIELDS`, ``map``: the
    position in ``paths``, ``fid``: the feature id there) and each map's loss pixel grid."""

    paths: tuple[Path, ...]
    grids: tuple[LossPixelGrid, ...]
    features: pd.DataFrame


def read_driver_maps(paths: Sequence[Path]) -> DriverMaps:
    """Read the events of driver map GeoPackages (attributes only; no geometry).

    A map with no events is skipped with a warning, unless no map has any; an event in two
    maps (a province map with the national one) is an error, as it would count twice.
    """
    paths = tuple(Path(p) for p in paths)
    frames, grids = [], []
    for index, path in enumerate(paths):
        frame, grid = _read_map(path)
        frames.append(frame.assign(map=index))
        grids.append(grid)
    if all(frame.empty for frame in frames):
        raise SampleDesignError(f"{', '.join(map(str, paths))}: the map holds no loss events; "
                                "nothing to sample")
    for path, frame in zip(paths, frames, strict=True):
        if frame.empty:
            logger.warning("%s: the map holds no loss events; skipping it", path)
    features = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    if (twice := features["event_id"].duplicated(keep=False)).any():
        event = features.loc[twice, "event_id"].iloc[0]
        where = [str(paths[i]) for i in features.loc[features["event_id"] == event, "map"]]
        raise SampleDesignError(f"event {event} is in {' and '.join(where)}: pass each area "
                                "once (a province map or the national one, not both)")
    return DriverMaps(paths, tuple(grids), features)


def _read_map(path: Path) -> tuple[pd.DataFrame, LossPixelGrid]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such driver map")
    not_a_map = f"{path} is not a driver map GeoPackage"
    try:
        layers = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError:
        raise SampleDesignError(f"{not_a_map}: GDAL cannot open it") from None
    if DRIVER_MAP_LAYER not in layers[:, 0]:
        raise SampleDesignError(f"{not_a_map}: it has no {DRIVER_MAP_LAYER!r} layer")
    info = pyogrio.read_info(path, layer=DRIVER_MAP_LAYER)
    if missing := [f for f in DESIGN_FIELDS if f not in set(info["fields"])]:
        raise SampleDesignError(f"{not_a_map}: its layer lacks {', '.join(missing)}")
    try:
        grid = map_loss_grid(info["layer_metadata"], path)
    except ValueError as exc:
        raise SampleDesignError(f"{path}: {exc}") from None
    frame = pyogrio.read_dataframe(path, layer=DRIVER_MAP_LAYER, columns=list(DESIGN_FIELDS),
                                   read_geometry=False, fid_as_index=True)
    frame = frame.rename_axis("fid").reset_index()
    return frame.astype({"event_id": object, "province": object, "driver": object}), grid


def map_locator(maps: DriverMaps) -> Locate:
    """A ``locate`` for :func:`design_sample`: reads the drawn events' polygons by feature id
    (one read per map per call) and rasterizes each on its map's grid."""
    features = maps.features

    def locate(rows: np.ndarray, ks: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), 2), np.nan)
        drawn = features.iloc[np.unique(rows)]
        for index, group in drawn.groupby("map"):
            path, grid = maps.paths[int(index)], maps.grids[int(index)]
            shapes = pyogrio.read_dataframe(path, layer=DRIVER_MAP_LAYER, columns=[],
                                            fids=group["fid"].to_numpy(), fid_as_index=True)
            crs = shapes.crs or OUTPUT_CRS
            for row, fid in zip(group.index, group["fid"], strict=True):
                centres = grid.pixel_centres(shapes.geometry.loc[fid], crs)
                hits = np.flatnonzero(rows == row)
                inside = ks[hits] < len(centres)
                out[hits[inside]] = centres[ks[hits[inside]]]
        return out

    return locate


@dataclass(frozen=True)
class SampleDesign:
    """What ``forestnet sample-design`` wrote: the file, its point count and strata table."""

    path: Path
    n_points: int
    strata: pd.DataFrame


def write_sample_design(
    map_paths: Sequence[Path], out: Path, n: int, *, strata: str = "driver",
    allocation: str = "min50", seed: int = 0,
) -> SampleDesign:
    """Design the stratified sample over the maps and write it to ``out`` (atomically)."""
    # Settings first: a typo should not wait for the maps to be read.
    check_choice("--strata", strata, STRATIFICATIONS)
    check_choice("--allocation", allocation, ALLOCATIONS)
    if n < 1:
        raise SampleDesignError(f"the sample size must be at least 1, not {n}")
    maps = read_driver_maps(map_paths)
    points, table = design_sample(maps.features, n, map_locator(maps), strata=strata,
                                  allocation=allocation, seed=seed)
    grids = {str(p): json.loads(g.to_metadata())
             for p, g in zip(maps.paths, maps.grids, strict=True)}
    metadata = {
        "design": "stratified random sample of loss pixels (Olofsson et al. 2014)",
        "maps": json.dumps([str(p) for p in maps.paths]), "n": str(n), "strata": strata,
        "allocation": allocation, "seed": str(seed), GRID_METADATA_KEY: json.dumps(grids),
        "created": datetime.now(UTC).isoformat(),
    }
    write_reference_gpkg(points, table, out, metadata)
    logger.info("wrote %d reference points in %d strata to %s", len(points), len(table), out)
    return SampleDesign(Path(out), len(points), table)


def write_reference_gpkg(
    points: pd.DataFrame, table: pd.DataFrame, out: Path, metadata: dict[str, str]
) -> Path:
    """Write the points (with ``x``, ``y`` in EPSG:4326), the strata table and the QGIS
    edit form to the GeoPackage ``out`` in one atomic step."""
    frame = pd.DataFrame({name: points[name].to_numpy() if name in points else [None] * len(points)
                          for name in REFERENCE_FIELDS}).astype(REFERENCE_FIELDS)
    geometry = gpd.points_from_xy(points["x"], points["y"], crs=OUTPUT_CRS)
    layer = gpd.GeoDataFrame(frame, geometry=geometry, crs=OUTPUT_CRS)
    strata = table[["stratum", "size_ha", "n", "n_pixels"]].astype(
        {"stratum": object, "size_ha": "float64", "n": "int32", "n_pixels": "int64"})
    qml = edit_form_qml({"reference_class": REFERENCE_CLASSES}, text_fields=_FREE_TEXT,
                        read_only=[f for f in REFERENCE_FIELDS if f not in
                                   ("reference_class", *_FREE_TEXT)],
                        field="map_driver", geometry="point")
    with atomic_output(Path(out), suffix=".gpkg") as tmp:
        try:
            # Layer metadata, not dataset metadata: GDAL readers would leave .aux.xml files.
            pyogrio.write_dataframe(
                layer, tmp, layer=REFERENCE_LAYER, driver="GPKG", geometry_type="Point",
                dataset_options={"VERSION": GPKG_VERSION}, layer_metadata=metadata,
                layer_options={"GEOMETRY_NAME": GEOMETRY_COLUMN, "SPATIAL_INDEX": "YES",
                               "DESCRIPTION": "Reference sample: label reference_class"})
            pyogrio.write_dataframe(strata, tmp, layer=STRATA_TABLE, driver="GPKG",
                                    layer_options={"DESCRIPTION": "Strata: mapped loss area "
                                                   "(ha), loss pixels and sample size"})
            write_layer_style(tmp, REFERENCE_LAYER, qml, "reference",
                              "Reference points by mapped driver, with a labelling form")
        finally:  # SQLite and GDAL sidecars never outlive the write
            for suffix in ("-journal", "-wal", "-shm", ".aux.xml"):
                with contextlib.suppress(OSError):
                    Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    return Path(out)
