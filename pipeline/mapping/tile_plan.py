"""Which tiles a map job covers, and how they are cut into batches for the workers.

The lossyear raster is scanned block by block (``loss_pieces.tiles_in_block``, one Dask
task each); this module reduces the blocks' tile counts into one plan, stores it, and
splits the tiles still to predict into batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.core.atomic import atomic_output
from pipeline.core.provinces import select_provinces, union
from pipeline.core.tile_lattice import MapTile
from pipeline.mapping.area_of_interest import AreaOfInterestError, read_aoi
from pipeline.mapping.loss_pieces import PROVINCE_SNAP_DEGREES, plan_blocks, tiles_in_block

PLAN_COLUMNS = ["zone", "row", "col", "n_loss", "loss_years", "tile_id"]


def mapping_area(aoi: Path | None, provinces: list[str]) -> BaseGeometry:
    """The area a job maps (EPSG:4326): the AOI's union, else the provinces' union grown by
    the snapping distance (loss pixels just outside coarse boundaries snap to a province)."""
    if aoi is not None:
        return read_aoi(aoi).union_all()
    return union(select_provinces(provinces)).buffer(PROVINCE_SNAP_DEGREES)


def job_area(provinces: list[str], aoi: Path | None = None,
             bbox: tuple[float, float, float, float] | None = None) -> BaseGeometry:
    """A job's area (EPSG:4326): a W, S, E, N box when given, else ``mapping_area``."""
    if bbox is None:
        return mapping_area(aoi, provinces)
    west, south, east, north = bbox
    if not (west < east and south < north):
        raise AreaOfInterestError(f"bbox {bbox}: expected W,S,E,N with W < E and S < N")
    return shapely.box(west, south, east, north)


#: Runs ``tiles_in_block`` over blocks: ``(lossyear, blocks, years, area) -> one frame each``.
BlockMapper = Callable[[Path, Sequence, list[int], BaseGeometry], list[pd.DataFrame]]


def scan_here(lossyear: Path, blocks: Sequence, years: list[int],
              area: BaseGeometry) -> list[pd.DataFrame]:
    """``tiles_in_block`` over every block, one after the other in this process."""
    return [tiles_in_block(lossyear, block, years, area) for block in blocks]


def tiles_with_loss(lossyear: Path, area: BaseGeometry, years: list[int],
                    scan: BlockMapper = scan_here) -> tuple[pd.DataFrame, int]:
    """The tiles with loss of ``years`` in ``area`` (``PLAN_COLUMNS``), and the number of
    lossyear blocks scanned; ``scan`` maps the blocks (the map flow's, on Dask)."""
    blocks = plan_blocks(lossyear, area.bounds)
    return merge_block_tiles(scan(lossyear, blocks, years, area)), len(blocks)


def merge_block_tiles(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per tile with loss, from the per-block counts (a tile may span blocks)."""
    found = [b for b in blocks if len(b)]
    if not found:
        return pd.DataFrame({c: [] for c in PLAN_COLUMNS})
    tiles = pd.concat(found, ignore_index=True)
    grouped = tiles.groupby(["zone", "row", "col"])
    tiles = pd.concat([grouped["n_loss"].sum(),
                       grouped["loss_years"].agg(np.bitwise_or.reduce)], axis=1).reset_index()
    tiles["tile_id"] = [MapTile(int(z), int(r), int(c)).tile_id
                        for z, r, c in tiles[["zone", "row", "col"]].itertuples(index=False)]
    return tiles.sort_values(["zone", "row", "col"], ignore_index=True)


def write_tile_plan(tiles: pd.DataFrame, path: Path) -> Path:
    """Store the plan atomically: a rerun of the job reads it instead of rescanning."""
    with atomic_output(path) as tmp:
        tiles.to_parquet(tmp, index=False)
    return path


def tile_batches(tile_ids: list[str], tiles_per_task: int, n_workers: int) -> list[list[str]]:
    """Batches of at most ``tiles_per_task`` tiles, smaller for small jobs so that every
    worker gets one (else a 4-tile job is one batch on one worker while the other idles)."""
    size = max(1, min(tiles_per_task, math.ceil(len(tile_ids) / max(1, n_workers))))
    return [tile_ids[i:i + size] for i in range(0, len(tile_ids), size)]
