"""Loss area per driver on a fixed 1 km grid, its dominant driver, and a GFW/WRI crosswalk.

The grid is square cells in the equal-area CRS (EPSG:6933) with edges on multiples of the
cell size, so grids from different runs, provinces or years line up cell for cell and can
be compared with the WRI/Google DeepMind 1 km "drivers of forest loss" product
(Sims et al. 2025). Areas come from exact polygon/cell intersections in that CRS, never
from centroids, so an event across a cell edge is split between the cells it covers.

**The crosswalk** (:data:`GFW_CROSSWALK`) maps our 4 ForestNet classes to the 7 WRI/GFW
classes. It is lossy in both directions, and each entry carries a ``fit`` flag:

- *Plantation -> Permanent agriculture* (``partial``). Oil palm and other estate crops,
  most of this class in Indonesia, are long-term conversion to agriculture. But ForestNet's
  class also holds *timber* plantations, and WRI treats the harvest cycles of wood-fibre
  plantations as Logging; a pulpwood-dominated cell may disagree with WRI.
- *Smallholder agriculture -> Shifting cultivation* (``partial``). Small-scale clearing
  with later regrowth is WRI's shifting cultivation. The ForestNet class, however, also
  holds small-scale oil palm and mixed tree-crop plots, which are permanent agriculture;
  our 4 classes cannot tell the two apart, so the GFW label is unreliable in smallholder
  tree-crop landscapes (e.g. Sumatra's rubber and oil palm belts).
- *Grassland shrubland -> Wildfire* (``partial``). ForestNet's class names the land cover
  after loss, not the cause. In Indonesia forest that turns to grass or shrub is mostly
  burnt (peat and drought-year fires), with no conversion afterwards, which is WRI's
  wildfire. Degraded or abandoned clearings also end as shrubland, and WRI's "other
  natural disturbances" (storms, floods, landslides) would look the same, but they are rare
  here; fire is the likelier reading, not an observed one.
- *Other -> unmapped (mixed)* (``none``). ForestNet's Other merges mining (WRI: hard
  commodities), logging (Logging), secondary forest, fish ponds and anything else; no
  single WRI class is honest, so these cells get :data:`UNMAPPED` rather than a guess.

WRI's settlements & infrastructure and other natural disturbances have no counterpart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from odc.geo.geobox import GeoBox

from pipeline.core.atomic import atomic_output
from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS, has_driver
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.export.geopackage import GPKG_VERSION
from pipeline.export.qgis_style import categorized_qml, write_layer_style

#: The 7 classes of the WRI/Google DeepMind drivers of forest loss product (Sims et al. 2025).
GFW_CLASSES: tuple[str, ...] = (
    "Permanent agriculture",
    "Hard commodities",
    "Shifting cultivation",
    "Logging",
    "Wildfire",
    "Settlements and infrastructure",
    "Other natural disturbances",
)
#: Crosswalk value for a ForestNet class with no single honest WRI/GFW counterpart.
UNMAPPED = "Unmapped (mixed)"

DOMINANT_GRID_LAYER = "dominant_driver_1km"
CROSSWALK_TABLE = "gfw_crosswalk"
AREA_COLUMNS: tuple[str, ...] = tuple(f"area_ha_{key}" for key in DRIVER_KEYS)
_SLIVER_M2 = 1e-3


@dataclass(frozen=True)
class GfwMatch:
    """Where one ForestNet class lands in the WRI/GFW scheme, and how well."""

    gfw_class: str
    fit: Literal["close", "partial", "none"]
    note: str


#: ForestNet class -> WRI/GFW class; the module docstring gives the reasoning and limits.
GFW_CROSSWALK: Mapping[str, GfwMatch] = MappingProxyType({
    "Plantation": GfwMatch(
        "Permanent agriculture", "partial",
        "estate crops (oil palm) are permanent agriculture; timber plantations are "
        "Logging in WRI's scheme",
    ),
    "Smallholder agriculture": GfwMatch(
        "Shifting cultivation", "partial",
        "small-scale clearing with regrowth; smallholder oil palm and tree crops would be "
        "permanent agriculture",
    ),
    "Grassland shrubland": GfwMatch(
        "Wildfire", "partial",
        "loss to grass/shrub, mostly fire in Indonesia; the cause is inferred from the "
        "land cover, not observed",
    ),
    "Other": GfwMatch(
        UNMAPPED, "none",
        "mixes mining (hard commodities), logging, secondary forest, fish ponds and other",
    ),
})

_COLUMNS: dict[str, str] = {
    "cell_id": "object",
    "cell_x": "int64",
    "cell_y": "int64",
    **dict.fromkeys(AREA_COLUMNS, "float64"),
    "loss_area_ha": "float64",
    "n_events": "int32",
    "dominant_driver": "object",
    "dominant_code": "int16",
    "dominant_share": "float64",
    "gfw_class": "object",
    "gfw_fit": "object",
}


def dominant_driver_grid(features: gpd.GeoDataFrame, cell_m: float = 1000.0) -> gpd.GeoDataFrame:
    """Loss area (ha) per driver in each ``cell_m`` grid cell that holds loss, in EPSG:4326.

    Cell ``(cell_x, cell_y)`` spans ``[cell_x, cell_x + 1) * cell_m`` east and
    ``[cell_y, cell_y + 1) * cell_m`` north in EPSG:6933; ``cell_id`` is ``"x:y"`` and is
    stable across runs. ``dominant_driver`` has the largest area (ties go to the earlier
    class in model order), ``dominant_share`` is its fraction of the cell's loss, and
    ``gfw_class``/``gfw_fit`` come from :data:`GFW_CROSSWALK`. Events without imagery
    (``driver_code`` 0) are left out.
    """
    return dominant_driver_grid_batches([features], cell_m)


def dominant_driver_grid_batches(batches: Iterable[gpd.GeoDataFrame],
                                 cell_m: float = 1000.0) -> gpd.GeoDataFrame:
    """:func:`dominant_driver_grid` of events arriving in ``batches`` (disjoint sets of
    events): each batch is cut into cells and summed per cell, so memory holds one batch
    and the cells with loss, never the events."""
    if not cell_m > 0:
        raise ValueError(f"cell_m must be positive, not {cell_m!r}")
    sums: pd.DataFrame | None = None
    for features in batches:
        cells = _batch_cells(features, cell_m)
        if cells is not None:
            sums = cells if sums is None else (
                pd.concat([sums, cells]).groupby(level=["cell_x", "cell_y"]).sum())
    if sums is None:
        return _empty_grid()
    return _aggregate(sums.sort_index(), cell_m)


def _batch_cells(features: gpd.GeoDataFrame, cell_m: float) -> pd.DataFrame | None:
    """One batch's area per (cell, driver), as columns 0..3, and its events per cell."""
    if features.crs is None:
        raise ValueError("features have no CRS; set it with gdf.set_crs('EPSG:4326') first")
    mapped = features[has_driver(features["driver_code"])]
    if mapped.empty:
        return None
    geoms = mapped.geometry.to_crs(EQUAL_AREA_CRS.proj).to_numpy()
    invalid = ~shapely.is_valid(geoms)
    geoms[invalid] = shapely.make_valid(geoms[invalid])  # intersection fails on bad rings
    # The project's grid type fixes the origin: edges on multiples of cell_m (tol=0 keeps
    # odc-geo from trimming a sliver of the outermost events). Cell ids are global, so
    # batches with their own boxes add up cell for cell.
    geobox = GeoBox.from_bbox(tuple(shapely.total_bounds(geoms)), EQUAL_AREA_CRS,
                              resolution=cell_m, tight=False, tol=0)
    pieces = _cell_pieces(geoms, geobox, cell_m)
    pieces["driver"] = mapped["driver_code"].to_numpy()[pieces["event"]] - 1
    keys = ["cell_x", "cell_y"]
    areas = (pieces.pivot_table(index=keys, columns="driver", values="area_ha", aggfunc="sum",
                                fill_value=0.0)
             .reindex(columns=range(len(DRIVER_CLASSES)), fill_value=0.0))
    # An event lies in one batch only: its cells' event counts add up across batches.
    areas["n_events"] = pieces.groupby(keys)["event"].nunique().reindex(areas.index)
    areas.columns = [str(c) for c in areas.columns]
    return areas


