"""One event's chip: its composite cut from the lattice cells' composites, and single
scenes for scene data augmentation (SDA).

View 0 is the mosaic of the composites of the lattice cells under the chip
(``composite_store``), the very pixels the map's window of the event is cut from. Views
1.. are the least cloudy single scenes passing the cloud filter over the chip, ranked by
their QA overview before any of them is warped.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from odc.geo.geom import Geometry
from shapely.geometry.base import BaseGeometry

from pipeline.imagery.composite_cells import pan_partners, window_scene_rows
from pipeline.imagery.composite_store import CompositeSource, grid_composite
from pipeline.imagery.qa_overview import qa_overview
from pipeline.imagery.views import (
    CHIP_BANDS,
    ChipSpec,
    EventChip,
    chip_geobox,
    rasterize_region,
    scene_on_grid,
)


def build_event_chip(
    geometry_4326: BaseGeometry,
    loss_year: int,
    source: CompositeSource,
    composite_only: bool = False,
) -> EventChip:
    """Cut one event's chip: composite from ``source``'s cells, singles from its scenes."""
    spec = source.spec
    geobox = chip_geobox(geometry_4326, spec)
    region = Geometry(geometry_4326, "EPSG:4326").to_crs(geobox.crs).geom
    loss_mask = rasterize_region(region, geobox)
    n_views = 1 if composite_only else spec.n_views
    image = np.zeros((n_views, len(CHIP_BANDS), *geobox.shape), dtype=np.float32)
    dates, clouds = [""] * n_views, [1.0] * n_views
    comp = grid_composite(geobox, loss_year, source)
    if comp.image is None:
        return EventChip(geobox, image, dates, clouds, [], loss_mask, region,
                         status=comp.problem)
    image[0], dates[0] = comp.image, "composite"
    clouds[0] = float(np.mean(list(comp.clouds.values())))
    if not composite_only:
        singles = single_views(geobox, loss_year, source.scene_store, source.index, spec)
        for i, (sid, cloud, pan) in enumerate(singles, start=1):
            view = scene_on_grid(source.scene_store, sid, geobox, pan_from=pan, out=image[i])
            # Cloudy pixels of single views keep their values (as ForestNet's scene PNGs
            # do); only missing pixels are filled from the composite.
            holes = np.isnan(view.image)  # outside the scene: usually none
            if holes.any():
                np.copyto(image[i], comp.image, where=holes)
            dates[i], clouds[i] = view.date, cloud
    return EventChip(geobox, image, dates, clouds, comp.scene_ids, loss_mask, region,
                     notes=comp.notes)


def single_views(geobox, loss_year: int, store: Path, index: gpd.GeoDataFrame,
                 spec: ChipSpec) -> list[tuple[str, float, str | None]]:
    """(scene id, cloud over the chip, pan partner) of the SDA views: the least cloudy
    candidates passing the cloud filter, at most ``max_single_views``."""
    if not spec.max_single_views:
        return []
    rows = window_scene_rows(index, geobox.extent.to_crs("EPSG:4326").geom, loss_year, spec)
    ids = index["scene_id"].to_numpy()[rows]
    ranked = sorted((qa_overview(store, sid).cloud_fraction(geobox), sid) for sid in ids)
    # A scene with no usable pixel over the chip is never a view, whatever the filter.
    passing = [(sid, cloud) for cloud, sid in ranked
               if cloud <= spec.max_view_cloud and cloud < 1.0]
    pans = pan_partners(index, rows, spec)
    return [(sid, cloud, pans.get(sid)) for sid, cloud in passing[:spec.max_single_views]]
