"""Parts of a product: the window of its band files that a scene group holds.

A streamed ingest reads only what a job's area needs (its bounding box plus a margin),
grown to whole store chunks counted from the files' first pixel: every part of one
product shares chunk edges, so a later, wider part adds whole chunks around an earlier
one and copies the earlier one's chunks instead of reading them again.
"""

from __future__ import annotations

import math

import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

#: Chunk edge in 30 m pixels; the pan band uses twice this, so chunks cover the same ground.
#: A multiple of the 256-pixel tiles of USGS GeoTIFFs: a strip of chunk rows decodes each
#: tile once (an uneven edge, 800 -> 2 x 400 say, would decode the shared tile row twice).
CHUNK = 512

#: A part of a product: (first row, first column, rows, columns) of its 30 m band files.
Part = tuple[int, int, int, int]


def part_grid(files: GeoBox, part: Part, scale: int = 1) -> GeoBox:
    """The grid of ``part`` (in 30 m pixels) of a band file's grid ``files`` at ``scale``
    times the 30 m resolution (2: the 15 m pan band; its last row may be missing)."""
    r0, c0, h, w = (v * scale for v in part)
    return files[r0:min(r0 + h, files.shape[0]), c0:min(c0 + w, files.shape[1])]


def part_for_area(files: GeoBox, area: Geometry, margin: int) -> Part | None:
    """The part of a product that ``area`` needs: its bounding box in the files' pixels,
    ``margin`` pixels wider each side, grown to whole store chunks (counted from the
    files' first pixel, so any two parts of one product share chunk edges); None when
    the area misses the files."""
    box = area.to_crs(files.crs).boundingbox
    window = rasterio.windows.from_bounds(*box, transform=files.affine)
    h, w = files.shape
    r0 = max(0, (math.floor(window.row_off) - margin) // CHUNK * CHUNK)
    c0 = max(0, (math.floor(window.col_off) - margin) // CHUNK * CHUNK)
    r1 = min(h, -(-(math.ceil(window.row_off + window.height) + margin) // CHUNK) * CHUNK)
    c1 = min(w, -(-(math.ceil(window.col_off + window.width) + margin) // CHUNK) * CHUNK)
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, c0, r1 - r0, c1 - c0


def part_union(a: Part, b: Part) -> Part:
    """The smallest part holding both."""
    r0, c0 = min(a[0], b[0]), min(a[1], b[1])
    return r0, c0, max(a[0] + a[2], b[0] + b[2]) - r0, max(a[1] + a[3], b[1] + b[3]) - c0


def part_contains(outer: Part, inner: Part) -> bool:
    return part_union(outer, inner) == tuple(outer)
