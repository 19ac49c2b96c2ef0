"""A categorical land-cover map of the world (15 m, uint8, 0 = no data), as of 2017.

Derived from what the generator drew into the imagery: forest and peat swamp forest,
rivers, roads and settlements, and each event's land use (plantation, smallholder
agriculture, grassland, other cleared land). It is the per-pixel label of land-cover
pre-training, the way ForestNet pre-trained on a national land-cover map.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .features import Features
from .layout import Event
from .rasters import rasterise_windowed, write_tif
from .region import Region

#: Class names by code; code 0 is "no data" (the GeoTIFF's nodata value).
LANDCOVER_CLASSES: tuple[str, ...] = (
    "no data",
    "forest",
    "peat swamp forest",
    "plantation",
    "smallholder agriculture",
    "grassland shrubland",
    "other cleared land",
    "built-up",
    "water",
)
_CODE = {name: code for code, name in enumerate(LANDCOVER_CLASSES)}
_EVENT_CLASS = {
    "Plantation": "plantation",
    "Smallholder agriculture": "smallholder agriculture",
    "Grassland shrubland": "grassland shrubland",
    "Other": "other cleared land",
}


def landcover_map(region: Region, features: Features, events: tuple[Event, ...]) -> np.ndarray:
    """Class codes on ``region.grid15``, painted in the order landscape.py draws the surface."""
    grid = region.grid15
    out = np.full(tuple(grid.shape.yx), _CODE["forest"], np.uint8)

    def paint(geoms: list, name: str, supersample: int = 1) -> None:
        # A pixel takes a class when at least half of it is covered.
        out[rasterise_windowed(geoms, grid, supersample) >= 0.5] = _CODE[name]

    paint([p for p, _ in features.peat], "peat swamp forest")
    paint([line.buffer(w / 2, quad_segs=4) for line, w in features.rivers], "water", 3)
    paint([r.geom.buffer(r.width / 2 + 12.0, quad_segs=2) for r in features.roads],
          "built-up", 3)
    paint([s.point.buffer(s.radius, quad_segs=16) for s in features.settlements], "built-up")
    for event in events:
        paint([event.poly_utm], _EVENT_CLASS[event.merged_label], 3)
    return out


def write_landcover(
    root: Path, region: Region, features: Features, events: tuple[Event, ...]
) -> dict[str, str]:
    """Write ``aux/landcover.tif`` and its class table ``aux/landcover_classes.json``."""
    paths = {"landcover": "aux/landcover.tif", "landcover_classes": "aux/landcover_classes.json"}
    write_tif(root / paths["landcover"], landcover_map(region, features, events), region.grid15,
              nodata=0, descriptions=("landcover",))
    table = {str(code): name for code, name in enumerate(LANDCOVER_CLASSES)}
    (root / paths["landcover_classes"]).write_text(json.dumps(table, indent=2) + "\n")
    return paths
