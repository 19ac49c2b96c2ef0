"""Auxiliary predictors on a chip grid: a small registry of per-pixel bands and scalar features.

``AUX_BAND_REGISTRY`` holds the per-pixel bands (``aux``), ``AUX_FEATURE_REGISTRY`` the
scalars (``aux_scalar``); a config picks names from them, and only what is picked (and
what it depends on) is read. Each source is optional: a missing one gives NaN, never a
silent zero. Rasters in any CRS are warped to the chip grid, bilinear for continuous
values and nearest for categories (a peat or land-cover raster); vectors are read once
per process and queried by bounding box. Values a caller already has (the ForestNet
release's own aux arrays) can be handed in, so imported and built chips share one code
path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict, Field
from rasterio.enums import Resampling
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.imagery.reproject import RasterInputError, read_file_to_grid

_REGION_STATS = ("mean", "std", "min", "max")
_REGION_BANDS = ("elevation", "slope", "treecover2000", "ndvi")
#: Distances beyond this are reported as this (km): no road/settlement nearby.
MAX_DISTANCE_KM = 50.0
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img")


class AuxSources(BaseModel):
    """Paths of the auxiliary sources; any may be None. The config's ``inputs`` section
    holds these same keys, so the names are written here only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dem: Path | None = Field(None, description="SRTM-style DEM GeoTIFF")
    treecover: Path | None = Field(None, description="GFC treecover2000 GeoTIFF")
    roads: Path | None = Field(None, description="road lines (GPKG/GeoParquet/Shapefile)")
    settlements: Path | None = Field(None, description="settlement points")
    peat: Path | None = Field(
        None, description="peat polygons, or a categorical peat raster (GeoTIFF; > 0 is peat)")
    climate: Path | None = Field(
        None, description="climate GeoTIFF: annual precipitation (mm), mean temperature (C)")
    landcover: Path | None = Field(
        None, description="categorical land-cover GeoTIFF (class codes, 0 = no data): the "
        "'landcover' aux band, labels of land-cover pre-training")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The source names, in order."""
        return tuple(cls.model_fields)


class AuxContext:
    """One chip's inputs; each band or feature is computed at most once, when first asked."""

    def __init__(self, geobox: GeoBox, region: BaseGeometry, loss_mask: np.ndarray,
                 composite: np.ndarray, sources: AuxSources,
                 given_bands: dict[str, np.ndarray] | None = None,
                 given_scalars: dict[str, float] | None = None) -> None:
        self.geobox, self.region, self.composite, self.sources = geobox, region, composite, sources
        self.inside = loss_mask.astype(bool)
        self._bands = dict(given_bands or {})
        self._scalars = dict(given_scalars or {})
        self._grids: dict[tuple, np.ndarray] = {}

    def for_region(self, region: BaseGeometry, loss_mask: np.ndarray) -> AuxContext:
        """The same chip's context for another region of it (one map piece among many):
        bands and rasters already read are shared, scalars are computed afresh."""
        other = AuxContext(self.geobox, region, loss_mask, self.composite, self.sources)
        other._bands, other._grids = self._bands, self._grids
        return other

    def band(self, name: str) -> np.ndarray:
        if name not in self._bands:
            self._bands[name] = np.asarray(AUX_BAND_REGISTRY[name].compute(self), np.float32)
        return self._bands[name]

    def scalar(self, name: str) -> float:
        if name not in self._scalars:
            self._scalars[name] = float(AUX_FEATURE_REGISTRY[name].compute(self))
        return self._scalars[name]

    @property
    def nan(self) -> np.ndarray:
        return np.full(tuple(self.geobox.shape), np.nan, dtype=np.float32)

    def raster(self, path: Path | None, resampling: Resampling) -> np.ndarray:
        if path is None:
            return self.nan
        data = self.grid(path, resampling)
        return data[0] if data.ndim == 3 else data

    def grid(self, path: Path, resampling: Resampling, bands: tuple[int, ...] | None = None
             ) -> np.ndarray:
        """A raster read onto the chip grid, once per chip (regions of it share the read)."""
        key = (str(path), resampling, bands)
        if key not in self._grids:
            self._grids[key] = read_file_to_grid(path, self.geobox, resampling,
                                                 bands=1 if bands is None else list(bands))
        return self._grids[key]

    @cached_property
    def terrain(self) -> tuple[np.ndarray, np.ndarray]:
        return slope_aspect(self.band("elevation"), abs(self.geobox.affine.a))

    @cached_property
    def climate(self) -> list[float]:
        if self.sources.climate is None:
            return [np.nan, np.nan]
        return _climate(self.grid(self.sources.climate, Resampling.bilinear, (1, 2)), self.inside)


