"""A deterministic sample world over Kalimantan Tengah for running the pipeline offline.

``generate_world(out_dir, WorldSpec.tiny())`` writes Landsat 8 C2 L1 scenes (GeoTIFF + MTL
+ QA_PIXEL), Hansen-style GFC loss/tree cover, auxiliary rasters and vectors, a
categorical land-cover map (``aux/landcover.tif``), and
ForestNet-release style event CSVs whose four drivers look different enough to be learnt.
"""

from __future__ import annotations

from .spec import GENERATOR_VERSION, WorldSpec
from .world import WorldExistsError, generate_world

__all__ = ["GENERATOR_VERSION", "WorldExistsError", "WorldSpec", "generate_world"]
