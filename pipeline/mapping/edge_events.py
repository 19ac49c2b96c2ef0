"""Whole events for the pieces at a tile's edge: the network sees the event, not the piece.

Evaluation classifies an event from its whole loss region in a window centred on it. A map
piece cut by a tile edge is only part of that region, and a window centred on the part
sees other context and pools other pixels: held-out events split over two tiles got
probabilities up to 0.6 away from evaluation's. So a piece at the edge is classified with
its whole event (``loss_pieces.whole_events``) when the event's window fits the tile's
halo (:data:`MAX_HALO_PIXELS`): the tile is read wide enough, the event's region is burnt
on the tile's grid, and its pooled logits, band moments and scalars are the event's. Every
piece of the event then carries the same statistics, and the seam merge gives back
exactly the event's.
"""

from __future__ import annotations

import math

from odc.geo.geobox import GeoBox
from shapely.geometry.base import BaseGeometry

from forestnet_model.model_inputs import span_about
from pipeline.core.tile_lattice import HALO_PIXELS

#: The widest halo a tile is read with (a tile is 332 px): an event needing more is seen
#: piece by piece.
MAX_HALO_PIXELS = HALO_PIXELS + 10 * 16


def pixel_box(geometry: BaseGeometry, grid: GeoBox) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of the pixels of ``grid`` (north-up) a geometry in its
    CRS covers; may reach beyond the grid."""
    a = grid.affine
    minx, miny, maxx, maxy = geometry.bounds
    return (math.floor((maxy - a.f) / a.e), math.ceil((miny - a.f) / a.e),
            math.floor((minx - a.c) / a.a), math.ceil((maxx - a.c) / a.a))


def halo_needed(box: tuple[int, int, int, int], shape: tuple[int, int], context: int) -> int:
    """Pixels a window about ``box`` (plus ``context``) reaches past an array of ``shape``."""
    row0, row1, col0, col1 = box
    beyond = 0
    for (first, stop), n in (((row0, row1), shape[0]), ((col0, col1), shape[1])):
        start, end = span_about(first, stop, context)
        beyond = max(beyond, -start, end - n)
    return beyond


def fitting_events(events: dict[int, BaseGeometry], grid: GeoBox, context: int
                   ) -> tuple[dict[int, BaseGeometry], int]:
    """The events (in ``grid``'s CRS) whose window fits :data:`MAX_HALO_PIXELS` around the
    tile read on ``grid`` (the default halo), and the most any of them reaches past it."""
    kept, beyond = {}, 0
    for k, geometry in events.items():
        need = halo_needed(pixel_box(geometry, grid), tuple(grid.shape), context)
        if HALO_PIXELS + need <= MAX_HALO_PIXELS:
            kept[k], beyond = geometry, max(beyond, need)
    return kept, beyond
