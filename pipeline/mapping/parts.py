"""Per-tile map parts: where they live and how the one writer reads them back.

A part holds one tile's pieces with their region-mean logits. Its path derives from
everything that decides its content (tile, loss years, model bundle, inputs' version,
chip settings), never from the province selection or the run, so a province mapped later
reuses the border tiles an earlier run already predicted, and a rerun skips finished
tiles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq

from pipeline.core.errors import ForestNetError
from pipeline.core.tile_lattice import MapTile
from pipeline.mapping.fusion_inputs import FUSION_COLUMNS
from pipeline.mapping.loss_pieces import PIECE_COLUMNS, empty_pieces
from pipeline.mapping.piece_merge import LOGIT_COLUMNS

PART_COLUMNS = [*PIECE_COLUMNS[:-1], *LOGIT_COLUMNS, "logit_weight", *FUSION_COLUMNS,
                "scene_ids", "scene_dates", "model_id", "geometry"]
#: Bumped when PART_COLUMNS or how parts are computed change: it is part of the parts key,
#: so older parts are not reused (3: tiles read with a halo that holds every event window,
#: one composite per group of loss years with the same scenes; 4: composites cut from
#: the lattice cells' composites).
PART_FORMAT = 4


class MapPartError(ForestNetError, ValueError):
    """A part file that cannot be read or lacks columns; the message names the file."""


def file_version(path: Path | None) -> str:
    """Cheap identity of an input file: name, size and modification time (not content:
    national rasters are tens of GB)."""
    if path is None:
        return "-"
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def parts_key(years: tuple[int, int], model_id: str, inputs: dict[str, str],
              settings: dict) -> str:
    """Hash naming the parts folder of one (years, model, inputs, settings) combination."""
    blob = json.dumps({"years": list(years), "model": model_id, "inputs": inputs,
                       "settings": settings, "format": PART_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def part_path(parts_dir: Path, tile: MapTile) -> Path:
    """``<parts_dir>/z<zone>/<tile_id>.parquet``: one folder per zone keeps listings short."""
    return Path(parts_dir) / f"z{tile.zone:02d}" / f"{tile.tile_id}.parquet"


def part_provinces(path: Path) -> list[str]:
    """Provinces present in a finished part (reads one column only)."""
    try:
        column = pq.read_table(path, columns=["province"]).column("province").to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise MapPartError(f"{path}: unreadable map part ({exc})") from exc
    return sorted(set(column))


def read_pieces(paths: Iterable[Path], province: str | None = None) -> gpd.GeoDataFrame:
    """Pieces of the given parts (of one province, when given), in path order.

    Parts are read as plain Arrow tables and their geometries decoded once, together:
    geopandas would parse each file's CRS again (about 30 ms a part, more than the rest
    of the map's writer for a province of tiles).
    """
    tables = []
    for path in sorted(paths, key=str):
        try:
            kwargs = {"filters": [("province", "==", province)]} if province else {}
            table = pq.read_table(path, **kwargs)
        except Exception as exc:  # damaged or foreign files: name the file
            raise MapPartError(f"{path}: unreadable map part ({exc})") from exc
        missing = [c for c in PART_COLUMNS if c not in table.column_names]
        if missing:
            raise MapPartError(f"{path}: map part lacks columns {missing}")
        _check_lon_lat(path, table.schema.metadata or {})
        if table.num_rows:
            tables.append(table.select(PART_COLUMNS).to_pandas())
    if not tables:
        empty = empty_pieces()
        for column in PART_COLUMNS:
            if column not in empty.columns:
                empty[column] = pd.Series(dtype="float64" if "logit" in column else "object")
        return empty[PART_COLUMNS]
    frame = pd.concat(tables, ignore_index=True)
    geometry = gpd.GeoSeries.from_wkb(frame.pop("geometry"), crs="EPSG:4326")
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")[PART_COLUMNS]


def _check_lon_lat(path: Path, metadata: dict[bytes, bytes]) -> None:
    """Refuse a part whose GeoParquet metadata gives its geometry a CRS other than
    longitude/latitude on WGS 84 (no CRS means OGC:CRS84 in GeoParquet)."""
    try:
        geo = json.loads(metadata[b"geo"])
        column = geo["columns"][geo.get("primary_column", "geometry")]
        encoding, crs = str(column.get("encoding", "WKB")), column.get("crs")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MapPartError(f"{path}: map part has no GeoParquet metadata ({exc})") from exc
    if encoding.upper() != "WKB":  # (MapPartError is a ValueError: raised outside the try)
        raise MapPartError(f"{path}: map part geometry is {encoding}, not WKB")
    ident = (crs or {}).get("id", {}) if isinstance(crs, dict) else {}
    if crs is not None and (ident.get("authority"), str(ident.get("code"))) not in _LON_LAT:
        name = crs.get("name", crs) if isinstance(crs, dict) else crs
        raise MapPartError(f"{path}: map part is in {name}, not EPSG:4326")


#: (authority, code) of the CRSs a part may be written in: EPSG:4326 and OGC:CRS84.
_LON_LAT = {("EPSG", "4326"), ("OGC", "CRS84")}
