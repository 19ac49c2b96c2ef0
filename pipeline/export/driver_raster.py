"""The driver map as a Cloud-Optimized GeoTIFF: driver code and confidence per 30 m pixel.

**CRS: the project's equal-area CRS (EPSG:6933), not the province's UTM zone.** Areas are
then a plain pixel count (every pixel is ``resolution_m``² on the ground, 900 m² at 30 m,
the area of a Landsat pixel), and rasters of provinces in different UTM zones (Indonesia
spans 46-54) share one grid, aligned to multiples of the resolution, so they mosaic
without resampling. The price is shape: near the equator a 30 m EPSG:6933 pixel covers
about 26 m east-west by 35 m north-south. For a map of event polygons that is acceptable;
for pixel-exact overlays on Landsat, pass a UTM ``grid`` instead.

**Bands** (uint8): 1 ``driver_code`` (1..4 in :data:`pipeline.core.drivers.DRIVER_CLASSES`
order, with the driver colours as a palette) and 2 ``confidence_pct`` (the event's top
class probability x 100). Both bands declare **0 as nodata**: a GeoTIFF holds one nodata
value per file, so a different one per band (e.g. 255 for confidence) would silently
become the same on reopening. 0 % confidence cannot occur (the top of 4 probabilities is at
least 25 %), and valid confidences are clipped to 1..100 so 0 keeps meaning "no event".

Events are burned by pixel centre, a batch of events at a time and each batch strip by
strip (into the window its events cover), so memory stays bounded whatever the map's size
and number of events; overviews use MODE resampling, which ignores nodata, so small events
stay visible when zoomed out (count areas at full resolution, never from overviews).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize
from rasterio.windows import Window

from pipeline.core.atomic import atomic_output, temp_sibling
from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_COLOURS, has_driver
from pipeline.core.grid import EQUAL_AREA_CRS, pixel_spans

NODATA = 0
BAND_DESCRIPTIONS = ("driver_code", "confidence_pct")
#: COG tile size; also the strip height unit of the intermediate GeoTIFF.
BLOCK_SIZE = 512
#: Rows rasterised at once: one block row, so a 20,000 px wide province needs ~60 MB.
_STRIP_ROWS = BLOCK_SIZE


def driver_raster_grid(features: gpd.GeoDataFrame, resolution_m: float = 30.0) -> GeoBox:
    """The equal-area grid covering ``features``, pixel edges on multiples of ``resolution_m``."""
    if features.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    if features.empty:
        raise ValueError("no features to cover; pass grid= for an all-nodata raster")
    bounds = features.geometry.to_crs(EQUAL_AREA_CRS.proj).total_bounds
    # tol=0: odc-geo may otherwise trim up to 1 % of a pixel off the features' edge.
    return GeoBox.from_bbox(
        tuple(bounds), EQUAL_AREA_CRS, resolution=resolution_m, tight=False, tol=0
    )


def write_driver_cog(
    features: gpd.GeoDataFrame,
    path: Path,
    resolution_m: float = 30.0,
    *,
    grid: GeoBox | None = None,
) -> Path:
    """Rasterise mapped events to a 2-band COG at ``path`` (atomic) and return ``path``.

    ``grid`` defaults to :func:`driver_raster_grid` over the mapped events; give one (e.g.
    a province's extent) to fix the footprint, or to write a raster with no events.
    Events without imagery (``driver_code`` 0) are not burned: they are nodata.
    """
    if features.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    if grid is None:
        grid = driver_raster_grid(_mapped(features), resolution_m)
    return write_driver_cog_batches([features], path, grid=grid)


def write_driver_cog_batches(batches: Iterable[gpd.GeoDataFrame], path: Path, *,
                             grid: GeoBox) -> Path:
    """:func:`write_driver_cog` for events arriving in ``batches``, on a given ``grid``
    (``lonlat_raster_grid`` of their bounds gives the one the whole frame would get)."""
    if grid.crs is None or grid.crs.geographic:
        raise ValueError("the driver raster needs a projected grid; use EQUAL_AREA_CRS")
    path = Path(path)
    staging = temp_sibling(path)  # plain tiled GeoTIFF; the COG driver can only copy
    try:
        # A small block cache: a burnt window is written back at once, never kept.
        with rasterio.Env(GDAL_CACHEMAX=_CACHE_MB), \
                rasterio.open(staging, "w+", **_profile(grid)) as dst:
            for batch in batches:
                if batch.crs is None:
                    raise ValueError("features have no CRS; set it with "
                                     "gdf.set_crs('EPSG:4326') first")
                _burn(dst, grid, _mapped(batch))
            _describe(dst)
        with atomic_output(path) as tmp:
            rasterio.shutil.copy(
                staging,
                tmp,
                driver="COG",
                BLOCKSIZE=BLOCK_SIZE,
                COMPRESS="DEFLATE",
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING="MODE",
            )
    finally:
        for leftover in (staging, Path(f"{staging}.aux.xml"), Path(f"{staging}.ovr")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return path


def lonlat_raster_grid(bounds: tuple[float, float, float, float],
                       resolution_m: float = 30.0) -> GeoBox:
    """:func:`driver_raster_grid` from the events' lon/lat bounds alone. EPSG:6933 is
    cylindrical (x from longitude, y from latitude, each monotonic), so the corners of
    the lon/lat box project to the bounds of the projected events exactly."""
    corners = gpd.GeoSeries(gpd.points_from_xy([bounds[0], bounds[2]], [bounds[1], bounds[3]]),
                            crs="EPSG:4326").to_crs(EQUAL_AREA_CRS.proj)
    x, y = corners.x.to_numpy(), corners.y.to_numpy()
    return GeoBox.from_bbox((x.min(), y.min(), x.max(), y.max()), EQUAL_AREA_CRS,
                            resolution=resolution_m, tight=False, tol=0)


#: GDAL block cache while burning (MB).
_CACHE_MB = 64


def _mapped(features: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return features[has_driver(features["driver_code"])]


def _profile(grid: GeoBox) -> dict:
    height, width = grid.shape.yx
    return {
        "driver": "GTiff", "width": width, "height": height, "count": 2, "dtype": "uint8",
        "nodata": NODATA, "crs": grid.crs.to_wkt(), "transform": grid.affine, "tiled": True,
        "blockxsize": BLOCK_SIZE, "blockysize": BLOCK_SIZE, "compress": "DEFLATE",
        "BIGTIFF": "IF_SAFER",
    }


def _burn(dst: rasterio.io.DatasetWriter, grid: GeoBox, mapped: gpd.GeoDataFrame) -> None:
    """Burn one batch of mapped events, strip by strip, into the windows they cover."""
    if mapped.empty:
        return
    geoms = mapped.geometry.to_crs(grid.crs.proj).to_numpy()
    # Lookup tables indexed by the burned event number (0 = no event).
    code_lut = np.concatenate([[NODATA], mapped["driver_code"].to_numpy()]).astype(np.uint8)
    confidence = np.rint(mapped["confidence"].to_numpy(dtype=float) * 100.0)
    confidence = np.where(np.isfinite(confidence), np.clip(confidence, 1, 100), NODATA)
    conf_lut = np.concatenate([[NODATA], confidence]).astype(np.uint8)
    height, width = grid.shape.yx
    first_row, last_row, first_col, last_col = pixel_spans(geoms, grid.affine, (height, width))
    for row0 in range(int(first_row.min()) // _STRIP_ROWS * _STRIP_ROWS,
                      int(last_row.max()) + 1, _STRIP_ROWS):
        row1 = min(row0 + _STRIP_ROWS, height)
        hits = np.flatnonzero((first_row < row1) & (last_row >= row0))
        if len(hits) == 0:
            continue
        col0, col1 = int(first_col[hits].min()), int(last_col[hits].max()) + 1
        window = Window(col0, row0, col1 - col0, row1 - row0)
        # One burn of event numbers, then two lookups: both bands share one footprint.
        index = rasterize(
            zip(geoms[hits], (hits + 1).tolist(), strict=True),
            out_shape=(row1 - row0, col1 - col0),
            transform=grid.affine @ Affine.translation(col0, row0),
            fill=0,
            dtype="uint32",
        )
        burnt = index > 0
        if not burnt.any():
            continue
        # Earlier batches' events in this window stay where this batch burnt nothing.
        bands = dst.read(window=window)
        bands[0][burnt], bands[1][burnt] = code_lut[index[burnt]], conf_lut[index[burnt]]
        dst.write(bands, window=window)


def _describe(dst: rasterio.io.DatasetWriter) -> None:
    """Band names, class codes, units and a palette, so GIS tools need no side file."""
    for band, description in enumerate(BAND_DESCRIPTIONS, start=1):
        dst.set_band_description(band, description)
    classes = {f"DRIVER_CODE_{code}": name for code, name in enumerate(DRIVER_CLASSES, start=1)}
    dst.update_tags(**classes, NODATA_MEANING="no mapped loss event (or no imagery)")
    dst.update_tags(1, **classes)
    dst.update_tags(2, MEANING="top class probability of the event x 100")
    dst.set_band_unit(2, "percent")
    palette = {NODATA: (0, 0, 0, 0)}
    for code, name in enumerate(DRIVER_CLASSES, start=1):
        value = DRIVER_COLOURS[name].lstrip("#")
        palette[code] = (*(int(value[i : i + 2], 16) for i in (0, 2, 4)), 255)
    dst.write_colormap(1, palette)
