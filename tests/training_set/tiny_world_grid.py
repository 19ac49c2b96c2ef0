"""Where the tiny world lies, and its auxiliary sources: shared by the chip tests."""

from __future__ import annotations

from pathlib import Path

from pyproj import Transformer

from pipeline.training_set.auxiliary import AuxSources

UTM = "EPSG:32649"  # the tiny world's zone (113.5 E, 2 S), as USGS gives it
TO_UTM = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
#: A point inside the tiny world, for synthetic aux rasters and events.
AUX_LON, AUX_LAT = 113.55, -1.95


def world_aux_sources(world: Path) -> AuxSources:
    """The generated world's aux files, as a config would name them."""
    return AuxSources(
        dem=world / "aux" / "srtm_dem.tif", treecover=world / "gfc" / "treecover2000.tif",
        roads=world / "aux" / "roads.gpkg", settlements=world / "aux" / "settlements.gpkg",
        peat=world / "aux" / "peat.gpkg", climate=world / "aux" / "climate.tif",
    )
