"""A publish's finished events on disk, so that every output is written from bounded memory.

The seam merge yields events a batch at a time. Each batch goes to the spill (a temporary
folder) as up to three Parquet files: its events with a driver and those without imagery,
as the events table has them (for ``events.parquet``), and the mapped events as the
driver layer's Arrow table (``geopackage.driver_layer_table``: checked and cast once, for
every GeoPackage and side output). The writers then read the spill back file by file: no
writer ever holds more than one batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.atomic import atomic_output
from pipeline.export.geopackage import (
    GEOMETRY_COLUMN,
    OUTPUT_CRS,
    driver_layer_table,
    empty_driver_frame,
)

#: Kinds of spilled file: events with a driver, events without imagery, the layer table.
MAPPED, BLIND, LAYER = "mapped", "blind", "layer"


@dataclass(frozen=True)
class SpillFile:
    """One spilled file: its path, key (the province), kind and rows."""

    path: Path
    key: str
    kind: str
    rows: int


@dataclass
class EventSpill:
    """Finished events of a publish, in files under ``folder`` (which the caller removes),
    with the lon/lat bounds of each key's mapped events."""

    folder: Path
    files: list[SpillFile] = field(default_factory=list)
    extents: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)

    def add(self, key: str, events: gpd.GeoDataFrame) -> None:
        """Spill one batch of events (``driver_code`` 0: without imagery) under ``key``."""
        mapped = events["driver_code"].to_numpy() > 0
        if mapped.any():
            self._write(key, MAPPED, events[mapped], lambda f, p: f.to_parquet(p, index=False))
            self._write(key, LAYER, driver_layer_table(events[mapped]), pq.write_table)
            west, south, east, north = events[mapped].total_bounds.tolist()
            if key in self.extents:
                w, s, e, n = self.extents[key]
                west, south, east, north = min(w, west), min(s, south), max(e, east), max(n, north)
            self.extents[key] = (west, south, east, north)
        if not mapped.all():
            self._write(key, BLIND, events[~mapped], lambda f, p: f.to_parquet(p, index=False))

    def layers(self, keys: Sequence[str]) -> Iterator[pa.Table]:
        """The driver layer tables of ``keys``, in spill order."""
        for spilled in self._files(keys, LAYER):
            yield pq.read_table(spilled.path)

    def frames(self, keys: Sequence[str], columns: Sequence[str]) -> Iterator[gpd.GeoDataFrame]:
        """The mapped events of ``keys`` as frames of ``columns`` of the driver layer (and
        their geometry, MultiPolygons), in spill order."""
        for spilled in self._files(keys, LAYER):
            table = pq.read_table(spilled.path, columns=[*columns, GEOMETRY_COLUMN])
            frame = table.drop_columns([GEOMETRY_COLUMN]).to_pandas()
            yield gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries.from_wkb(
                table.column(GEOMETRY_COLUMN).to_numpy(zero_copy_only=False), crs=OUTPUT_CRS))

    def blind_ids(self, keys: Sequence[str]) -> list[str]:
        """Event ids of the events of ``keys`` without imagery, in spill order."""
        return [event for spilled in self._files(keys, BLIND)
                for event in pq.read_table(spilled.path, columns=["event_id"])
                .column("event_id").to_pylist()]

    def bounds(self, keys: Sequence[str]) -> tuple[float, float, float, float] | None:
        """Lon/lat bounds of the mapped events of ``keys``; None when there are none."""
        boxes = [self.extents[k] for k in keys if k in self.extents]
        if not boxes:
            return None
        return (min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes))

    def write_events(self, path: Path) -> Path:
        """Every spilled event as one GeoParquet at ``path`` (atomic): events with a driver
        first, then those without imagery, as the whole-frame writer wrote them."""
        ordered = self._files(None, MAPPED) + self._files(None, BLIND)
        with atomic_output(Path(path)) as tmp:
            if not ordered:
                empty_driver_frame().to_parquet(tmp)
                return Path(path)
            schemas = [pq.read_schema(f.path) for f in ordered]
            # A batch whose column was all null has a null type there: promote it.
            schema = pa.unify_schemas(schemas, promote_options="permissive")
            schema = schema.with_metadata(_joined_metadata(schemas))
            with pq.ParquetWriter(tmp, schema) as writer:
                for spilled in ordered:
                    writer.write_table(_conform(pq.read_table(spilled.path), schema))
        return Path(path)

    def _write(self, key: str, kind: str, rows, write) -> None:
        path = self.folder / f"{len(self.files):06d}-{kind}.parquet"
        write(rows, path)
        self.files.append(SpillFile(path, key, kind, len(rows)))

    def _files(self, keys: Sequence[str] | None, kind: str) -> list[SpillFile]:
        wanted = None if keys is None else set(keys)
        return [f for f in self.files if f.kind == kind and (wanted is None or f.key in wanted)]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``schema``, in its order and types (missing: null)."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _joined_metadata(schemas: list[pa.Schema]) -> dict[bytes, bytes]:
    """The first file's metadata, its GeoParquet entry made true of every file: the bbox
    dropped (optional) and the geometry types of all files."""
    metadata = dict(schemas[0].metadata or {})
    geo = json.loads(metadata[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    column.pop("bbox", None)
    types = set()
    for schema in schemas:
        other = json.loads(schema.metadata[b"geo"])
        types.update(other["columns"][other["primary_column"]].get("geometry_types", []))
    column["geometry_types"] = sorted(types)
    metadata[b"geo"] = json.dumps(geo).encode()
    return metadata
