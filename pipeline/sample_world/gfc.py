"""Hansen Global Forest Change layers: ``lossyear`` and ``treecover2000`` (uint8, EPSG:4326),
and the world's truth: the driver of every loss pixel (``truth/loss_driver.tif``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox
from shapely.geometry import Point

from pipeline.core.drivers import driver_code

from .features import Features
from .layout import GFC_PER_DEGREE, Event
from .noise import coarse_field, stream
from .rasters import lattice_window, paste_offset, rasterise, write_tif
from .region import Region, geom_to_lonlat, lonlat_grid
from .spec import WorldSpec

#: A mapping run must ignore loss components smaller than this (GFC speckle).
MIN_EVENT_PIXELS = 6
#: The true driver of each lossyear pixel, on the lossyear grid.
TRUTH_PATH = "truth/loss_driver.tif"


def write_gfc(
    root: Path, spec: WorldSpec, region: Region, features: Features, events: tuple[Event, ...]
) -> dict[str, str]:
    """Write ``gfc/lossyear.tif`` and ``gfc/treecover2000.tif``; return their paths."""
    rng = stream(spec.seed, "gfc")
    grid = lonlat_grid(region.aux_bbox_lonlat, GFC_PER_DEGREE)
    h, w = grid.shape.yx

    loss = np.zeros((h, w), np.uint8)
    # The true driver of every loss pixel (its event's merged class code; 0: no loss, or a
    # speck without a driver): what a reference interpreter would find on the ground.
    truth = np.zeros((h, w), np.uint8)
    for event in events:
        # Rasterise on the event's own lattice window, exactly as layout.py checked it,
        # so every event is one 8-connected component here too.
        window = lattice_window(event.poly_lonlat, GFC_PER_DEGREE)
        mask = rasterise([event.poly_lonlat], window) > 0
        r0, c0 = paste_offset(window, grid)
        loss[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]][mask] = event.year - 2000
        truth[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]][mask] = driver_code(
            event.merged_label)
    _add_specks(rng, loss, grid, region, spec, events)

    # Tree cover in 2000: dense forest everywhere, lower on rivers, roads and villages.
    cover = 80.0 + 18.0 * np.clip(0.5 + 0.3 * coarse_field(rng, (h, w), 8, 2.0), 0.0, 1.0)
    epsg = region.epsg
    rivers = [
        geom_to_lonlat(line.buffer(wd / 2, quad_segs=4), epsg) for line, wd in features.rivers
    ]
    roads = [
        geom_to_lonlat(r.geom.buffer(r.width / 2 + 10.0, quad_segs=2), epsg) for r in features.roads
    ]
    towns = [
        geom_to_lonlat(s.point.buffer(s.radius, quad_segs=8), epsg) for s in features.settlements
    ]
    cover = np.minimum(cover, 100.0 - 45.0 * rasterise(roads, grid, supersample=3))
    cover = np.minimum(cover, 100.0 - 75.0 * rasterise(towns, grid, supersample=2))
    cover = cover * (1.0 - rasterise(rivers, grid, supersample=3))
    cover = np.clip(np.rint(cover), 0, 100).astype(np.uint8)

    paths = {"gfc_lossyear": "gfc/lossyear.tif", "gfc_treecover2000": "gfc/treecover2000.tif",
             "truth_loss_driver": TRUTH_PATH}
    # Hansen's tiles carry no nodata value: 0 is a valid "no loss" / "no trees".
    write_tif(root / paths["gfc_lossyear"], loss, grid)
    write_tif(root / paths["gfc_treecover2000"], cover, grid)
    (root / "truth").mkdir(exist_ok=True)
    write_tif(root / TRUTH_PATH, truth, grid,
              descriptions=["true driver code (pipeline.core.drivers; 0 none)"])
    return paths


def _add_specks(
    rng: np.random.Generator,
    loss: np.ndarray,
    grid: GeoBox,
    region: Region,
    spec: WorldSpec,
    events: tuple[Event, ...],
) -> None:
    """3-6 isolated 1-2 pixel loss specks inside the region, well away from any event."""
    west, south, east, north = region.bbox_lonlat
    far = [e.poly_lonlat.buffer(0.005) for e in events]  # ~550 m
    placed = 0
    target = int(rng.integers(3, 7))
    a = grid.affine
    for _ in range(2000):
        lon, lat = (
            rng.uniform(west + 0.005, east - 0.005),
            rng.uniform(south + 0.005, north - 0.005),
        )
        if any(p.contains(Point(lon, lat)) for p in far):
            continue
        col, row = int((lon - a.c) / a.a), int((lat - a.f) / a.e)
        if loss[row - 3 : row + 4, col - 3 : col + 4].any():
            continue
        loss[row, col] = int(rng.choice(spec.loss_years)) - 2000
        if rng.random() < 0.5:
            loss[row, col + 1] = loss[row, col]
        placed += 1
        if placed == target:
            return