def write_dominant_grid(grid: gpd.GeoDataFrame, path: Path) -> Path:
    """Write ``grid`` as layer ``dominant_driver_1km`` of a GeoPackage at ``path`` (atomic).

    The file also holds the crosswalk as table ``gfw_crosswalk`` and a default QGIS style
    colouring cells by ``dominant_driver`` in the driver colours. Returns ``path``.
    """
    missing = [c for c in _COLUMNS if c not in grid.columns]
    if missing:
        raise ValueError(f"grid lacks columns {missing}; build it with dominant_driver_grid()")
    crosswalk = pd.DataFrame(
        [{"driver": name, "gfw_class": m.gfw_class, "fit": m.fit, "note": m.note}
         for name, m in GFW_CROSSWALK.items()]
    )
    path = Path(path)
    with atomic_output(path) as tmp:
        # GDAL warns about a GeoPackage without the .gpkg extension, so stage under one.
        staging = tmp.with_name(f"{tmp.name}.gpkg")
        try:
            pyogrio.write_dataframe(
                grid.to_crs("EPSG:4326"), staging, layer=DOMINANT_GRID_LAYER, driver="GPKG",
                geometry_type="Polygon", dataset_options={"VERSION": GPKG_VERSION},
                layer_options={"SPATIAL_INDEX": "YES", "GEOMETRY_NAME": "geom",
                               "DESCRIPTION": "Forest loss area per driver in 1 km "
                                              "equal-area (EPSG:6933) cells"},
            )
            pyogrio.write_dataframe(crosswalk, staging, layer=CROSSWALK_TABLE, driver="GPKG")
            write_layer_style(staging, DOMINANT_GRID_LAYER, categorized_qml("dominant_driver"),
                              "dominant_driver", "1 km cells coloured by dominant driver")
            os.replace(staging, tmp)
        finally:
            for leftover in (staging, Path(f"{staging}-journal"), Path(f"{staging}-wal")):
                leftover.unlink(missing_ok=True)
    return path


