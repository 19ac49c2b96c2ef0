"""The driver map GeoPackage: one QGIS-ready file per province, written atomically.

A GeoPackage has one writer: the map parts are merged first (``pipeline.mapping.parts``),
then :func:`write_driver_geopackage` writes ``<province>.gpkg`` with the driver layer, the
area table, a QGIS default style and the run provenance. Areas are always computed in the
project's equal-area CRS. :func:`write_driver_geopackage_batches` writes the same file
from features that arrive in batches (a national map): the layer is written in one GDAL
session from a stream of Arrow batches and the area table is summed batch by batch, so
memory holds one batch, never the map.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely

from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS, driver_code
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.export.qgis_style import categorized_qml, write_layer_style

logger = logging.getLogger(__name__)

DRIVER_MAP_LAYER = "forest_loss_drivers"
AREA_TABLE = "driver_area_by_year"
#: Geometry column name in the GeoPackage (GDAL's default, set explicitly so it never drifts).
GEOMETRY_COLUMN = "geom"
OUTPUT_CRS = "EPSG:4326"
STYLE_NAME = "driver"
_LAYER_DESC = "Forest loss events with their predicted deforestation driver"

#: Fields of the driver layer, in order, with their dtypes (the map's public contract).
DRIVER_MAP_FIELDS: dict[str, str] = {
    "event_id": "str",
    "province": "str",
    "loss_year": "int32",
    "driver": "str",
    "driver_code": "int16",
    **{f"p_{key}": "float64" for key in DRIVER_KEYS},
    "confidence": "float64",
    "area_ha": "float64",
    "n_pixels": "int32",
    "scene_ids": "str",
    "scene_dates": "str",
    "model_id": "str",
    "run_id": "str",
}

#: Columns of the area table, in order, with their dtypes.
AREA_TABLE_FIELDS: dict[str, str] = {
    "province": "str",
    "year": "int32",
    "driver": "str",
    "area_ha": "float64",
    "n_events": "int32",
}

_ARROW_TYPES = {"str": pa.string(), "int32": pa.int32(), "int16": pa.int16(),
                "float64": pa.float64()}
_FIELD_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in DRIVER_MAP_FIELDS.items()])
#: The driver layer as Arrow: the fields, then the WKB MultiPolygons.
_LAYER_SCHEMA = _FIELD_SCHEMA.append(pa.field(GEOMETRY_COLUMN, pa.binary()))


#: Text fields that must never be null: they key the map and the area table.
_NON_NULL_TEXT = ("event_id", "province", "driver")


def empty_driver_frame() -> gpd.GeoDataFrame:
    """An empty driver-map frame with every field, its dtype and the output CRS."""
    columns = {name: pd.Series([], dtype=_dtype(k)) for name, k in DRIVER_MAP_FIELDS.items()}
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=OUTPUT_CRS), crs=OUTPUT_CRS)


def add_area_ha(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Return a copy of ``gdf`` with ``area_ha`` measured in the equal-area CRS (EPSG:6933).

    Degrees are not a unit of area, and a UTM zone distorts areas away from its meridian;
    Indonesia spans nine zones, so one equal-area CRS keeps every province comparable.
    """
    if gdf.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    out = gdf.copy()
    out["area_ha"] = gdf.geometry.to_crs(EQUAL_AREA_CRS.proj).area.to_numpy() / 10_000.0
    return out


def driver_area_by_year(gdf: pd.DataFrame) -> pd.DataFrame:
    """Total ``area_ha`` and event count per province, loss year and driver, sorted."""
    frame = gdf if "area_ha" in gdf.columns else add_area_ha(gdf)
    keys = ["province", "loss_year", "driver"]
    if frame.empty:
        grouped = pd.DataFrame(columns=list(AREA_TABLE_FIELDS))
    else:
        grouped = (
            pd.DataFrame(frame[[*keys, "area_ha"]])
            .groupby(keys, sort=True)
            .agg(area_ha=("area_ha", "sum"), n_events=("area_ha", "size"))
            .reset_index()
            .rename(columns={"loss_year": "year"})
        )
    return _area_table(grouped)


