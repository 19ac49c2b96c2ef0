"""Ingest Landsat Collection 2 products (folders, USGS tars, STAC Items) into the scene store.

Layout (DESIGN §3): one group per scene, named by the product id, on the scene's native
grid. ``multispectral (band, y, x)`` and ``qa_pixel (y, x)`` at 30 m, ``pan (y_pan, x_pan)``
at 15 m for Level-1. Pixels stay integer DN; CF ``scale_factor``/``add_offset`` decode them
to reflectance (sun-corrected TOA for Level-1, surface reflectance for Level-2).

A run is: ``identify`` every source (read its MTL), ``plan_ingest`` (drop duplicates,
look up the index), then ``ingest_row`` per scene, one coarse Dask task each. Nothing
here imports Prefect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from pipeline.ingest.catalog import (
    OK_STATUSES,
    failed_row,
    row_from_attrs,
    scene_row,
    stored_scene_ids,
)
from pipeline.ingest.landsat import SceneInputError, SceneMetadata
from pipeline.ingest.remote_files import COUNTER, is_http
from pipeline.ingest.scene_grids import scene_geobox
from pipeline.ingest.scene_parts import Part, part_contains, part_for_area, part_union
from pipeline.ingest.scene_reader import (
    READ_OPTIONS,
    expected_shapes,
    multispectral_names,
    part_shapes,
    plan_product,
    present_bands,
    reflective_geobox,
)
from pipeline.ingest.scene_store import (
    clear_killed_temporaries,
    group_state,
    is_whole,
    scene_attrs_of,
    write_scene,
)
from pipeline.ingest.sources import (
    ProductSource,
    band_locations,
    folder_source,
    read_source_metadata,
)

__all__ = [
    "READ_COUNTS", "DuplicateSceneError", "IngestResult", "SceneInputError", "identify",
    "ingest_row", "ingest_scene", "ingest_source", "known_identities", "plan_ingest",
    "stored_part_covers",
]

log = logging.getLogger(__name__)

#: Keys an ``ingest_row`` row carries beside the index's columns: bytes read of remote
#: files, and their full sizes.
READ_COUNTS = ("bytes_read", "bytes_full")


class DuplicateSceneError(SceneInputError):
    """The product is already in the store (or in this run) from another source."""


@dataclass(frozen=True)
class IngestResult:
    """Summary of one scene's ingest, small enough to pass between tasks."""

    scene_id: str
    status: str  # "ingested" | "skipped" | "failed"
    error: str = ""
    source: str = ""
    #: The index row of a scene written by this call (spares reopening the group).
    row: dict | None = field(default=None, repr=False, compare=False)


def ingest_scene(product_dir: Path, store: Path, overwrite: bool = False) -> IngestResult:
    """Ingest one product folder into ``store``; skip it if its group is already whole."""
    return ingest_source(folder_source(Path(product_dir)), Path(store), overwrite=overwrite)


def ingest_source(
    source: ProductSource,
    store: Path,
    overwrite: bool = False,
    index_status: str | None = None,
    meta: SceneMetadata | None = None,
    area: Geometry | None = None,
    margin: int = 0,
) -> IngestResult:
    """Ingest one product (or, given an ``area``, the part of it the area needs plus
    ``margin`` pixels); raise ``SceneInputError`` / ``MTLError`` naming the bad file.

    A scene is skipped when its group is whole (marker, same source, shapes and every
    chunk matching the source's files), holds the part wanted, and the index, where it
    has a row for this source (``index_status``), records it as ingested. A whole group
    holding a smaller part grows: the part it holds is copied, the rest read. A group
    from another source is a duplicate.
    """
    meta = meta or read_source_metadata(source)
    scene_id = meta.product_id
    try:
        paths = present_bands(*band_locations(source, meta))
    except SceneInputError as exc:
        exc.scene_id = exc.scene_id or scene_id
        raise
    store = Path(store)
    files = expected_shapes(paths, meta)  # the band files' headers, read once
    whole = (0, 0, *files["qa_pixel"])
    wanted = whole if area is None else _area_part(paths, meta, area, margin)
    # Only this run writes this scene (plan_ingest drops duplicates), so any temporary
    # of it whose writer is gone is a killed run's leftover.
    clear_killed_temporaries(store, scene_id)
    earlier = None
    if not overwrite:
        state = group_state(store, scene_id)
        if state.complete and state.source and state.source != source.origin:
            raise DuplicateSceneError(
                f"{source.origin}: duplicate of {scene_id}, already in the store from "
                f"{state.source}; not written again",
                scene_id=scene_id,
            )
        index_ok = index_status is None or index_status in OK_STATUSES
        held = state.part or whole
        if index_ok and state.complete and is_whole(state, part_shapes(files, held)):
            if part_contains(held, wanted):
                return IngestResult(scene_id, "skipped", source=source.origin)
            earlier, wanted = held, part_union(held, wanted)
            log.info("%s: adding rows %d-%d, columns %d-%d to the part already stored",
                     scene_id, wanted[0], wanted[0] + wanted[2], wanted[1], wanted[1] + wanted[3])
        elif state.exists:
            log.info("%s: group is incomplete or stale; writing it again", scene_id)
    with rasterio.Env(**READ_OPTIONS):
        layout = plan_product(paths, meta, None if wanted == whole else wanted)
        fraction = write_scene(layout, store, scene_id, source.origin, earlier)
    attrs = {**layout.attrs, "clear_fraction": fraction}
    row = row_from_attrs(scene_id, attrs, layout.geobox, "ingested", source.origin)
    return IngestResult(scene_id, "ingested", source=source.origin, row=row)


