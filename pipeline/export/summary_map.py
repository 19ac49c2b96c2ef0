"""A quick-look PNG of a driver map: province outlines, loss events filled by driver, a legend.

Meant for run reports and Prefect artifacts, not for analysis (the GeoPackage and the COG
are the products). Colours are the project's driver colours (``pipeline.core.drivers``), the
same ones the QGIS style uses, so the PNG and the GeoPackage read alike.

Events are burnt onto a raster at the map's own pixel size, batch by batch, and drawn as
one image: memory is the picture, never the events, so a national map of millions of
events renders as fast as a province (a vector plot would hold every polygon).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.features import rasterize
from rasterio.transform import from_bounds

from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_COLOURS, has_driver
from pipeline.core.grid import pixel_spans
from pipeline.export.geopackage import add_area_ha

_OUTLINE = "#404040"
_LAND = "#f4f4f4"
#: Events spanning fewer pixels than this each way are painted as their bounding box.
_BOX_PIXELS = 3


def write_driver_png(
    features: gpd.GeoDataFrame,
    provinces_gdf: gpd.GeoDataFrame | None,
    path: Path,
    title: str,
    *,
    dpi: int = 150,
    width_in: float = 8.0,
) -> Path:
    """Render ``features`` over ``provinces_gdf`` to a PNG at ``path`` (atomic); return ``path``.

    Events without imagery (``driver_code`` 0) are left out, as in the GeoPackage; each
    event paints every pixel it touches, so events far smaller than a pixel at province
    scale still show up.
    """
    if features.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    events = _mapped(features)
    bounds = tuple(events.total_bounds) if len(events) else None
    return write_driver_png_batches([events], provinces_gdf, path, title, bounds=bounds,
                                    dpi=dpi, width_in=width_in)


def write_driver_png_batches(
    batches: Iterable[gpd.GeoDataFrame],
    provinces_gdf: gpd.GeoDataFrame | None,
    path: Path,
    title: str,
    *,
    bounds: tuple[float, float, float, float] | None,
    dpi: int = 150,
    width_in: float = 8.0,
) -> Path:
    """:func:`write_driver_png` over events arriving in ``batches``, in bounded memory;
    ``bounds`` (lon/lat) are the mapped events' (None: no events), which fix the extent
    before the first batch is burnt."""
    outlines = None
    if provinces_gdf is not None and len(provinces_gdf):
        if provinces_gdf.crs is None:
            raise ValueError("provinces_gdf has no CRS; provinces.provinces() gives EPSG:4326")
        outlines = provinces_gdf.geometry.to_crs("EPSG:4326")

    extent = _extent(bounds, outlines)
    lat = (extent[1] + extent[3]) / 2
    # Degrees of longitude shrink by cos(latitude); scale y so the map is not stretched.
    aspect = 1.0 / max(math.cos(math.radians(lat)), 0.1)
    span_x, span_y = extent[2] - extent[0], (extent[3] - extent[1]) * aspect
    height_in = min(max(width_in * span_y / span_x, 3.0), 2.0 * width_in)

    # A bare Figure with an Agg canvas, not pyplot: no global state, safe in worker threads.
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(extent[0], extent[2])
    ax.set_ylim(extent[1], extent[3])
    ax.set_aspect(aspect)
    ax.apply_aspect()  # the axes' final box: the events' raster matches its pixels
    box = ax.get_window_extent()
    shape = (max(int(round(box.height)), 1), max(int(round(box.width)), 1))
    painted, counts, areas = _burn(batches, extent, shape)

    if outlines is not None:
        outlines.plot(ax=ax, facecolor=_LAND, edgecolor="none", zorder=0)
        outlines.boundary.plot(ax=ax, color=_OUTLINE, linewidth=0.6, zorder=3)
    ax.imshow(_rgba(painted), extent=(extent[0], extent[2], extent[1], extent[3]),
              origin="upper", interpolation="nearest", aspect=aspect, zorder=2)
    handles = []
    for k, name in enumerate(DRIVER_CLASSES):
        colour = DRIVER_COLOURS[name]
        label = f"{name} ({counts[k]:,} events, {areas[k]:,.0f} ha)"
        handles.append(Patch(facecolor=colour, edgecolor=colour, label=label))

    ax.set_xlim(extent[0], extent[2])
    ax.set_ylim(extent[1], extent[3])
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("longitude (°)", fontsize=8)
    ax.set_ylabel("latitude (°)", fontsize=8)
    # An explicit location: loc="best" scans every artist.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              title="Driver", title_fontsize=9, frameon=False)

    path = Path(path)
    with atomic_output(path) as tmp:
        # The temp name has no .png suffix, so the format is given explicitly.
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def _mapped(features: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    events = features.to_crs("EPSG:4326")
    return events[has_driver(events["driver_code"])]


def _burn(batches: Iterable[gpd.GeoDataFrame], extent: tuple[float, float, float, float],
          shape: tuple[int, int]) -> tuple[np.ndarray, list[int], list[float]]:
    """Pixels each driver paints ``(drivers, rows, cols)``, and its events and hectares."""
    transform = from_bounds(*extent, shape[1], shape[0])
    painted = np.zeros((len(DRIVER_CLASSES), *shape), bool)
    counts, areas = [0] * len(DRIVER_CLASSES), [0.0] * len(DRIVER_CLASSES)
    for batch in batches:
        events = _mapped(batch)
        if "area_ha" not in events.columns:
            events = add_area_ha(events)
        for k, name in enumerate(DRIVER_CLASSES):
            subset = events[(events["driver"] == name).to_numpy()]
            counts[k] += len(subset)
            areas[k] += float(subset["area_ha"].sum())
            if len(subset):
                _paint(painted[k], subset.geometry.to_numpy(), transform)
    return painted, counts, areas


def _paint(canvas: np.ndarray, geoms: np.ndarray, transform) -> None:
    """Set every pixel of ``canvas`` each geometry touches. An event a few pixels across
    (most, at this scale) paints its bounding box's pixels, all at once; only larger ones
    go through ``rasterize``, which costs a Python conversion per polygon."""
    r0, r1, c0, c1 = pixel_spans(geoms, transform, canvas.shape)
    small = (c1 - c0 < _BOX_PIXELS) & (r1 - r0 < _BOX_PIXELS)
    for dr in range(_BOX_PIXELS):
        for dc in range(_BOX_PIXELS):
            hit = small & (r0 + dr <= r1) & (c0 + dc <= c1)
            canvas[r0[hit] + dr, c0[hit] + dc] = True
    if (~small).any():
        canvas |= rasterize(((g, 1) for g in geoms[~small]), out_shape=canvas.shape,
                            transform=transform, fill=0, all_touched=True,
                            dtype="uint8").astype(bool)


def _rgba(painted: np.ndarray) -> np.ndarray:
    """The drivers' pixels in their colours, later drivers on top (as when each was
    plotted in turn); transparent elsewhere."""
    image = np.zeros((*painted.shape[1:], 4))
    for k, name in enumerate(DRIVER_CLASSES):
        image[painted[k]] = to_rgba_array(DRIVER_COLOURS[name])[0]
    return image


def _extent(
    events: tuple[float, float, float, float] | None, outlines: gpd.GeoSeries | None
) -> tuple[float, float, float, float]:
    """Map extent (lon/lat) around the provinces and the events' bounds, padded by 3 %."""
    bounds = [b for b in (None if outlines is None or outlines.empty else outlines.total_bounds,
                          events) if b is not None]
    if not bounds:
        raise ValueError("nothing to draw: no provinces and no events with a driver")
    x0, y0 = min(b[0] for b in bounds), min(b[1] for b in bounds)
    x1, y1 = max(b[2] for b in bounds), max(b[3] for b in bounds)
    pad = 0.03 * max(x1 - x0, y1 - y0, 1e-3)
    return x0 - pad, y0 - pad, x1 + pad, y1 + pad
