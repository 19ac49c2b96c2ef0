"""Composites of the map lattice's cells, and the composite of any grid cut from them.

A composite is made per cell of the map tiles' lattice (332 x 332 px at 15 m in each UTM
zone's northern CRS): its pool is chosen from the cell's candidate scenes by their cloud
over the cell (``qa_overview``, before any band is read), and only the pool is warped.
A chip or a tile with its halo lies on the same lattice, so its composite is the mosaic of
the cells under it: the pixels of an event's chip and of its map window are the same
array, whatever their extent and wherever the window falls (DESIGN: one input path).

The pool rule is ForestNet's (the scenes passing the cloud filter, or the
``composite_pool`` least cloudy when fewer pass) with one deliberate bound: at most
``composite_max_views`` scenes, the least cloudy, so that a cell's cost does not grow with
the 80-440 scenes of a real years window. Worlds with no more than that many passing
scenes get ForestNet's composite unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
from odc.geo.geobox import GeoBox
from shapely.geometry.base import BaseGeometry

from pipeline.core.radiometry import RADIOMETRY_LEVELS
from pipeline.core.tile_lattice import TILE_METRES, TILE_PIXELS, TILE_RESOLUTION, MapTile
from pipeline.imagery.composite import composite
from pipeline.imagery.qa_overview import qa_overview
from pipeline.imagery.views import CHIP_BANDS, ChipSpec, scene_on_grid, years_span
from pipeline.ingest.catalog import pan_partners_at, scene_rows

#: Bumped when how a cell's composite is made changes: part of every stored cell's key.
COMPOSITE_RULE = 1


@dataclass(frozen=True)
class CellComposite:
    """One cell's composite ``image (band, y, x)`` (CHIP_BANDS) and its pool, least
    cloudy first, with each scene's cloud over the cell."""

    image: np.ndarray
    scene_ids: tuple[str, ...]
    scene_dates: tuple[str, ...]
    clouds: tuple[float, ...]
    notes: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return self.image.nbytes


def lattice_cells(grid: GeoBox) -> list[MapTile]:
    """The lattice cells under ``grid``, which must lie on the 15 m lattice of a zone."""
    zone = _zone_of(grid)
    a = grid.affine
    height, width = grid.shape
    on_lattice = (a.a == TILE_RESOLUTION and a.e == -TILE_RESOLUTION and a.b == a.d == 0
                  and math.isclose(a.c / TILE_RESOLUTION, round(a.c / TILE_RESOLUTION))
                  and math.isclose(a.f / TILE_RESOLUTION, round(a.f / TILE_RESOLUTION)))
    if not on_lattice:
        raise ValueError(f"grid {tuple(a)[:6]} is not on the 15 m map lattice")
    left, top = a.c, a.f
    right, bottom = left + width * TILE_RESOLUTION, top - height * TILE_RESOLUTION
    cols = range(math.floor(left / TILE_METRES), math.ceil(right / TILE_METRES))
    rows = range(math.floor(bottom / TILE_METRES), math.ceil(top / TILE_METRES))
    return [MapTile(zone, row, col) for row in rows for col in cols]


def _zone_of(grid: GeoBox) -> int:
    epsg = grid.crs.epsg or 0
    if not 32601 <= epsg <= 32660:
        raise ValueError(f"grid CRS {grid.crs} is not a northern UTM zone of the map lattice")
    return epsg - 32600


def cell_candidates(cell: MapTile, loss_year: int, index: gpd.GeoDataFrame,
                    spec: ChipSpec) -> np.ndarray:
    """Rows of ``index``: the scenes of the spec's level within ``years_window`` of
    ``loss_year`` that cover the cell."""
    return window_scene_rows(index, cell_footprint(cell), loss_year, spec)


def window_scene_rows(index: gpd.GeoDataFrame, footprint: BaseGeometry, loss_year: int,
                      spec: ChipSpec) -> np.ndarray:
    """Rows of ``index``: the scenes of the spec's level within ``years_window`` of
    ``loss_year`` that cover ``footprint`` (lon/lat), least cloudy first."""
    start, end = years_span(loss_year, loss_year, spec.years_window)
    return scene_rows(index, footprint, start, end, level=RADIOMETRY_LEVELS[spec.radiometry])


def pan_partners(index: gpd.GeoDataFrame, rows: np.ndarray, spec: ChipSpec) -> dict[str, str]:
    """The Level-1 scene lending its pan to each Level-2 scene of ``rows``; none for
    top-of-atmosphere chips, whose scenes carry their own pan."""
    return pan_partners_at(index, rows) if RADIOMETRY_LEVELS[spec.radiometry] == "L2" else {}


