"""The scene index (``<store>/index.parquet``, GeoParquet) and queries over it.

One row per scene and source: scene_id, product, level, acquired, path, row, epsg,
cloud_cover, sun_elevation, clear_fraction, footprint (EPSG:4326, of the part stored),
status, error, source, part (the window of the product's files the group holds).
The index is written by one process (the flow), atomically, as the per-scene tasks report
back. ``window_clear_fraction`` reads the clear fraction of one window of a stored scene.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from shapely.geometry.base import BaseGeometry

from pipeline.core.atomic import atomic_output
from pipeline.ingest.landsat import clear_fraction
from pipeline.ingest.scene_grids import scene_geobox

INDEX_NAME = "index.parquet"
INDEX_COLUMNS = [
    "scene_id", "product", "level", "acquired", "path", "row", "epsg", "cloud_cover",
    "sun_elevation", "clear_fraction", "status", "error", "source", "part",
]
#: Columns ``read_index`` derives from the others: never stored, so never stale.
DERIVED_COLUMNS = ["pan_partner"]
#: Statuses of scenes that are in the store.
OK_STATUSES = ("ingested", "skipped")


def open_scene(store: Path, scene_id: str) -> xr.Dataset:
    """Open one scene group lazily; values decode to reflectance."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(str(store), group=scene_id, consolidated=False, chunks=None)



def scene_row(store: Path, scene_id: str, status: str, source: str = "") -> dict:
    """Index row of an ingested scene, read back from its group."""
    ds = open_scene(store, scene_id)
    return row_from_attrs(scene_id, ds.attrs, scene_geobox(store, scene_id), status, source)


def row_from_attrs(
    scene_id: str, attrs: dict, geobox: GeoBox, status: str, source: str = ""
) -> dict:
    """Index row from a scene group's attributes and its 30 m grid."""
    footprint = geobox.extent.to_crs("EPSG:4326").geom
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
        "clear_fraction": float(attrs.get("clear_fraction", np.nan)),
        "status": status,
        "error": "",
        "source": source,
        # The window of the product's files the group holds: "row,col,rows,cols".
        "part": ",".join(str(v) for v in attrs.get("part") or (0, 0, *geobox.shape)),
        "footprint": footprint,
    }


def failed_row(scene_id: str, source: str, error: str) -> dict:
    """Index row recording a scene that could not be ingested."""
    row = {c: None for c in INDEX_COLUMNS}
    row.update(scene_id=scene_id, status="failed", error=error, source=source, footprint=None)
    return row


def write_index(store: Path, rows: Iterable[dict]) -> Path:
    """Merge rows into the store's index, atomically.

    A new row replaces the old rows of its scene_id, and the old failed rows of its
    source; but a failure (a duplicate, say) never hides the scene ingested from another
    source, so the index can hold one good row and failed rows under one scene_id.
    """
    store = Path(store)
    new = gpd.GeoDataFrame(list(rows), geometry="footprint", crs="EPSG:4326")
    old = read_index(store) if (store / INDEX_NAME).exists() else None
    if old is not None and len(old):
        old = old[~_replaced(old, new)]
        frames = [f for f in (old, new) if len(f)]
        merged = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="footprint",
                                  crs="EPSG:4326")
    else:
        merged = new
    merged = merged.drop(columns=DERIVED_COLUMNS, errors="ignore")
    merged = merged.sort_values("scene_id").reset_index(drop=True)
    with atomic_output(store / INDEX_NAME) as tmp:
        merged.to_parquet(tmp, index=False)
    return store / INDEX_NAME


