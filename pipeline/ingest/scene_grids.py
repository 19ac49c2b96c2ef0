"""The grids of a stored scene, read from the GeoTransforms the store writes.

The 30 m grid (multispectral and QA) is the CF grid mapping's ``GeoTransform``; the 15 m
pan grid carries its own on the ``pan`` array, because real products put the pan's first
pixel centre on the 30 m grid's (7.5 m in from its corner) and the sample world does not.
"""

from __future__ import annotations

from pathlib import Path

import zarr
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox

#: The attribute GDAL and rioxarray use for a grid's affine, in GDAL's order.
GEOTRANSFORM = "GeoTransform"


def geotransform_attr(affine: Affine) -> str:
    """``affine`` as the GDAL GeoTransform string that rioxarray writes."""
    return " ".join(repr(float(v)) for v in affine.to_gdal())


def _affine(text: str) -> Affine:
    return Affine.from_gdal(*(float(v) for v in text.split()))


def scene_crs(group: zarr.Group) -> CRS:
    """The scene's CRS, by EPSG code where the store has one."""
    # Chip grids are built from codes too, and two CRS objects from one code compare
    # ~100x faster than a WKT against a code.
    epsg = group.attrs.get("epsg")
    return CRS(f"EPSG:{epsg}") if epsg else CRS(group["spatial_ref"].attrs["crs_wkt"])


def stored_grids(group: zarr.Group) -> tuple[GeoBox, GeoBox | None]:
    """The 30 m grid and the 15 m pan grid (None without pan) of one scene group."""
    crs = scene_crs(group)
    shape = group["qa_pixel"].shape
    grid = GeoBox(shape, _affine(group["spatial_ref"].attrs[GEOTRANSFORM]), crs)
    if "pan" not in group:
        return grid, None
    pan = group["pan"]
    text = pan.attrs.get(GEOTRANSFORM)
    if text is None:  # stores written before the pan carried its own: its pixel centres
        x, y = group["x_pan"][:2], group["y_pan"][:2]
        rx, ry = float(x[1] - x[0]), float(y[1] - y[0])
        affine = Affine(rx, 0.0, float(x[0]) - rx / 2, 0.0, ry, float(y[0]) - ry / 2)
    else:
        affine = _affine(text)
    return grid, GeoBox(pan.shape, affine, crs)


def scene_geobox(store: Path, scene_id: str) -> GeoBox:
    """The 30 m grid of one stored scene."""
    group = zarr.open_group(str(Path(store) / scene_id), mode="r", zarr_format=3)
    return stored_grids(group)[0]
