"""The composite store: each lattice cell's composite, built once and reused by every map
run, every model and the chip builder.

``<store>/z<zone>/<cell id>/<key>`` is a Zarr group holding ``image (band, y, x)`` and the
pool in its attributes. The key hashes what decides the pixels: the cell, the candidate
scenes of the years window (so a new scene rebuilds only the cells it covers), the chip
settings of the rule and :data:`COMPOSITE_RULE`. A cell is written to a temporary sibling
and renamed into place, so a killed writer leaves no half cell and two workers building
the same cell both leave a whole one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import zarr
from odc.geo.geobox import GeoBox
from zarr.codecs import BloscCodec

from pipeline.core.atomic import atomic_output
from pipeline.core.lru_cache import ByteBoundedLRU
from pipeline.core.tile_lattice import MapTile
from pipeline.imagery.composite_cells import (
    COMPOSITE_RULE,
    CellComposite,
    build_cell,
    cell_candidates,
    lattice_cells,
    mosaic,
    no_scene_reason,
    scene_dates,
)
from pipeline.imagery.scene_windows import CACHE as CHUNK_CACHE
from pipeline.imagery.views import CHIP_BANDS, ChipSpec

log = logging.getLogger(__name__)
_CODEC = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
#: Cells kept decoded per process (2.6 MB each): a batch of neighbouring tiles or events
#: shares its cells.
_CACHE = ByteBoundedLRU(128 * 2**20)


def clear_caches() -> None:
    """Empty this process's decoded cells and scene chunks, so that the next read starts
    cold (benchmarks timing a fresh worker)."""
    _CACHE.clear()
    CHUNK_CACHE.clear()


def composite_key(cell: MapTile, scene_ids: list[str] | tuple[str, ...], spec: ChipSpec) -> str:
    """The stored cell's name: a hash of everything that decides its pixels."""
    rule = {"rule": COMPOSITE_RULE, "bands": CHIP_BANDS, "radiometry": spec.radiometry,
            "resolution": spec.resolution, "max_view_cloud": spec.max_view_cloud,
            "composite_pool": spec.composite_pool,
            "composite_max_views": spec.composite_max_views}
    blob = json.dumps({"cell": cell.tile_id, "scenes": sorted(scene_ids), "rule": rule},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_path(store: Path, cell: MapTile, key: str) -> Path:
    return Path(store) / f"z{cell.zone:02d}" / cell.tile_id / key


def write_cell(path: Path, comp: CellComposite, replace: bool = False) -> None:
    """One cell's group, atomically; a cell another worker wrote meanwhile is kept (both
    are the same pixels) unless ``replace`` (a damaged one)."""
    if (path / "zarr.json").exists() and not replace:
        return
    try:
        _write_cell(path, comp)
    except OSError:
        if not (path / "zarr.json").exists():
            raise


def _write_cell(path: Path, comp: CellComposite) -> None:
    with atomic_output(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        group.attrs.update({"scene_ids": list(comp.scene_ids),
                            "scene_dates": list(comp.scene_dates),
                            "clouds": list(comp.clouds), "notes": list(comp.notes),
                            "bands": list(CHIP_BANDS), "rule": COMPOSITE_RULE})
        # Byte-shuffled zstd at level 1: a third faster to write than zarr's default
        # (zstd 3), for the same decode speed; reflectance noise barely compresses anyway.
        array = group.create_array("image", shape=comp.image.shape, dtype="float32",
                                   chunks=comp.image.shape, compressors=_CODEC)
        array[...] = comp.image


def read_cell(path: Path) -> CellComposite:
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    attrs = group.attrs
    return CellComposite(np.asarray(group["image"][...]), tuple(attrs["scene_ids"]),
                         tuple(attrs["scene_dates"]), tuple(attrs["clouds"]),
                         tuple(attrs["notes"]))


@dataclass
class CompositeSource:
    """Cell composites for one scene store and rule: from this process's cache, from the
    composite store (``store`` None: none kept), or built; counts what it built and
    reused."""

    scene_store: Path
    index: gpd.GeoDataFrame
    spec: ChipSpec
    store: Path | None = None
    built: int = 0
    reused: int = 0
    _candidates: dict = field(default_factory=dict, repr=False)

    def cell(self, cell: MapTile, loss_year: int) -> CellComposite | None:
        """The cell's composite for events of ``loss_year``; None with no candidate scene."""
        ids = self.candidates(cell, loss_year)
        if not ids:
            return None
        key = composite_key(cell, ids, self.spec)
        cache_key = (str(self.store), str(self.scene_store), key)
        cached = _CACHE.get(cache_key)
        if cached is not None:
            self.reused += 1
            return cached
        path = cell_path(self.store, cell, key) if self.store is not None else None
        comp, damaged = None, False
        if path is not None and (path / "zarr.json").exists():
            try:
                comp = read_cell(path)
                self.reused += 1
            except Exception as exc:  # a cell is derived data: rebuild it, never fail on it
                log.warning("%s: unreadable composite (%s: %s); building it again", path,
                            type(exc).__name__, exc)
                damaged = True
        if comp is None:
            comp = build_cell(cell, self._rows(cell, loss_year), self.scene_store, self.index,
                              self.spec)
            self.built += 1
            if path is not None:
                write_cell(path, comp, replace=damaged)
        _CACHE.put(cache_key, comp)
        return comp

    def candidates(self, cell: MapTile, loss_year: int) -> tuple[str, ...]:
        """Sorted ids of the cell's candidate scenes for ``loss_year``."""
        rows = self._rows(cell, loss_year)
        return tuple(sorted(self.index["scene_id"].to_numpy()[rows]))

    def _rows(self, cell: MapTile, loss_year: int) -> np.ndarray:
        key = (cell, loss_year)
        if key not in self._candidates:
            self._candidates[key] = cell_candidates(cell, loss_year, self.index, self.spec)
        return self._candidates[key]


@dataclass
class GridComposite:
    """The composite of a grid on the lattice, the scenes its cells pooled, and notes;
    ``problem`` says why there is none."""

    image: np.ndarray | None
    scene_ids: list[str]
    scene_dates: list[str]
    clouds: dict[str, float]
    notes: list[str]
    problem: str = ""


def grid_composite(grid: GeoBox, loss_year: int, source: CompositeSource) -> GridComposite:
    """``grid``'s composite for events of ``loss_year``, cut from its cells'."""
    cells = {cell: source.cell(cell, loss_year) for cell in lattice_cells(grid)}
    comps = [c for c in cells.values() if c is not None and c.scene_ids]
    if not comps:
        return GridComposite(None, [], [], {}, [],
                             no_scene_reason(grid, loss_year, source.index, source.spec))
    ids, dates = scene_dates(comps)
    clouds = {sid: cloud for c in comps for sid, cloud in zip(c.scene_ids, c.clouds,
                                                             strict=True)}
    notes = sorted({note for c in comps for note in c.notes})
    return GridComposite(mosaic(grid, cells), ids, dates, clouds, notes)


def years_by_cells(years: list[int], grid: GeoBox, source: CompositeSource) -> list[list[int]]:
    """Loss years grouped by the candidate scenes of every cell under ``grid``: the years
    of a group share one composite, the one their events' chips get."""
    cells = lattice_cells(grid)
    groups: dict[tuple, list[int]] = {}
    for year in sorted(set(years)):
        groups.setdefault(tuple(source.candidates(c, year) for c in cells), []).append(year)
    return list(groups.values())


def composites_needed(jobs: list[tuple[GeoBox, list[int]]], source: CompositeSource
                      ) -> tuple[int, int]:
    """(to build, already in the store) cell composites for ``(grid, loss years)`` jobs
    (a tile's grid and the years of its loss): what a map over them would build and reuse."""
    keys = set()
    for grid, years in jobs:
        for cell in lattice_cells(grid):
            for year in years:
                ids = source.candidates(cell, year)
                if ids:
                    keys.add((cell, composite_key(cell, ids, source.spec)))
    stored = 0 if source.store is None else sum(
        (cell_path(source.store, cell, key) / "zarr.json").exists() for cell, key in keys)
    return len(keys) - stored, stored
