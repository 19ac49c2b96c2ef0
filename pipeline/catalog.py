"""The scene index (``<store>/index.parquet``, GeoParquet) and queries over it.

One row per scene: scene_id, product, level, acquired, path, row, epsg, cloud_cover,
sun_elevation, footprint (EPSG:4326), status, error. The index is written by one process
(the flow), atomically, after the per-scene tasks report back.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor used by scene_geobox)
import xarray as xr
from shapely.geometry.base import BaseGeometry

from pipeline.atomic import atomic_output
from pipeline.grid import geobox_from_rio

INDEX_NAME = "index.parquet"
INDEX_COLUMNS = [
    "scene_id", "product", "level", "acquired", "path", "row", "epsg", "cloud_cover",
    "sun_elevation", "status", "error", "source",
]


def open_scene(store: Path, scene_id: str) -> xr.Dataset:
    """Open one scene group lazily; values decode to reflectance."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(str(store), group=scene_id, consolidated=False, chunks=None)


def scene_geobox(ds: xr.Dataset):
    """The 30 m ``GeoBox`` of an opened scene group."""
    da = ds["multispectral"]
    return geobox_from_rio(da.rio.crs, da.rio.transform(), (da.sizes["y"], da.sizes["x"]))


def pan_geobox(ds: xr.Dataset):
    """The 15 m ``GeoBox`` of an opened scene's pan band, from its stored coordinates."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    x, y = ds["x_pan"].values, ds["y_pan"].values
    rx, ry = float(x[1] - x[0]), float(y[1] - y[0])
    affine = Affine(rx, 0.0, float(x[0]) - rx / 2, 0.0, ry, float(y[0]) - ry / 2)
    return GeoBox((len(y), len(x)), affine, scene_geobox(ds).crs)


def scene_row(store: Path, scene_id: str, status: str, source: str = "") -> dict:
    """Index row of an ingested scene, read back from its group."""
    ds = open_scene(store, scene_id)
    attrs = ds.attrs
    footprint = scene_geobox(ds).extent.to_crs("EPSG:4326").geom
    return {
        "scene_id": scene_id,
        "product": scene_id[:4],
        "level": str(attrs["processing_level"]),
        "acquired": pd.Timestamp(attrs["acquired"]),
        "path": int(attrs["wrs_path"]),
        "row": int(attrs["wrs_row"]),
        "epsg": int(attrs["epsg"]),
        "cloud_cover": float(attrs["cloud_cover"]),
        "sun_elevation": float(attrs["sun_elevation"]),
        "status": status,
        "error": "",
        "source": source,
        "footprint": footprint,
    }


def failed_row(scene_id: str, source: str, error: str) -> dict:
    """Index row recording a scene that could not be ingested."""
    row = {c: None for c in INDEX_COLUMNS}
    row.update(scene_id=scene_id, status="failed", error=error, source=source, footprint=None)
    return row


def write_index(store: Path, rows: Iterable[dict]) -> Path:
    """Merge rows into the store's index (replacing rows with the same scene_id), atomically."""
    store = Path(store)
    new = gpd.GeoDataFrame(list(rows), geometry="footprint", crs="EPSG:4326")
    old = read_index(store) if (store / INDEX_NAME).exists() else None
    if old is not None and len(old):
        old = old[~old["scene_id"].isin(new["scene_id"])]
        frames = [f for f in (old, new) if len(f)]
        merged = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="footprint",
                                  crs="EPSG:4326")
    else:
        merged = new
    merged = merged.sort_values("scene_id").reset_index(drop=True)
    with atomic_output(store / INDEX_NAME) as tmp:
        merged.to_parquet(tmp, index=False)
    return store / INDEX_NAME


def read_index(store: Path) -> gpd.GeoDataFrame:
    """Read the scene index; a clear error when the store has none."""
    path = Path(store) / INDEX_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no scene index; run `forestnet ingest` first")
    return gpd.read_parquet(path)


def query_scenes(
    index: gpd.GeoDataFrame,
    geometry: BaseGeometry,
    start: datetime | None = None,
    end: datetime | None = None,
    max_cloud_cover: float | None = None,
) -> gpd.GeoDataFrame:
    """Ingested scenes whose footprint intersects ``geometry`` (EPSG:4326) in a date range."""
    ok = index[index["status"].isin(["ingested", "skipped"])]
    ok = ok[ok.intersects(geometry)]
    if start is not None:
        ok = ok[ok["acquired"] >= pd.Timestamp(start)]
    if end is not None:
        ok = ok[ok["acquired"] <= pd.Timestamp(end)]
    if max_cloud_cover is not None:
        ok = ok[ok["cloud_cover"] <= max_cloud_cover]
    return ok.sort_values(["cloud_cover", "scene_id"])
