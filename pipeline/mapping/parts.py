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
from collections.abc import Iterable, Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


def part_index(paths: Sequence[Path]) -> pd.DataFrame:
    """One row per (part, tile, province) with its number of pieces: what a streamed
    writer needs to order and batch the parts.

    Most parts hold one tile of one province, which their Parquet footer tells (column
    statistics: min == max); only the others (border tiles) have two columns read.
    """
    rows, mixed = [], []
    for path in paths:
        known = _footer_index(path)
        if known is None:
            mixed.append(path)
        elif known[2]:
            rows.append((Path(path), *known))
    for path in mixed:
        table = _read_part(path, columns=["tile_id", "province"])
        counts = table.group_by(["tile_id", "province"]).aggregate([([], "count_all")])
        columns = (counts.column(c).to_pylist() for c in ("tile_id", "province", "count_all"))
        rows += [(Path(path), *row) for row in zip(*columns, strict=True)]
    return pd.DataFrame(rows, columns=["path", "tile_id", "province", "n_pieces"])


def _footer_index(path: Path) -> tuple[str, str, int] | None:
    """(tile id, province, pieces) of a part from its footer alone; None when a column
    holds several values (or has no statistics)."""
    try:
        meta = pq.read_metadata(path)
    except Exception as exc:  # damaged or foreign files (pyarrow raises several types)
        raise MapPartError(f"{path}: unreadable map part ({exc})") from exc
    if meta.num_rows == 0:
        return "", "", 0
    values = []
    for name in ("tile_id", "province"):
        found = set()
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            column = _leaf(group, name)
            stats = column.statistics if column is not None else None
            if stats is None or not stats.has_min_max or stats.null_count:
                return None
            found |= {stats.min, stats.max}
        if len(found) != 1:
            return None
        values.append(found.pop())
    return values[0], values[1], meta.num_rows


def _leaf(group: pq.RowGroupMetaData, name: str) -> pq.ColumnChunkMetaData | None:
    """The column chunk of a top-level column; first where ``PART_COLUMNS`` puts it (the
    leading columns are flat, so leaf and column positions agree there)."""
    at = PART_COLUMNS.index(name)
    if at < group.num_columns and group.column(at).path_in_schema == name:
        return group.column(at)
    return next((group.column(i) for i in range(group.num_columns)
                 if group.column(i).path_in_schema == name), None)


def read_pieces(paths: Iterable[Path], province: str | None = None) -> gpd.GeoDataFrame:
    """Pieces of the given parts (of one province, when given), in path order.

    Parts are read as plain Arrow tables, joined, and converted and their geometries
    decoded once, together: geopandas would parse each file's CRS again (about 30 ms a
    part, more than the rest of the map's writer for a province of tiles).
    """
    tables = []
    for path in sorted(paths, key=str):
        table = _read_part(path)
        names = set(table.schema.names)
        missing = [c for c in PART_COLUMNS if c not in names]
        if missing:
            raise MapPartError(f"{path}: map part lacks columns {missing}")
        _check_lon_lat(path, table.schema.metadata or {})
        if table.num_rows:
            # Each file's pandas metadata describes its own index: drop it before joining.
            tables.append(table.select(PART_COLUMNS).replace_schema_metadata(None))
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    if table is not None and province is not None:
        table = table.filter(pc.equal(table["province"], province))
    if table is None or not table.num_rows:
        empty = empty_pieces()
        for column in PART_COLUMNS:
            if column not in empty.columns:
                empty[column] = pd.Series(dtype="float64" if "logit" in column else "object")
        return empty[PART_COLUMNS]
    frame = table.to_pandas()
    geometry = gpd.GeoSeries.from_wkb(frame.pop("geometry"), crs="EPSG:4326")
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")[PART_COLUMNS]


def _read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.ParquetFile(path).read(columns=columns)
    except Exception as exc:  # damaged or foreign files (pyarrow raises several types)
        raise MapPartError(f"{path}: unreadable map part ({exc})") from exc


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