@lru_cache(maxsize=4096)
def cell_footprint(cell: MapTile) -> BaseGeometry:
    """The cell's core in lon/lat (cached: asked for every loss year of every tile around
    it, and a reprojection costs more than the index query)."""
    return cell.geobox(0).extent.to_crs("EPSG:4326").geom


def choose_pool(clouds: dict[str, float], spec: ChipSpec) -> tuple[list[str], list[str]]:
    """The composite's pool from each candidate's cloud fraction, least cloudy first
    (ties by scene id), and notes; a scene with no usable pixel is never pooled."""
    ranked = sorted((cloud, sid) for sid, cloud in clouds.items() if cloud < 1.0)
    passing = [sid for cloud, sid in ranked if cloud <= spec.max_view_cloud]
    pool = passing if len(passing) >= spec.composite_pool else \
        [sid for _, sid in ranked[:spec.composite_pool]]
    if spec.composite_max_views is not None:
        pool = pool[:spec.composite_max_views]
    notes = [] if passing or not pool else \
        ["no view passes the cloud filter; composite of least cloudy"]
    return pool, notes


def build_cell(cell: MapTile, rows: np.ndarray, store: Path, index: gpd.GeoDataFrame,
               spec: ChipSpec) -> CellComposite:
    """The composite of one cell from its candidate scenes (``cell_candidates``)."""
    grid = cell.geobox(0)
    ids = index["scene_id"].to_numpy()[rows]
    clouds = {sid: qa_overview(store, sid).cloud_fraction(grid) for sid in ids}

    pool, notes = choose_pool(clouds, spec)
    image = np.zeros((len(CHIP_BANDS), TILE_PIXELS, TILE_PIXELS), np.float32)
    if not pool:
        return CellComposite(image, (), (), (), ("no usable scene pixel over the cell",))
    pans = pan_partners(index, rows, spec)
    # Each pixel's warp reads its own neighbourhood (source windows carry a margin), so a
    # cell's edge pixels equal those of any larger grid warped at once.
    stack = np.empty((len(pool), len(CHIP_BANDS), TILE_PIXELS, TILE_PIXELS), np.float32)
    views = [scene_on_grid(store, sid, grid, pan_from=pans.get(sid), out=out)
             for sid, out in zip(pool, stack, strict=True)]
    usable = np.stack([v.usable for v in views])
    return CellComposite(composite(stack, usable), tuple(pool), tuple(v.date for v in views),
                         tuple(clouds[sid] for sid in pool), tuple(notes))


def mosaic(grid: GeoBox, cells: dict[MapTile, CellComposite | None]) -> np.ndarray:
    """``grid``'s composite cut from its cells' (``lattice_cells``); 0 under a cell
    without one, as outside every scene."""
    out = np.zeros((len(CHIP_BANDS), *grid.shape), np.float32)
    height, width = grid.shape
    for cell, comp in cells.items():
        if comp is None:
            continue
        core = cell.geobox(0).affine
        row0 = round((grid.affine.f - core.f) / TILE_RESOLUTION)
        col0 = round((core.c - grid.affine.c) / TILE_RESOLUTION)
        r0, r1 = max(0, row0), min(height, row0 + TILE_PIXELS)
        c0, c1 = max(0, col0), min(width, col0 + TILE_PIXELS)
        if r0 < r1 and c0 < c1:
            out[:, r0:r1, c0:c1] = comp.image[:, r0 - row0:r1 - row0, c0 - col0:c1 - col0]
    return out


def scene_dates(comps: list[CellComposite]) -> tuple[list[str], list[str]]:
    """The scenes pooled by any of ``comps`` and their dates, in first-seen order."""
    seen: dict[str, str] = {}
    for comp in comps:
        for sid, date in zip(comp.scene_ids, comp.scene_dates, strict=True):
            seen.setdefault(sid, date)
    return list(seen), list(seen.values())


def no_scene_reason(grid: GeoBox, loss_year: int, index: gpd.GeoDataFrame,
                    spec: ChipSpec) -> str:
    """Why no scene of the spec's level and window covers ``grid``."""
    footprint = grid.extent.to_crs("EPSG:4326").geom
    start, end = years_span(loss_year, loss_year, spec.years_window)
    level = RADIOMETRY_LEVELS[spec.radiometry]
    found = scene_rows(index, footprint, start, end)
    if not len(found):
        return f"no scene between {start.date()} and {end.date()} covers the grid"
    if not len(window_scene_rows(index, footprint, loss_year, spec)):
        return (f"no {spec.radiometry} reflectance (Level-{level[1]}) scene between "
                f"{start.date()} and {end.date()}: the {len(found)} covering the grid are of "
                "another level")
    return "no usable (cloud-free, non-fill) pixel in any scene"

