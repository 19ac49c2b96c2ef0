"""Deterministic GeoPackage writing."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio

#: GDAL stamps ``gpkg_contents.last_change`` with the wall clock unless this is set; a fixed
#: value keeps the same world byte-identical between runs.
_FIXED_DATE = "2000-01-01T00:00:00.000Z"


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    """Write one layer to a new GeoPackage (with a spatial index) reproducibly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_DATE})
    try:
        pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