def _area_part(paths: dict[str, str], meta: SceneMetadata, area: Geometry, margin: int
               ) -> Part:
    with rasterio.Env(**READ_OPTIONS):
        files = reflective_geobox(paths[multispectral_names(paths)[0]], meta)
    part = part_for_area(files, area, margin)
    if part is None:
        raise SceneInputError(f"{meta.product_id}: the product does not reach the job's area",
                              scene_id=meta.product_id)
    return part


def stored_part_covers(store: Path, scene_id: str, origin: str, area: Geometry,
                       margin: int) -> bool:
    """Whether the store's whole group of ``scene_id``, from ``origin``, holds the part of
    the product that ``area`` needs (found from the group alone: no band file is read)."""
    state = group_state(store, scene_id)
    if not (state.complete and state.all_chunks and state.source == origin and state.part):
        return False
    group = scene_attrs_of(store, scene_id)
    part_box = scene_geobox(store, scene_id)
    r0, c0 = state.part[:2]
    files = GeoBox(tuple(group["product_shape"]),
                   part_box.affine @ Affine.translation(-c0, -r0), part_box.crs)
    wanted = part_for_area(files, area, margin)
    return wanted is not None and part_contains(state.part, wanted)


def identify(source: ProductSource) -> dict:
    """Read a source's metadata: ``{"origin", "scene_id", "error"}`` (never raises)."""
    try:
        meta = read_source_metadata(source)
    except Exception as exc:  # reported as the source's failed row
        return {"origin": source.origin, "scene_id": getattr(exc, "scene_id", None)
                or source.name, "error": str(exc)}
    return {"origin": source.origin, "scene_id": meta.product_id, "error": ""}


def known_identities(sources: list[ProductSource], index: pd.DataFrame | None
                     ) -> tuple[dict[str, dict], list[ProductSource]]:
    """The identities of the sources the index holds (their MTLs are not read again, so a
    rerun reads no remote MTL), and the sources still to identify."""
    stored = stored_scene_ids(index)
    known = {s.origin: {"origin": s.origin, "scene_id": stored[s.origin], "error": ""}
             for s in sources if s.origin in stored}
    return known, [s for s in sources if s.origin not in known]


def plan_ingest(
    sources: list[ProductSource], identities: list[dict], index: pd.DataFrame | None
) -> tuple[list[tuple[ProductSource, str | None]], list[dict]]:
    """Scenes to ingest, each with its index status, and failed rows for the rest.

    Unreadable sources fail here. The second source of a product id in one run is a
    duplicate: it is reported, never written (two writers of one group would race).
    """
    first: dict[str, str] = {}
    todo: list[tuple[ProductSource, str | None]] = []
    rejected: list[dict] = []
    for source, ident in zip(sources, identities, strict=True):
        scene_id, error = ident["scene_id"], ident["error"]
        if not error and scene_id in first:
            error = (f"{source.origin}: duplicate of {scene_id}, which this run ingests from "
                     f"{first[scene_id]}; not written twice")
        if error:
            log.error("%s", error if source.origin in error else f"{source.origin}: {error}")
            rejected.append(failed_row(scene_id, source.origin, error))
            continue
        first[scene_id] = source.origin
        todo.append((source, _index_status(index, scene_id, source.origin)))
    return todo, rejected


def _index_status(index: pd.DataFrame | None, scene_id: str, origin: str) -> str | None:
    if index is None or not len(index):
        return None
    rows = index[(index["scene_id"] == scene_id) & (index["source"] == origin)]
    return str(rows["status"].iloc[-1]) if len(rows) else None


def ingest_row(source: ProductSource, store: str, index_status: str | None = None,
               area: Geometry | None = None, margin: int = 0,
               stored_as: str | None = None) -> dict:
    """Worker entry, one Dask task per scene: ingest, return the index row; never raises.

    A failure is logged with the file it concerns and becomes a failed row under the
    product id (or the source's name when even the MTL was unreadable). The row's
    ``bytes_read`` / ``bytes_full`` count what was read of remote files (http) against
    their full sizes; the flow reports them and keeps them out of the index.
    ``stored_as``: the scene id the index holds for this source, when it has one.
    """
    scene_id = stored_as or source.name
    remote = [u for u in (source.metadata, *source.assets.values()) if is_http(u)]
    before = COUNTER.totals(remote)[0]
    if (remote and stored_as and area is not None and index_status in OK_STATUSES
            and stored_part_covers(Path(store), stored_as, source.origin, area, margin)):
        # A remote product's files never change (its id names them): the store alone
        # says whether the part it holds covers the area, so a rerun reads nothing.
        row = scene_row(Path(store), stored_as, "skipped", source.origin)
        return {**row, **dict(zip(READ_COUNTS, (0, 0), strict=True))}
    try:
        meta = read_source_metadata(source)
        scene_id = meta.product_id
        # USGS's bucket bills the reader: GDAL must say it accepts (s3 assets only).
        payer = {"AWS_REQUEST_PAYER": "requester"} if source.requester_pays else {}
        with rasterio.Env(**payer):
            result = ingest_source(source, Path(store), index_status=index_status, meta=meta,
                                   area=area, margin=margin)
        row = result.row or scene_row(Path(store), result.scene_id, result.status, source.origin)
    except Exception as exc:  # one bad scene must not stop the others
        scene_id = getattr(exc, "scene_id", None) or scene_id
        text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        log.error("%s", text if source.origin in text else f"{source.origin}: {text}")
        row = failed_row(scene_id, source.origin, text)
    read, full = COUNTER.totals(remote)
    return {**row, **dict(zip(READ_COUNTS, (read - before, full), strict=True))}