def sum_area_tables(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Area tables of disjoint sets of events (``driver_area_by_year``) as the one table of
    all of them, so that a streamed writer sums a batch at a time."""
    tables = [t for t in tables if len(t)]
    if len(tables) < 2:
        return _area_table(tables[0] if tables else pd.DataFrame(columns=list(AREA_TABLE_FIELDS)))
    keys = ["province", "year", "driver"]
    return _area_table(pd.concat(tables, ignore_index=True).groupby(keys, sort=True)
                       .agg(area_ha=("area_ha", "sum"), n_events=("n_events", "sum"))
                       .reset_index())


def _area_table(grouped: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({c: grouped[c].astype(_dtype(k)) for c, k in AREA_TABLE_FIELDS.items()})
    return table.sort_values(["province", "year", "driver"], kind="stable").reset_index(drop=True)


def write_driver_geopackage(
    features: gpd.GeoDataFrame, path: Path, *, metadata: Mapping[str, str]
) -> Path:
    """Write the driver map GeoPackage at ``path`` in one atomic step and return ``path``.

    Everything goes into a hidden temp file in the same folder, which is checked and then
    renamed over ``path``; on any failure the temp file is removed and an existing
    ``path`` is left untouched, so readers never see a half-written map.
    """
    table = driver_layer_table(features)  # a bad frame is refused before any file is made
    return _write_geopackage([table], Path(path), _provenance(metadata), batched=False)


def write_driver_geopackage_batches(
    batches: Iterable[pa.Table | gpd.GeoDataFrame], path: Path, *,
    metadata: Mapping[str, str],
) -> Path:
    """:func:`write_driver_geopackage` for features that arrive in ``batches`` (disjoint
    sets of events, each a frame or a :func:`driver_layer_table`): the same file, written
    in bounded memory.

    Each batch is checked as a whole frame would be; ``event_id`` is checked unique across
    batches in the finished file. A failure in any batch (or in producing one) leaves no
    file behind and an existing ``path`` untouched.
    """
    return _write_geopackage(map(_layer_table, batches), Path(path), _provenance(metadata),
                             batched=True)


def driver_layer_table(features: gpd.GeoDataFrame) -> pa.Table:
    """``features`` checked and cast to the map contract (fields and types, EPSG:4326
    MultiPolygons), as the Arrow table the writer streams to GDAL. A publish prepares each
    event once this way, however many GeoPackages it goes into."""
    frame, wkb = _prepare(features)
    table = pa.Table.from_pandas(frame, schema=_FIELD_SCHEMA, preserve_index=False)
    return table.append_column(GEOMETRY_COLUMN, pa.array(wkb, pa.binary()))


def _layer_table(batch: pa.Table | gpd.GeoDataFrame) -> pa.Table:
    if isinstance(batch, gpd.GeoDataFrame):
        return driver_layer_table(batch)
    if not batch.schema.equals(_LAYER_SCHEMA):
        raise TypeError("a batch table is not a driver layer table; make it with "
                        "driver_layer_table()")
    return batch


def _provenance(metadata: Mapping[str, str]) -> dict[str, str]:
    # GDAL stores metadata as KEY=VALUE items, so a key holding '=' would not read back.
    if bad_keys := [k for k in metadata if not k or "=" in k]:
        raise ValueError(f"metadata keys must be non-empty and free of '=': {bad_keys}")
    return {key: str(value) for key, value in metadata.items()}


def _write_geopackage(batches: Iterable[pa.Table], path: Path, provenance: dict[str, str],
                      *, batched: bool) -> Path:
    """The GeoPackage of layer tables, atomically; ``batched``: event ids are checked
    unique across the tables too (each table checked its own)."""
    tables: list[pd.DataFrame] = []

    def tallied() -> Iterator[pa.Table]:
        for batch in batches:
            # Summed as they pass (folded each time, so the table stays small).
            keys = batch.select(["province", "loss_year", "driver", "area_ha"]).to_pandas()
            tables[:] = [sum_area_tables([*tables, driver_area_by_year(keys)])]
            yield batch

    with atomic_output(path, suffix=".gpkg") as tmp:
        try:
            count = _write_layer(tallied(), tmp, provenance)
            _write_area_table(sum_area_tables(tables), tmp)
            write_layer_style(tmp, DRIVER_MAP_LAYER, categorized_qml(), STYLE_NAME,
                              "Forest loss coloured by driver")
            _check_geopackage(tmp, expected_features=count, unique_ids=batched)
        finally:  # SQLite and GDAL sidecars never outlive the write
            _remove_sidecars(tmp)
    logger.info("wrote %d driver polygons to %s", count, path)
    return path


def _dtype(kind: str) -> str:
    return "object" if kind == "str" else kind


def _texts(series: pd.Series) -> pd.Series:
    """A text field as Python strings and None: as :func:`_text` maps each value, with a
    fast path for a column that already holds only strings (and missing values)."""
    if isinstance(series.dtype, pd.StringDtype):  # Arrow-backed text: kept, not copied
        return series
    values = series.astype(object)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values.where(values.notna(), None)
    return series.map(_text).astype(object)


#: Driver name -> code, for checking a whole column at once.
_DRIVER_CODES = {name: driver_code(name) for name in DRIVER_CLASSES}


def _text(value: object) -> str | None:
    """Field value -> text; lists of scene ids or dates become comma-separated strings."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, list | tuple | np.ndarray):
        return ",".join(_text(v) or "" for v in value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _prepare(features: gpd.GeoDataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Validate and cast ``features`` to the map contract: its fields, and its geometry as
    WKB of EPSG:4326 MultiPolygons."""
    if not isinstance(features, gpd.GeoDataFrame):
        raise TypeError(f"features must be a GeoDataFrame, not {type(features).__name__}")
    missing = [name for name in DRIVER_MAP_FIELDS if name not in features.columns]
    if missing:
        raise ValueError(f"driver map features lack required fields: {', '.join(missing)}")
    if features.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    if not features.crs.equals(OUTPUT_CRS):
        features = features.to_crs(OUTPUT_CRS)
    columns: dict[str, pd.Series] = {}
    for name, kind in DRIVER_MAP_FIELDS.items():
        series = features[name]
        if kind == "str":
            series = _texts(series)
        if (nulls := series.isna()).any() and (kind != "str" or name in _NON_NULL_TEXT):
            raise ValueError(f"field {name!r} has nulls (event_ids: {_ids(features, nulls)})")
        columns[name] = pd.to_numeric(series).astype(kind) if kind != "str" else series
    frame = pd.DataFrame(columns).reset_index(drop=True)
    unknown = sorted(set(frame["driver"]) - set(DRIVER_CLASSES))
    if unknown:
        raise ValueError(f"unknown driver classes {unknown}; expected {', '.join(DRIVER_CLASSES)}")
    expected_codes = frame["driver"].map(_DRIVER_CODES)
    if (frame["driver_code"] != expected_codes).any():
        raise ValueError("driver_code does not match driver; set it with drivers.driver_code()")
    if frame["event_id"].duplicated().any():
        raise ValueError("event_id is not unique; merge the map parts first")
    return frame, _multipolygon_wkb(features)


def _multipolygon_wkb(features: gpd.GeoDataFrame) -> np.ndarray:
    """The geometries as WKB, Polygons promoted so the layer has one geometry type; reject
    anything else. A MultiPolygon of one Polygon is that Polygon's WKB after a fixed
    header: prefixing it costs far less than building the geometry."""
    geoms = features.geometry.to_numpy()
    kind = shapely.get_type_id(geoms)
    bad = ~np.isin(kind, [_POLYGON, _MULTIPOLYGON]) | shapely.is_empty(geoms)
    if bad.any():
        raise ValueError(f"driver map needs non-empty polygons (event_ids: {_ids(features, bad)})")
    wkb = shapely.to_wkb(geoms, byte_order=1)
    single = np.flatnonzero(kind == _POLYGON)
    wkb[single] = [_ONE_POLYGON + w for w in wkb[single]]
    return wkb


#: Shapely's type ids of the two geometry types the layer accepts.
_POLYGON, _MULTIPOLYGON = 3, 6
#: Little-endian WKB header of a MultiPolygon holding one Polygon.
_ONE_POLYGON = b"\x01\x06\x00\x00\x00\x01\x00\x00\x00"


def _ids(features: pd.DataFrame, mask: object) -> str:
    return ", ".join(map(str, features.loc[mask, "event_id"].head(5).tolist()))


#: The GeoPackage version written. GDAL writes 1.4 by default, which GDAL 3.6 and QGIS 3.22
#: (Debian 12's LTR) open with a "may only be partially supported" warning; nothing here
#: needs 1.4 (``layer_styles`` is an attributes table, which 1.2 introduced).
GPKG_VERSION = "1.3"
#: ``PRAGMA user_version`` of such a file.
GPKG_USER_VERSION = 10300


def _write_layer(batches: Iterable[pa.Table], tmp: Path, provenance: dict[str, str]) -> int:
    """Write the driver layer from layer tables in one GDAL session; return its count.

    Explicit geometry type and name, so an empty map still gets a MultiPolygon 'geom'
    layer. Provenance goes in the layer metadata: as dataset metadata, GDAL readers (and
    QGIS) would drop a .aux.xml sidecar next to the file on every read. One session (not
    one append per batch) lets GDAL build the R-tree once, at the end, in bulk.
    """
    count, failure = 0, []

    def stream() -> Iterator[pa.RecordBatch]:
        nonlocal count
        try:
            for table in batches:
                count += table.num_rows
                yield from table.to_batches()
        except BaseException as exc:  # GDAL reports it as a stream error: keep the cause
            failure.append(exc)
            raise

    options = {"SPATIAL_INDEX": "YES", "GEOMETRY_NAME": GEOMETRY_COLUMN, "DESCRIPTION": _LAYER_DESC}
    try:
        pyogrio.write_arrow(
            pa.RecordBatchReader.from_batches(_LAYER_SCHEMA, stream()),
            tmp,
            layer=DRIVER_MAP_LAYER,
            driver="GPKG",
            geometry_name=GEOMETRY_COLUMN,
            geometry_type="MultiPolygon",
            crs=OUTPUT_CRS,
            dataset_options={"VERSION": GPKG_VERSION},
            layer_options=options,
            layer_metadata=provenance or None,
        )
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    return count


def _write_area_table(table: pd.DataFrame, tmp: Path) -> None:
    # No geometry column: GDAL registers it in gpkg_contents as an 'attributes' table.
    options = {"DESCRIPTION": "Forest loss area (ha) by province, year and driver"}
    pyogrio.write_dataframe(table, tmp, layer=AREA_TABLE, driver="GPKG", layer_options=options)


def _check_geopackage(tmp: Path, *, expected_features: int, unique_ids: bool = False) -> None:
    """Refuse to publish a file that is not a GeoPackage with both tables and a full R-tree
    (and, with ``unique_ids``, with an ``event_id`` twice: batches are checked one by one).

    Plain sqlite3 on purpose: a GDAL read-only open of a GeoPackage with dataset metadata
    leaves a ``.aux.xml`` sidecar behind.
    """
    rtree = f"rtree_{DRIVER_MAP_LAYER}_{GEOMETRY_COLUMN}"
    with contextlib.closing(sqlite3.connect(tmp)) as con:
        (application_id,) = con.execute("PRAGMA application_id").fetchone()
        (user_version,) = con.execute("PRAGMA user_version").fetchone()
        tables = {name for (name,) in con.execute("SELECT table_name FROM gpkg_contents")}
        has_rtree = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (rtree,)
        ).fetchone()[0]
        indexed = con.execute(f'SELECT count(*) FROM "{rtree}"').fetchone()[0] if has_rtree else -1
        twice = [row[0] for row in con.execute(
            f'SELECT event_id FROM "{DRIVER_MAP_LAYER}" GROUP BY event_id HAVING count(*) > 1 '
            "LIMIT 5")] if unique_ids else []
    if twice:
        raise ValueError(f"event_id is not unique ({', '.join(twice)}); merge the map parts first")
    problems = [
        f"application_id is {application_id:#x}, not GPKG" if application_id != 0x47504B47 else "",
        "" if user_version == GPKG_USER_VERSION else f"GeoPackage version {user_version}, "
        f"not {GPKG_VERSION}",
        "" if {DRIVER_MAP_LAYER, AREA_TABLE} <= tables else f"tables are {sorted(tables)}",
        "" if indexed == expected_features else f"{rtree} holds {indexed} of {expected_features}",
    ]
    if any(problems):
        raise RuntimeError(f"{tmp} is not a valid driver map: {'; '.join(filter(None, problems))}")


def _remove_sidecars(tmp: Path) -> None:
    """Remove any SQLite or GDAL sidecar the temporary GeoPackage may have left."""
    for suffix in ("-journal", "-wal", "-shm", ".aux.xml"):
        with contextlib.suppress(OSError):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
