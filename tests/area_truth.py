"""Reporting area by driver on a sample world, whose truth is known.

The analyst's workflow, run as a user runs it: ``forestnet sample-design`` over the driver
maps, the points labelled (here from the world's ``truth/loss_driver.tif``, as an
interpreter in QGIS would: the GeoPackage's ``reference_class`` is updated in place), then
``forestnet area``. Beside it, the true area of each driver over the same population (the
maps' loss pixels). Shared by the slow coverage test and ``bench/bench_area.py``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.features
import shapely
from typer.testing import CliRunner

from flows.cli.app import app
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.export.geopackage import DRIVER_MAP_LAYER
from pipeline.sample_world.gfc import TRUTH_PATH

REFERENCE_LAYER = "reference_points"
NO_DRIVER = "No forest loss"


def label_from_truth(sample: Path, world: Path) -> int:
    """Fill ``reference_class`` of every point from the world's truth; the points labelled."""
    points = pyogrio.read_dataframe(sample, layer=REFERENCE_LAYER)
    with rasterio.open(world / TRUTH_PATH) as src:
        codes = np.array([v[0] for v in src.sample(zip(points.geometry.x, points.geometry.y,
                                                        strict=True))])
    names = [DRIVER_CLASSES[c - 1] if c > 0 else NO_DRIVER for c in codes]
    with contextlib.closing(sqlite3.connect(sample)) as db, db:
        with_gpkg_geometry_functions(db)
        db.executemany(f"UPDATE {REFERENCE_LAYER} SET reference_class = ?, interpreter = ? "
                       "WHERE sample_id = ?",
                       [(name, "truth", int(i)) for name, i in
                        zip(names, points["sample_id"], strict=True)])
    return len(points)


def with_gpkg_geometry_functions(db: sqlite3.Connection) -> None:
    """The SQL functions a GeoPackage's R-tree triggers call on every row update (GDAL and
    QGIS bring them; plain sqlite3 does not), over GeoPackage geometry blobs."""

    def geometry(blob: bytes | None) -> shapely.Geometry | None:
        if blob is None:
            return None
        flags = blob[3]
        envelope = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(flags >> 1) & 7]
        return shapely.from_wkb(bytes(blob[8 + envelope:]))

    def bound(k: int):
        return lambda blob: None if blob is None else float(geometry(blob).bounds[k])

    db.create_function("ST_IsEmpty", 1, lambda b: None if b is None else int(
        bool(b[3] & 0x10) or geometry(b).is_empty), deterministic=True)
    for name, k in (("ST_MinX", 0), ("ST_MinY", 1), ("ST_MaxX", 2), ("ST_MaxY", 3)):
        db.create_function(name, 1, bound(k), deterministic=True)


def true_areas(maps: list[Path], world: Path) -> pd.Series:
    """Hectares of each true driver over the maps' loss pixels (equal-area CRS)."""
    mapped = pd.concat([pyogrio.read_dataframe(m, layer=DRIVER_MAP_LAYER) for m in maps])
    with rasterio.open(world / TRUTH_PATH) as src:
        truth, transform = src.read(1), src.transform
    population = rasterio.features.rasterize(
        ((g, 1) for g in mapped.geometry), out_shape=truth.shape, transform=transform,
        fill=0, dtype="uint8") > 0
    rows, cols = np.nonzero(population)
    west, north = transform.c + cols * transform.a, transform.f + rows * transform.e
    pixels = gpd.GeoSeries(shapely.box(west, north + transform.e, west + transform.a, north),
                           crs="EPSG:4326")
    hectares = pixels.to_crs(EQUAL_AREA_CRS).area.to_numpy() / 1e4
    codes = truth[rows, cols]
    names = [NO_DRIVER, *DRIVER_CLASSES]
    return pd.Series({names[k]: float(hectares[codes == k].sum()) for k in range(len(names))
                      if (codes == k).any() or k > 0})


def area_run(maps: list[Path], world: Path, truth: pd.Series, folder: Path, seed: int,
             n: int = 400) -> pd.DataFrame:
    """sample-design -> labels from the truth -> area, through the CLI; per driver: the
    mapped area, the estimate with its 95% CI, and the true area (ha, from
    :func:`true_areas`)."""
    runner = CliRunner()
    folder.mkdir(parents=True, exist_ok=True)
    sample = folder / f"reference_sample_{seed}.gpkg"
    map_args = [arg for m in maps for arg in ("--map", str(m))]
    design = runner.invoke(app, ["sample-design", *map_args, "--n", str(n), "--seed", str(seed),
                                 "--out", str(sample)])
    if design.exit_code:
        raise RuntimeError(f"sample-design failed: {design.output}")
    label_from_truth(sample, world)
    out = folder / f"area_{seed}"
    area = runner.invoke(app, ["area", "--sample", str(sample), "--out", str(out)])
    if area.exit_code:
        raise RuntimeError(f"area failed: {area.output}")
    table = pd.read_csv(out / "area_estimates.csv").set_index("class")
    table["true_area"] = truth.reindex(table.index).fillna(0.0)
    table["covered"] = (table["ci95_low"] <= table["true_area"]) & (
        table["true_area"] <= table["ci95_high"])
    return table.reindex([c for c in DRIVER_CLASSES if c in table.index])
