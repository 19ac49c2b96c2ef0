"""Each stored scene's usable-pixel fraction at 240 m, so views are chosen before any warp.

A composite's pool is the least cloudy scenes of its years window: 80 to 440 of them over
real Landsat 8/9. Ranking each by its full-resolution QA on the grid cost a window read and
a warp per candidate, which made a tile's cost grow with the number of scenes. The
overview (the usable fraction of each 8 x 8 block of 30 m QA pixels) is computed once per
scene and process, from QA strips, and a grid's cloud fraction is then a sum over a few
hundred of its cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from pipeline.core.lru_cache import ByteBoundedLRU
from pipeline.imagery.scene_windows import SceneHandle, open_scene_handle
from pipeline.ingest.landsat import QA_BITS, usable_mask

#: QA pixels (30 m) per overview cell along each axis: 240 m cells.
OVERVIEW_FACTOR = 8
_FILL = np.uint16(1 << QA_BITS["fill"])


@dataclass(frozen=True)
class QaOverview:
    """``counts (y, x)``: the usable QA pixels of each block (of 64); ``geobox``: the
    blocks' grid."""

    counts: np.ndarray
    geobox: GeoBox

    def cloud_fraction(self, grid: GeoBox) -> float:
        """1 - the usable share of ``grid``'s area: the blocks under it, each weighted by
        the part of it inside the grid (whole edge blocks overcounted a cell's usable area
        by up to a fifth). The part of ``grid`` outside the scene counts as unusable, as
        fill pixels do at full resolution."""
        # Scenes and the lattice share each zone's CRS: then no reprojection is needed.
        box = grid.boundingbox if grid.crs == self.geobox.crs else \
            grid.extent.to_crs(self.geobox.crs).boundingbox
        inverse = ~self.geobox.affine
        (xa, ya), (xb, yb) = inverse * (box.left, box.top), inverse * (box.right, box.bottom)
        (x0, x1), (y0, y1) = sorted((xa, xb)), sorted((ya, yb))
        height, width = self.counts.shape
        c0, c1 = max(0, math.floor(x0)), min(width, math.ceil(x1))
        r0, r1 = max(0, math.floor(y0)), min(height, math.ceil(y1))
        if c1 <= c0 or r1 <= r0:
            return 1.0
        wx = _overlap(np.arange(c0, c1), x0, x1)
        wy = _overlap(np.arange(r0, r1), y0, y1)
        block = self.counts[r0:r1, c0:c1].astype(np.float64) / OVERVIEW_FACTOR ** 2
        usable = float(wy @ block @ wx)
        return float(np.clip(1.0 - usable / ((x1 - x0) * (y1 - y0)), 0.0, 1.0))


def _overlap(cells: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Length of each unit cell ``[i, i + 1)`` inside ``[start, stop)``."""
    return np.clip(np.minimum(cells + 1, stop) - np.maximum(cells, start), 0.0, 1.0)


def qa_overview(store: Path, scene_id: str) -> QaOverview:
    """The scene's overview, computed on first use in this process."""
    scene = open_scene_handle(store, scene_id)
    counts = _CACHE.get(scene.key)
    if counts is None:
        counts = _CACHE.put(scene.key, _usable_blocks(scene))
    box = GeoBox(counts.shape, scene.geobox.affine * Affine.scale(OVERVIEW_FACTOR),
                 scene.geobox.crs)
    return QaOverview(counts, box)


#: 1 MB per full Landsat scene: the few hundred scenes around a worker's tiles fit.
_CACHE = ByteBoundedLRU(256 * 2**20)


def _usable_blocks(scene: SceneHandle) -> np.ndarray:
    qa = scene.arrays["qa_pixel"]
    height, width = qa.shape
    f = OVERVIEW_FACTOR
    rows, cols = -(-height // f), -(-width // f)
    usable = np.empty((rows, cols), np.uint8)
    # Strips of whole chunk rows: a full scene's QA (120 MB) is never held at once.
    step = max(f, (qa.chunks[0] // f) * f)
    for top in range(0, height, step):
        strip = np.asarray(qa[top:top + step, :])
        padded = np.full((-(-strip.shape[0] // f) * f, cols * f), _FILL, np.uint16)
        padded[:strip.shape[0], :width] = strip
        blocks = usable_mask(padded).reshape(padded.shape[0] // f, f, cols, f)
        # Usable pixels of each block (0..64), not a float fraction: 4x smaller to keep.
        usable[top // f:top // f + blocks.shape[0]] = blocks.sum(axis=(1, 3))
    return usable