def _cell_pieces(geoms: np.ndarray, geobox: GeoBox, cell_m: float) -> pd.DataFrame:
    """Intersection area of every event with every cell of its bounding box (vectorised)."""
    minx, miny, maxx, maxy = shapely.bounds(geoms).T
    # Cell coordinates of the bounds (north-up grid): columns grow east, rows grow south.
    left, top = geobox.affine.c, geobox.affine.f
    c0 = np.floor((minx - left) / cell_m).astype(np.int64)
    r0 = np.floor((top - maxy) / cell_m).astype(np.int64)
    ncols = np.maximum(np.ceil((maxx - left) / cell_m).astype(np.int64) - c0, 1)
    nrows = np.maximum(np.ceil((top - miny) / cell_m).astype(np.int64) - r0, 1)
    counts = ncols * nrows
    event = np.repeat(np.arange(len(geoms)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    col = c0[event] + local % ncols[event]
    row = r0[event] + local // ncols[event]
    # Global cell indices: multiples of cell_m from the CRS origin, the same in every run.
    cell_x = int(round(geobox.affine.c / cell_m)) + col
    cell_y = int(round(geobox.affine.f / cell_m)) - row - 1
    cells = shapely.box(cell_x * cell_m, cell_y * cell_m, (cell_x + 1) * cell_m,
                        (cell_y + 1) * cell_m)
    area = shapely.area(shapely.intersection(geoms[event], cells))
    # Drop round-off slivers (an edge that sits on a cell line after reprojection), so
    # a cell is never listed for a millionth of a square metre of loss.
    keep = area > _SLIVER_M2
    return pd.DataFrame({"event": event[keep], "cell_x": cell_x[keep], "cell_y": cell_y[keep],
                         "area_ha": area[keep] / 10_000.0})


def _aggregate(sums: pd.DataFrame, cell_m: float) -> gpd.GeoDataFrame:
    """One row per cell: areas per driver, event count, dominant driver and its GFW class."""
    values = sums[[str(k) for k in range(len(DRIVER_CLASSES))]].to_numpy(np.float64)
    total = values.sum(axis=1)
    # Ties (within 0.01 m², reprojection round-off) go to the earlier class in model order.
    best = (values >= values.max(axis=1, keepdims=True) - 1e-6).argmax(axis=1)
    cell_x = sums.index.get_level_values("cell_x").to_numpy()
    cell_y = sums.index.get_level_values("cell_y").to_numpy()
    dominant = [DRIVER_CLASSES[i] for i in best]
    frame = pd.DataFrame({
        "cell_id": [f"{x}:{y}" for x, y in zip(cell_x, cell_y, strict=True)],
        "cell_x": cell_x,
        "cell_y": cell_y,
        **{name: values[:, i] for i, name in enumerate(AREA_COLUMNS)},
        "loss_area_ha": total,
        "n_events": sums["n_events"].to_numpy(),
        "dominant_driver": dominant,
        "dominant_code": best + 1,
        "dominant_share": values[np.arange(len(best)), best] / total,
        "gfw_class": [GFW_CROSSWALK[d].gfw_class for d in dominant],
        "gfw_fit": [GFW_CROSSWALK[d].fit for d in dominant],
    }).astype(_COLUMNS)
    boxes = shapely.box(cell_x * cell_m, cell_y * cell_m, (cell_x + 1) * cell_m,
                        (cell_y + 1) * cell_m)
    # EPSG:6933 is cylindrical: a cell's edges are a meridian and a parallel, so its four
    # corners map to an exact lon/lat rectangle and need no densifying.
    geometry = gpd.GeoSeries(boxes, crs=EQUAL_AREA_CRS.proj).to_crs("EPSG:4326")
    return gpd.GeoDataFrame(frame, geometry=geometry.to_numpy(), crs="EPSG:4326")


def _empty_grid() -> gpd.GeoDataFrame:
    columns = {name: pd.Series([], dtype=dtype) for name, dtype in _COLUMNS.items()}
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs="EPSG:4326"),
                            crs="EPSG:4326")