@dataclass(frozen=True)
class AuxEntry:
    """One registered band or feature: what it reads and how it reaches the chip grid."""

    name: str
    source: str  # the AuxSources field it reads, or what it is derived from
    method: str  # resampling (bilinear / nearest), rasterize, distance, region-stat, ...
    compute: Callable[[AuxContext], np.ndarray | float]
    #: Features only: how the values of several regions of one event combine (a map event
    #: merged across tiles): "mean" and "std" pixel-weighted, "min", "max".
    merge: str = "mean"


def _ndvi(ctx: AuxContext) -> np.ndarray:
    red, nir = ctx.composite[0], ctx.composite[3]  # chip band order: red, green, blue, nir
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((nir + red) > 0, (nir - red) / (nir + red), np.nan)


def _peat(ctx: AuxContext) -> np.ndarray:
    path = ctx.sources.peat
    if path is None:
        return ctx.nan
    if Path(path).suffix.lower() in RASTER_SUFFIXES:
        # Categories must not be blended: nearest neighbour, then any class > 0 is peat.
        data = ctx.raster(path, Resampling.nearest)
        return np.where(np.isfinite(data), (data > 0).astype(np.float32), np.nan)
    return _rasterize(path, ctx.geobox)


AUX_BAND_REGISTRY: dict[str, AuxEntry] = {e.name: e for e in (
    AuxEntry("elevation", "dem", "bilinear",
             lambda c: c.raster(c.sources.dem, Resampling.bilinear)),
    AuxEntry("slope", "dem", "gradient of elevation", lambda c: c.terrain[0]),
    AuxEntry("aspect", "dem", "gradient of elevation", lambda c: c.terrain[1]),
    AuxEntry("treecover2000", "treecover", "bilinear",
             lambda c: c.raster(c.sources.treecover, Resampling.bilinear)),
    AuxEntry("ndvi", "composite", "(nir - red) / (nir + red)", _ndvi),
    AuxEntry("peat", "peat", "rasterize polygons, or nearest for a raster", _peat),
    # Class codes must not be blended: nearest neighbour. The labels of land-cover
    # pre-training (forestnet_model.pretrain), not a model input by default.
    AuxEntry("landcover", "landcover", "nearest (categorical class codes)",
             lambda c: c.raster(c.sources.landcover, Resampling.nearest)),
)}


def _stat(band: str, k: int) -> Callable[[AuxContext], float]:
    return lambda c: region_stats(c.band(band), c.inside)[k]


def _peat_fraction(ctx: AuxContext) -> float:
    values = ctx.band("peat")[ctx.inside]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else np.nan


AUX_FEATURE_REGISTRY: dict[str, AuxEntry] = {e.name: e for e in (
    *(AuxEntry(f"{b}_{s}", b, f"region {s}", _stat(b, k), merge=s)
      for b in _REGION_BANDS for k, s in enumerate(_REGION_STATS)),
    AuxEntry("street_dist_km", "roads", "distance",
             lambda c: _distance_km(c.sources.roads, c.region, c.geobox), merge="min"),
    AuxEntry("city_dist_km", "settlements", "distance",
             lambda c: _distance_km(c.sources.settlements, c.region, c.geobox), merge="min"),
    AuxEntry("peat_fraction", "peat", "region mean", _peat_fraction),
    AuxEntry("precipitation_mm", "climate", "bilinear, region mean", lambda c: c.climate[0]),
    AuxEntry("temperature_c", "climate", "bilinear, region mean", lambda c: c.climate[1]),
)}

#: Registered bands a store holds only when the config names them (aux.bands): most
#: inputs have no land-cover map, and an all-NaN band would only cost space.
OPTIONAL_AUX_BANDS: tuple[str, ...] = ("landcover",)
#: The default aux bands of a chip store.
AUX_BANDS: tuple[str, ...] = tuple(b for b in AUX_BAND_REGISTRY if b not in OPTIONAL_AUX_BANDS)
AUX_SCALARS: tuple[str, ...] = tuple(AUX_FEATURE_REGISTRY)


def check_aux_names(bands: Iterable[str], features: Iterable[str]) -> None:
    """Raise ValueError naming any unknown or repeated band/feature and the valid ones."""
    for kind, names, registry in (("aux band", list(bands), AUX_BAND_REGISTRY),
                                  ("aux feature", list(features), AUX_FEATURE_REGISTRY)):
        unknown = [n for n in names if n not in registry]
        if unknown:
            raise ValueError(f"unknown {kind} {unknown}; valid: {', '.join(registry)}")
        if len(set(names)) != len(names):
            raise ValueError(f"repeated {kind} names in {names}")


