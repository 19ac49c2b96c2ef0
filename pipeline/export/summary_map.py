"""A quick-look PNG of a driver map: province outlines, loss events filled by driver, a legend.

Meant for run reports and Prefect artifacts, not for analysis (the GeoPackage and the COG
are the products). Colours are the project's driver colours (``pipeline.core.drivers``), the
same ones the QGIS style uses, so the PNG and the GeoPackage read alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_COLOURS
from pipeline.export.geopackage import add_area_ha

_OUTLINE = "#404040"
_LAND = "#f4f4f4"
#: Event edge width in points: a sub-pixel polygon still paints a dot about 2 px wide.
_EVENT_EDGE_PT = 0.8


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

    Events without imagery (``driver_code`` 0) are left out, as in the GeoPackage. Each
    driver is one ``GeoSeries.plot`` call (one collection), so thousands of polygons
    render in seconds; each polygon gets an edge in its own colour, so events far smaller
    than a pixel at province scale still show up.
    """
    if features.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    events = features.to_crs("EPSG:4326")
    events = events[events["driver_code"].between(1, len(DRIVER_CLASSES)).to_numpy()]
    if "area_ha" not in events.columns:
        events = add_area_ha(events)
    outlines = None
    if provinces_gdf is not None and len(provinces_gdf):
        if provinces_gdf.crs is None:
            raise ValueError("provinces_gdf has no CRS; provinces.provinces() gives EPSG:4326")
        outlines = provinces_gdf.geometry.to_crs("EPSG:4326")

    extent = _extent(events, outlines)
    lat = (extent[1] + extent[3]) / 2
    # Degrees of longitude shrink by cos(latitude); scale y so the map is not stretched.
    aspect = 1.0 / max(math.cos(math.radians(lat)), 0.1)
    span_x, span_y = extent[2] - extent[0], (extent[3] - extent[1]) * aspect
    height_in = min(max(width_in * span_y / span_x, 3.0), 2.0 * width_in)

    # A bare Figure with an Agg canvas, not pyplot: no global state, safe in worker threads.
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if outlines is not None:
        outlines.plot(ax=ax, facecolor=_LAND, edgecolor="none", zorder=0)
        outlines.boundary.plot(ax=ax, color=_OUTLINE, linewidth=0.6, zorder=3)
    handles = []
    for name in DRIVER_CLASSES:
        colour = DRIVER_COLOURS[name]
        subset = events[(events["driver"] == name).to_numpy()]
        if len(subset):
            subset.geometry.plot(
                ax=ax, facecolor=colour, edgecolor=colour, linewidth=_EVENT_EDGE_PT, zorder=2
            )
        area = float(subset["area_ha"].sum())
        label = f"{name} ({len(subset):,} events, {area:,.0f} ha)"
        handles.append(Patch(facecolor=colour, edgecolor=colour, label=label))

    ax.set_xlim(extent[0], extent[2])
    ax.set_ylim(extent[1], extent[3])
    ax.set_aspect(aspect)
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("longitude (°)", fontsize=8)
    ax.set_ylabel("latitude (°)", fontsize=8)
    # An explicit location: loc="best" scans every artist, slow with thousands of polygons.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              title="Driver", title_fontsize=9, frameon=False)

    path = Path(path)
    with atomic_output(path) as tmp:
        # The temp name has no .png suffix, so the format is given explicitly.
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def _extent(
    events: gpd.GeoDataFrame, outlines: gpd.GeoSeries | None
) -> tuple[float, float, float, float]:
    """Map extent (lon/lat) around the provinces and the events, padded by 3 %."""
    parts = [g for g in (outlines, events.geometry) if g is not None and not g.empty]
    if not parts:
        raise ValueError("nothing to draw: no provinces and no events with a driver")
    bounds = [g.total_bounds for g in parts]
    x0, y0 = min(b[0] for b in bounds), min(b[1] for b in bounds)
    x1, y1 = max(b[2] for b in bounds), max(b[3] for b in bounds)
    pad = 0.03 * max(x1 - x0, y1 - y0, 1e-3)
    return x0 - pad, y0 - pad, x1 + pad, y1 + pad
