"""Auxiliary predictors: SRTM-like DEM, OSM-like roads and settlements, peat, climate.

All cover the region plus a >= 3 km margin, in EPSG:4326 like their real sources.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from odc.geo.geobox import GeoBox
from scipy import ndimage
from shapely.geometry import box

from pipeline.core.grid import pixel_centres

from .features import Features
from .layout import Event
from .noise import SmoothField, stream
from .rasters import rasterise, write_tif
from .region import Region, geom_to_lonlat, lonlat_grid
from .spec import WorldSpec
from .vectors import write_gpkg

DEM_NODATA = -32768
CLIMATE_NODATA = -9999.0


class Terrain:
    """Smooth hills rising to the north, defined on lon/lat so every grid samples one surface."""

    def __init__(self, rng: np.random.Generator, bbox: tuple[float, float, float, float]) -> None:
        self.bbox = bbox
        self.south, self.north = bbox[1], bbox[3]
        self.hills = SmoothField(rng, bbox, 0.02, 1.2)  # ~2 km hills
        self.knolls = SmoothField(rng, bbox, 0.005, 1.0)  # ~500 m knolls

    def height(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        north = (lat - self.south) / (self.north - self.south)
        return (
            25.0
            + 110.0 * north
            + 40.0 * self.hills.sample(lon, lat)
            + 10.0 * self.knolls.sample(lon, lat)
        )


def write_ancillary(
    root: Path, spec: WorldSpec, region: Region, features: Features, events: tuple[Event, ...]
) -> dict[str, str]:
    """Write DEM, climate and the three vector layers; return their relative paths."""
    rng = stream(spec.seed, "ancillary")
    terrain = Terrain(rng, region.aux_bbox_lonlat)
    paths = {
        "srtm_dem": "aux/srtm_dem.tif",
        "climate": "aux/climate.tif",
        "roads": "aux/roads.gpkg",
        "settlements": "aux/settlements.gpkg",
        "peat": "aux/peat.gpkg",
    }
    write_tif(
        root / paths["srtm_dem"],
        _dem(rng, region, features, events, terrain),
        lonlat_grid(region.aux_bbox_lonlat, 3600, centre_on_lattice=True),
        nodata=DEM_NODATA,
    )
    climate_grid = lonlat_grid(region.aux_bbox_lonlat, 120)
    write_tif(
        root / paths["climate"],
        _climate(rng, climate_grid, terrain),
        climate_grid,
        nodata=CLIMATE_NODATA,
        descriptions=("annual_precipitation_mm", "mean_temperature_c"),
    )
    _vectors(root, paths, region, features)
    return paths


def _dem(
    rng: np.random.Generator,
    region: Region,
    features: Features,
    events: tuple[Event, ...],
    terrain: Terrain,
) -> np.ndarray:
    """1 arc-second heights (m) with valleys along rivers and one SRTM-like void."""
    grid = lonlat_grid(region.aux_bbox_lonlat, 3600, centre_on_lattice=True)
    lon, lat = pixel_centres(grid)
    z = terrain.height(lon, lat)
    rivers = [
        geom_to_lonlat(line.buffer(w / 2 + 15.0, quad_segs=4), region.epsg)
        for line, w in features.rivers
    ]
    wet = rasterise(rivers, grid) > 0
    dy = 30.87  # metres per arc-second of latitude
    dx = dy * np.cos(np.radians(lat.mean()))
    dist = ndimage.distance_transform_edt(~wet, sampling=(dy, dx))
    z = z - 22.0 * np.exp(-((dist / 700.0) ** 2))  # floodplains sit below the interfluves
    dem = np.clip(np.rint(z), 10, 250).astype(np.int16)

    # A small void (radar shadow / water) at least ~1 km from any event.
    west, south, east, north = region.bbox_lonlat
    far = [e.poly_lonlat.buffer(0.01) for e in events]
    for _ in range(1000):
        cx, cy = rng.uniform(west, east), rng.uniform(south, north)
        if not any(p.intersects(box(cx - 0.002, cy - 0.002, cx + 0.002, cy + 0.002)) for p in far):
            break
    void = (np.hypot((lon - cx) / 1.4, lat - cy) * 3600.0) < rng.uniform(2.5, 3.5)
    dem[void] = DEM_NODATA
    return dem


def _climate(rng: np.random.Generator, grid: GeoBox, terrain: Terrain) -> np.ndarray:
    """30 arc-second annual precipitation (mm) and mean temperature (deg C)."""
    lon, lat = pixel_centres(grid)
    z = terrain.height(lon, lat)
    wet = SmoothField(rng, terrain.bbox, 0.05, 1.0).sample(lon, lat)
    precip = 2850.0 + 1.2 * z + 120.0 * wet  # orographic: wetter uphill
    temp = 27.4 - 0.0065 * z + 0.15 * wet  # standard lapse rate
    return np.stack([precip, temp]).astype(np.float32)


def _vectors(root: Path, paths: dict[str, str], region: Region, features: Features) -> None:
    epsg = region.epsg
    roads = gpd.GeoDataFrame(
        {
            "osm_id": np.asarray([r.osm_id for r in features.roads], np.int64),
            "highway": [r.highway for r in features.roads],
        },
        geometry=[geom_to_lonlat(r.geom, epsg) for r in features.roads],
        crs="EPSG:4326",
    )
    write_gpkg(roads, root / paths["roads"], "roads")
    towns = gpd.GeoDataFrame(
        {
            "name": [s.name for s in features.settlements],
            "place": [s.place for s in features.settlements],
            "population": np.asarray([s.population for s in features.settlements], np.int64),
        },
        geometry=[geom_to_lonlat(s.point, epsg) for s in features.settlements],
        crs="EPSG:4326",
    )
    write_gpkg(towns, root / paths["settlements"], "settlements")
    aux = box(*region.aux_bbox_lonlat)
    peat = [(geom_to_lonlat(p, epsg).intersection(aux), c) for p, c in features.peat]
    peat = [(g, c) for g, c in peat if not g.is_empty]
    gdf = gpd.GeoDataFrame(
        {"peat_depth_class": [c for _, c in peat]}, geometry=[g for g, _ in peat], crs="EPSG:4326"
    )
    write_gpkg(gdf, root / paths["peat"], "peat")
