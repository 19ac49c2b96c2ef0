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

from pipeline.ingest.catalog import OK_STATUSES, failed_row, row_from_attrs, scene_row
from pipeline.ingest.landsat import SceneInputError, SceneMetadata
from pipeline.ingest.scene_reader import READ_OPTIONS, expected_shapes, plan_product, present_bands
from pipeline.ingest.scene_store import clear_killed_temporaries, group_state, is_whole, write_scene
from pipeline.ingest.sources import (
    ProductSource,
    band_locations,
    folder_source,
    read_source_metadata,
)

__all__ = [
    "DuplicateSceneError", "IngestResult", "SceneInputError", "identify", "ingest_row",
    "ingest_scene", "ingest_source", "plan_ingest",
]

log = logging.getLogger(__name__)


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
) -> IngestResult:
    """Ingest one product; raise ``SceneInputError`` / ``MTLError`` naming the bad file.

    A scene is skipped when its group is whole (marker, same source, shapes and every
    chunk matching the source's files) and the index, where it has a row for this source
    (``index_status``), records it as ingested. A group from another source is a duplicate.
    """
    meta = meta or read_source_metadata(source)
    scene_id = meta.product_id
    try:
        paths = present_bands(*band_locations(source, meta))
    except SceneInputError as exc:
        exc.scene_id = exc.scene_id or scene_id
        raise
    store = Path(store)
    # Only this run writes this scene (plan_ingest drops duplicates), so any temporary
    # of it whose writer is gone is a killed run's leftover.
    clear_killed_temporaries(store, scene_id)
    if not overwrite:
        state = group_state(store, scene_id)
        if state.complete and state.source and state.source != source.origin:
            raise DuplicateSceneError(
                f"{source.origin}: duplicate of {scene_id}, already in the store from "
                f"{state.source}; not written again",
                scene_id=scene_id,
            )
        index_ok = index_status is None or index_status in OK_STATUSES
        # (The shapes need file headers: read only when the group could be whole.)
        if index_ok and state.complete and is_whole(state, expected_shapes(paths, meta)):
            return IngestResult(scene_id, "skipped", source=source.origin)
        if state.exists:
            log.info("%s: group is incomplete or stale; writing it again", scene_id)
    with rasterio.Env(**READ_OPTIONS):
        layout = plan_product(paths, meta)
        fraction = write_scene(layout, store, scene_id, source.origin)
    attrs = {**layout.attrs, "clear_fraction": fraction}
    row = row_from_attrs(scene_id, attrs, layout.geobox, "ingested", source.origin)
    return IngestResult(scene_id, "ingested", source=source.origin, row=row)


def identify(source: ProductSource) -> dict:
    """Read a source's metadata: ``{"origin", "scene_id", "error"}`` (never raises)."""
    try:
        meta = read_source_metadata(source)
    except Exception as exc:  # reported as the source's failed row
        return {"origin": source.origin, "scene_id": getattr(exc, "scene_id", None)
                or source.name, "error": str(exc)}
    return {"origin": source.origin, "scene_id": meta.product_id, "error": ""}


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


def ingest_row(source: ProductSource, store: str, index_status: str | None = None) -> dict:
    """Worker entry, one Dask task per scene: ingest, return the index row; never raises.

    A failure is logged with the file it concerns and becomes a failed row under the
    product id (or the source's name when even the MTL was unreadable).
    """
    scene_id = source.name
    try:
        meta = read_source_metadata(source)
        scene_id = meta.product_id
        result = ingest_source(source, Path(store), index_status=index_status, meta=meta)
        return result.row or scene_row(Path(store), result.scene_id, result.status, source.origin)
    except Exception as exc:  # one bad scene must not stop the others
        scene_id = getattr(exc, "scene_id", None) or scene_id
        text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        log.error("%s", text if source.origin in text else f"{source.origin}: {text}")
        return failed_row(scene_id, source.origin, text)