def _replaced(old: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """Which old rows the new rows replace (see ``write_index``)."""
    drop = np.zeros(len(old), dtype=bool)
    old_ok = old["status"].isin(OK_STATUSES).to_numpy()
    old_failed = (old["status"] == "failed").to_numpy()
    for row in new.itertuples(index=False):
        same_id = (old["scene_id"] == row.scene_id).to_numpy()
        if row.status == "failed":
            # Not in place: a comparison's to_numpy() may be a read-only view.
            same_id = same_id & ~(old_ok & (old["source"] != row.source).to_numpy())
        same_source = (old["source"] == row.source).to_numpy() & old_failed & bool(row.source)
        drop |= same_id | same_source
    return drop


def is_complete(store: Path) -> bool:
    """Whether the scene store has its index: written atomically after each ingest."""
    return (Path(store) / INDEX_NAME).exists()


def read_index(store: Path) -> gpd.GeoDataFrame:
    """Read the scene index, with each Level-2 scene's ``pan_partner`` (:func:`pan_partners`,
    "" where none); a clear error when the store has none."""
    path = Path(store) / INDEX_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no scene index; run `forestnet ingest` first")
    index = gpd.read_parquet(path).drop(columns=DERIVED_COLUMNS, errors="ignore")
    if "part" not in index:  # an index written before parts: every group is whole
        index["part"] = ""
    partners = pan_partners(index, index)
    # Found once here: chip building asks for the partners of every event's candidates.
    index["pan_partner"] = [partners.get(sid, "") for sid in index["scene_id"]]
    return index


def stored_scene_ids(index: pd.DataFrame | None) -> dict[str, str]:
    """Source -> scene id of every source the index records as in the store."""
    if index is None or not len(index):
        return {}
    ok = index[index["status"].isin(OK_STATUSES)]
    return dict(zip(ok["source"].astype(str), ok["scene_id"].astype(str), strict=True))


def ingested_scene_ids(store: Path) -> list[str]:
    """Scenes the store's index holds as ingested; [] without an index."""
    if not is_complete(store):
        return []
    frame = pd.read_parquet(Path(store) / INDEX_NAME, columns=["scene_id", "status"])
    return sorted(frame.loc[frame["status"].isin(OK_STATUSES), "scene_id"].astype(str))


def query_scenes(
    index: gpd.GeoDataFrame,
    geometry: BaseGeometry,
    start: datetime | None = None,
    end: datetime | None = None,
    max_cloud_cover: float | None = None,
    level: str | None = None,
) -> gpd.GeoDataFrame:
    """Ingested scenes whose footprint intersects ``geometry`` (EPSG:4326) in a date range,
    of processing ``level`` ("L1", "L2": a prefix) when given; least cloudy first (then by
    scene id). The rows of :func:`scene_rows`."""
    return index.iloc[scene_rows(index, geometry, start, end, max_cloud_cover, level)]


def scene_rows(
    index: gpd.GeoDataFrame,
    geometry: BaseGeometry,
    start: datetime | None = None,
    end: datetime | None = None,
    max_cloud_cover: float | None = None,
    level: str | None = None,
) -> np.ndarray:
    """Positions in ``index`` of the scenes :func:`query_scenes` selects, in its order.

    Filters are numpy masks: chip building asks this once per event, and chained
    DataFrame filters cost ~8 ms a call, a quarter of a plain read of the event's
    windows; taking the rows out of a GeoDataFrame costs another ~1 ms, which callers
    that only need a column or two skip.
    """
    keep = index["status"].isin(OK_STATUSES).to_numpy().copy()
    acquired = index["acquired"]
    if start is not None:
        keep &= (acquired >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        keep &= (acquired <= pd.Timestamp(end)).to_numpy()
    if max_cloud_cover is not None:
        keep &= (index["cloud_cover"] <= max_cloud_cover).to_numpy()
    if level is not None:
        keep &= np.char.startswith(index["level"].to_numpy(str), level)
    rows = np.flatnonzero(keep)
    footprints = np.asarray(index.geometry.array)[rows]
    rows = rows[shapely.intersects(footprints, geometry)]
    order = np.lexsort((index["scene_id"].to_numpy()[rows],
                        index["cloud_cover"].to_numpy()[rows]))
    return rows[order]


def pan_partners(index: gpd.GeoDataFrame, scenes: pd.DataFrame) -> dict[str, str]:
    """Level-2 scene id -> the ingested Level-1 product of the same acquisition (same
    path, row and date), whose B8 pan sharpens it; scenes without one are left out."""
    if "pan_partner" in scenes:  # rows of a read_index: already found
        return _found_partners(scenes, slice(None))
    ok = index[index["status"].isin(OK_STATUSES)]
    level = ok["level"].astype(str)
    by_acquisition = {_acquisition(r): r.scene_id for r in ok[level.str.startswith("L1")]
                      .itertuples()}
    out = {}
    for r in scenes[scenes["status"].isin(OK_STATUSES)].itertuples():
        partner = by_acquisition.get(_acquisition(r))
        if str(r.level).startswith("L2") and partner is not None:
            out[r.scene_id] = partner
    return out


def pan_partners_at(index: gpd.GeoDataFrame, rows: np.ndarray) -> dict[str, str]:
    """:func:`pan_partners` of the index's ``rows`` (positions, as :func:`scene_rows`
    gives them), without taking the rows out of a read_index frame."""
    if "pan_partner" not in index:  # not from read_index: look them up
        return pan_partners(index, index.iloc[rows])
    return _found_partners(index, rows)


def _found_partners(frame: pd.DataFrame, rows: np.ndarray | slice) -> dict[str, str]:
    pairs = zip(frame["scene_id"].to_numpy()[rows], frame["pan_partner"].to_numpy()[rows],
                strict=True)
    return {sid: pan for sid, pan in pairs if pan}


def _acquisition(row) -> tuple[int, int, object]:
    return int(row.path), int(row.row), pd.Timestamp(row.acquired).date()


def window_clear_fraction(store: Path, scene_id: str, window: BaseGeometry | GeoBox) -> float:
    """Clear fraction of a stored scene inside a lon/lat polygon or a ``GeoBox``.

    Only the QA_PIXEL chunks under the window's bounding box are read. Pixels whose
    centre lies in the window count; fill pixels do not. 0.0 when none is valid.
    """
    import math

    from rasterio.features import geometry_mask
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    from pipeline.ingest.scene_store import read_qa_window

    box = scene_geobox(store, scene_id)
    if isinstance(window, GeoBox):
        area = window.extent.to_crs(box.crs)
    else:
        area = Geometry(window, "EPSG:4326").to_crs(box.crs)
    h, w = box.shape
    # Whole pixels covering the bounding box, clipped to the scene.
    bounds = from_bounds(*area.boundingbox, transform=box.affine)
    r0, c0 = max(0, math.floor(bounds.row_off)), max(0, math.floor(bounds.col_off))
    r1 = min(h, math.ceil(bounds.row_off + bounds.height))
    c1 = min(w, math.ceil(bounds.col_off + bounds.width))
    if r1 <= r0 or c1 <= c0:
        return 0.0  # the window misses the scene
    qa = read_qa_window(store, scene_id, slice(r0, r1), slice(c0, c1))
    transform = window_transform(Window(c0, r0, c1 - c0, r1 - r0), box.affine)
    inside = geometry_mask([area.geom], out_shape=qa.shape, transform=transform, invert=True)
    return clear_fraction(qa, within=inside)
