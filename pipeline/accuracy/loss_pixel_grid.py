"""The lattice of loss pixels a driver map was cut from, and the pixels of one event on it.

Every event polygon of a driver map is a union of whole lossyear pixels, so rasterizing it
back on the same lattice (pixel-centre rule) gives exactly its ``n_pixels`` pixels. The
map records that lattice in its layer metadata (``loss_pixel_grid``); maps written before
it did are read on GFC's own lattice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio.features
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from shapely.geometry.base import BaseGeometry

from pipeline.core.grid import pixel_centre_axes
from pipeline.export.driver_maps import LOSS_GRID_KEY

logger = logging.getLogger(__name__)

#: Layer metadata item of a driver map holding its loss pixel lattice (JSON).
GRID_METADATA_KEY = LOSS_GRID_KEY
GEOGRAPHIC = CRS("EPSG:4326")


@dataclass(frozen=True)
class LossPixelGrid:
    """An unbounded north-up pixel lattice: pixel size and origin (``affine``) and ``crs``.

    Not a ``GeoBox``: the lattice has no shape; :meth:`window` cuts the ``GeoBox`` of one
    event from it.
    """

    affine: Affine
    crs: CRS

    def __post_init__(self) -> None:
        a = self.affine
        if a.b != 0 or a.d != 0 or a.a <= 0 or a.e >= 0:
            raise ValueError(f"loss pixel grid must be north-up with positive pixel size: {a}")

    @classmethod
    def from_metadata(cls, text: str) -> LossPixelGrid:
        """Parse ``{"crs": "EPSG:4326", "transform": [a, b, c, d, e, f]}``."""
        try:
            item = json.loads(text)
            coefficients = [float(v) for v in item["transform"]]
            if len(coefficients) != 6:
                raise ValueError(f"transform has {len(coefficients)} coefficients, not 6")
            return cls(Affine(*coefficients), CRS(item["crs"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{GRID_METADATA_KEY} {text!r} is not "
                             '{"crs": ..., "transform": [a, b, c, d, e, f]}: '
                             f"{exc}") from None

    def to_metadata(self) -> str:
        """The JSON form :meth:`from_metadata` reads."""
        return json.dumps({"crs": str(self.crs), "transform": list(self.affine)[:6]})

    def window(self, bounds: tuple[float, float, float, float]) -> GeoBox:
        """The smallest grid-aligned box covering ``bounds`` (minx, miny, maxx, maxy).

        Outward rounding: a polygon edge on a pixel edge may round into one more empty row
        or column, never into one fewer.
        """
        a = self.affine
        minx, miny, maxx, maxy = bounds
        col0, col1 = math.floor((minx - a.c) / a.a), math.ceil((maxx - a.c) / a.a)
        row0, row1 = math.floor((maxy - a.f) / a.e), math.ceil((miny - a.f) / a.e)
        origin = a @ Affine.translation(col0, row0)
        return GeoBox((max(row1 - row0, 1), max(col1 - col0, 1)), origin, self.crs)

    def pixel_centres(self, geom: BaseGeometry, crs: CRS = GEOGRAPHIC) -> np.ndarray:
        """Centres (x, y in ``crs``) of the lattice pixels whose centre lies in ``geom``,
        row-major, as an (n, 2) array: the pixels of one event in a fixed order."""
        shape = Geometry(geom, crs)
        if shape.crs != self.crs:
            shape = shape.to_crs(self.crs)
        box = self.window(shape.boundingbox.bbox)
        mask = rasterio.features.rasterize(
            [(shape.geom, 1)], out_shape=box.shape.yx, transform=box.affine, fill=0,
            dtype="uint8", all_touched=False,
        )
        rows, cols = np.nonzero(mask)  # row-major order
        xs, ys = pixel_centre_axes(box)
        xy = np.column_stack([xs[cols], ys[rows]])
        if self.crs != crs and len(xy):
            from pyproj import Transformer

            to_crs = Transformer.from_crs(self.crs.proj, CRS(crs).proj, always_xy=True)
            xy = np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1]))
        return xy


#: GFC's lossyear lattice: 0.00025 degree pixels with edges on whole degrees.
GFC_LOSS_GRID = LossPixelGrid(Affine(0.00025, 0.0, 0.0, 0.0, -0.00025, 0.0), GEOGRAPHIC)


def map_loss_grid(metadata: dict[str, str] | None, source: Path) -> LossPixelGrid:
    """The loss pixel lattice recorded in a driver map's layer ``metadata``; GFC's lattice
    (with a warning) for maps that do not record it. ``source`` names the map in messages."""
    text = (metadata or {}).get(GRID_METADATA_KEY)
    if text is None:
        logger.warning("%s records no %s; assuming GFC's lattice (EPSG:4326, 0.00025 degree "
                       "pixels on whole degrees)", source, GRID_METADATA_KEY)
        return GFC_LOSS_GRID
    return LossPixelGrid.from_metadata(text)