def source_keys(bands: Iterable[str], features: Iterable[str]) -> dict[str, str]:
    """``name -> AuxSources key`` of every band and feature that reads an input file (a
    region statistic of a band reads that band's file; NDVI reads only the composite)."""
    out = {}
    for name, entry in [*((b, AUX_BAND_REGISTRY[b]) for b in bands),
                        *((f, AUX_FEATURE_REGISTRY[f]) for f in features)]:
        source = entry.source
        if source in AUX_BAND_REGISTRY:
            source = AUX_BAND_REGISTRY[source].source
        if source in AuxSources.names():
            out[name] = source
    return out


def describe_aux(bands: Iterable[str], features: Iterable[str], sources: AuxSources) -> dict:
    """``name -> "source (file): method"`` for the store's attributes."""
    def line(entry: AuxEntry) -> str:
        path = getattr(sources, entry.source, None)
        where = f"{entry.source} ({Path(path).name})" if path else entry.source
        return f"{where}: {entry.method}"

    return {
        "bands": {b: line(AUX_BAND_REGISTRY[b]) for b in bands},
        "features": {f: line(AUX_FEATURE_REGISTRY[f]) for f in features},
    }


def aux_for_chip(
    geobox: GeoBox,
    region: BaseGeometry,
    loss_mask: np.ndarray,
    composite: np.ndarray,
    sources: AuxSources,
    bands: Iterable[str] = AUX_BANDS,
    features: Iterable[str] = AUX_SCALARS,
    given_bands: dict[str, np.ndarray] | None = None,
    given_scalars: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ``aux (bands, y, x)`` and ``aux_scalar (features,)`` for one chip.

    ``region`` is the loss region in the chip's CRS; ``composite`` is ``(band, y, x)`` in
    chip band order (red, green, blue, nir, ...). ``given_*`` replace computed values.
    """
    bands, features = list(bands), list(features)
    check_aux_names(bands, features)
    ctx = AuxContext(geobox, region, loss_mask, composite, sources, given_bands, given_scalars)
    shape = tuple(geobox.shape)
    aux = np.stack([ctx.band(b) for b in bands]) if bands else np.zeros((0, *shape))
    return aux.astype(np.float32), np.asarray([ctx.scalar(f) for f in features], np.float32)


def region_stats(values: np.ndarray, inside: np.ndarray) -> list[float]:
    """mean, std, min, max of finite values inside the region (NaN when none)."""
    sel = values[inside]
    sel = sel[np.isfinite(sel)]
    if sel.size == 0:
        return [np.nan] * 4
    return [float(sel.mean()), float(sel.std()), float(sel.min()), float(sel.max())]


def slope_aspect(elevation: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees) and aspect (degrees clockwise from north) of a north-up DEM."""
    dz_dy, dz_dx = np.gradient(elevation.astype(np.float64), cell)
    # Rows increase southwards, so the northward gradient is -dz_dy.
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = (np.degrees(np.arctan2(-dz_dx, dz_dy)) + 360.0) % 360.0
    return slope.astype(np.float32), aspect.astype(np.float32)


def _climate(data: np.ndarray, inside: np.ndarray) -> list[float]:
    where = inside if inside.any() else np.ones(inside.shape, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(np.nanmean(band[where])) if np.isfinite(band[where]).any() else np.nan
                for band in data]


@lru_cache(maxsize=16)
def _vector(path: Path) -> gpd.GeoDataFrame:
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several error types for unreadable files
        raise RasterInputError(f"{path}: cannot read vector layer ({exc})") from exc
    if frame.crs is None:
        raise RasterInputError(f"{path}: vector layer has no CRS")
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    return frame


def _nearby(path: Path, geobox: GeoBox, reach_m: float) -> gpd.GeoSeries:
    frame = _vector(Path(path))
    search = geobox.extent.buffer(reach_m).to_crs(frame.crs).boundingbox
    hits = frame.sindex.query(box(*search), predicate="intersects")
    return frame.geometry.iloc[hits].to_crs(geobox.crs.to_wkt())


def _distance_km(path: Path | None, region: BaseGeometry, geobox: GeoBox) -> float:
    if path is None:
        return np.nan
    near = _nearby(path, geobox, MAX_DISTANCE_KM * 1000.0)
    if near.empty:
        return MAX_DISTANCE_KM
    return float(min(near.distance(region).min() / 1000.0, MAX_DISTANCE_KM))


def _rasterize(path: Path, geobox: GeoBox) -> np.ndarray:
    shapes = _nearby(path, geobox, 0.0)
    if shapes.empty:
        return np.zeros(tuple(geobox.shape), dtype=np.float32)
    burned = rasterio.features.rasterize(
        ((g, 1) for g in shapes), out_shape=tuple(geobox.shape), transform=geobox.affine,
        fill=0, dtype="uint8",
    )
    return burned.astype(np.float32)
