"""The user's area of interest: any vector file GDAL reads, as valid EPSG:4326 geometry."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely

from pipeline.core.errors import ForestNetError


class AreaOfInterestError(ForestNetError, ValueError):
    """The area-of-interest file cannot be read or holds nothing to map."""


def read_aoi(path: Path) -> gpd.GeoDataFrame:
    """The area of interest in EPSG:4326, empty geometries dropped and the rest made valid."""
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise AreaOfInterestError(f"mapping.aoi: cannot read {path} ({exc})") from None
    if frame.crs is None:
        raise AreaOfInterestError(f"mapping.aoi: {path} has no CRS")
    geoms = frame.geometry.to_numpy()
    frame = frame[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    frame = frame.to_crs("EPSG:4326")
    frame["geometry"] = frame.geometry.make_valid()
    if frame.empty or frame.union_all().is_empty:
        raise AreaOfInterestError(f"mapping.aoi: {path} holds no geometry")
    return frame
