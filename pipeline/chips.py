"""Event chips: every candidate scene warped onto the event's 332 x 332, 15 m UTM grid.

View 0 is the composite (ForestNet: the per-pixel median of the cloud-filtered scenes, or
of the 5 least cloudy when fewer than 5 pass); the other views are single scenes kept
for scene data augmentation. Visible bands are pan-sharpened (weighted Brovey) where the
scene has a pan band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from pipeline.catalog import open_scene, pan_geobox, query_scenes, scene_geobox
from pipeline.grid import CHIP_RESOLUTION, CHIP_SIZE, centred_geobox
from pipeline.landsat import QA_BITS, pansharpen_brovey, usable_mask
from pipeline.reproject import scene_window_to_grid

CHIP_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir", "swir1", "swir2")
_FILL_QA = float(1 << QA_BITS["fill"])


@dataclass(frozen=True)
class ChipSpec:
    """How chips are cut and which views they keep."""

    size: int = CHIP_SIZE
    resolution: float = CHIP_RESOLUTION
    years_window: int = 5  # scenes within +/- this many years of the loss year
    max_single_views: int = 4  # single scenes kept for SDA (view 1..K)
    max_view_cloud: float = 0.5  # a view passes the cloud filter at or below this
    composite_pool: int = 5  # ForestNet: median of the 5 least cloudy when fewer pass

    @property
    def n_views(self) -> int:
        return 1 + self.max_single_views


@dataclass
class SceneView:
    """One scene on the chip grid: reflectance ``(band, y, x)`` and its usable-pixel mask."""

    scene_id: str
    date: str
    image: np.ndarray
    usable: np.ndarray

    @property
    def cloud_fraction(self) -> float:
        return float(1.0 - self.usable.mean())


@dataclass
class EventChip:
    """The chip of one event; ``image`` is ``(view, band, y, x)`` with view 0 the composite."""

    geobox: GeoBox
    image: np.ndarray
    view_dates: list[str]
    view_cloud: list[float]
    scene_ids: list[str]
    loss_mask: np.ndarray
    region: BaseGeometry  # the loss region in the chip CRS
    status: str = "ok"
    notes: list[str] = field(default_factory=list)


def chip_geobox(geometry_4326: BaseGeometry, spec: ChipSpec) -> GeoBox:
    """The chip grid of an event, centred on its representative point, in its UTM zone."""
    anchor = geometry_4326.representative_point()
    return centred_geobox(anchor.x, anchor.y, spec.size, spec.resolution)


@lru_cache(maxsize=64)
def _scene(store: str, scene_id: str):
    ds = open_scene(Path(store), scene_id)
    return ds, scene_geobox(ds)


def scene_on_grid(store: Path, scene_id: str, geobox: GeoBox) -> SceneView:
    """Warp one stored scene onto ``geobox``: pan-sharpened visible + IR, and usable mask."""
    ds, box30 = _scene(str(store), scene_id)
    ms = ds["multispectral"].sel(band=list(CHIP_BANDS))
    bands = scene_window_to_grid(ms, box30, geobox, Resampling.bilinear)
    qa = scene_window_to_grid(
        ds["qa_pixel"].astype("float32"), box30, geobox, Resampling.nearest
    )
    qa = np.where(np.isnan(qa), _FILL_QA, qa).astype(np.uint16)
    if "pan" in ds:
        pan_box = pan_geobox(ds)
        pan_da = ds["pan"].rename({"y_pan": "y", "x_pan": "x"})
        pan = scene_window_to_grid(pan_da, pan_box, geobox, Resampling.bilinear)
        r, g, b = bands[0], bands[1], bands[2]
        b, g, r = pansharpen_brovey(b, g, r, pan)
        bands[0], bands[1], bands[2] = r, g, b
    usable = usable_mask(qa) & np.isfinite(bands).all(axis=0)
    date = str(pd.Timestamp(ds.attrs["acquired"]).date())
    return SceneView(scene_id, date, bands.astype(np.float32), usable)


def composite(views: list[SceneView], pool: int) -> np.ndarray:
    """Per-pixel median of usable pixels of the views (the ``pool`` least cloudy if few pass).

    Pixels with no usable observation fall back to the median of all pool values there,
    then to 0 outside every scene, so the model always sees finite values.
    """
    stack = np.stack([v.image for v in views])  # (view, band, y, x)
    # Unusable pixels become NaN by adding NaN: much cheaper than np.where on the stack.
    hide = np.where(np.stack([v.usable for v in views]), np.float32(0), np.float32(np.nan))
    out = nanmedian_views(stack + hide[:, None])
    missing = np.isnan(out)
    if missing.any():
        out[missing] = nanmedian_views(stack[:, missing])
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


_LAST = np.float32(3.0e38)  # stands in for NaN so that it sorts last (and 0 * it is 0)


def nanmedian_views(stack: np.ndarray) -> np.ndarray:
    """``np.nanmedian(stack, axis=0)`` for a stack of a few views, without its overhead.

    NaN is replaced by a huge value so it sorts last; the k finite values of a pixel are
    then its first k, and the median is the mean of the middle two (NaN where k = 0). Up
    to 8 views an odd-even transposition network of elementwise min/max sorts them, else
    ``np.sort``; the middle values are picked arithmetically (no per-pixel branches). This
    made the composite ~10x faster than ``np.nanmedian``, which dominated chip building.
    """
    n = stack.shape[0]
    values = np.fmin(stack.astype(np.float32, copy=False), _LAST)  # fmin maps NaN to _LAST
    k = (values < _LAST).sum(axis=0)
    if n <= 8:
        rows = list(values)
        for p in range(n):
            for i in range(p % 2, n - 1, 2):
                rows[i], rows[i + 1] = np.minimum(rows[i], rows[i + 1]), np.maximum(
                    rows[i], rows[i + 1])
    else:
        rows = list(np.sort(values, axis=0))
    lo_at, hi_at = (k - 1) // 2, k // 2
    lo = np.zeros_like(rows[0])
    hi = np.zeros_like(rows[0])
    for j in range(n):
        lo += rows[j] * (lo_at == j)
        hi += rows[j] * (hi_at == j)
    out = (lo + hi) / 2
    out[k == 0] = np.nan
    return out.astype(stack.dtype, copy=False)


def rasterize_region(region: BaseGeometry, geobox: GeoBox) -> np.ndarray:
    """The loss region burnt onto the grid (pixel centres inside), uint8."""
    if region.is_empty:
        return np.zeros(tuple(geobox.shape), dtype=np.uint8)
    return rasterio.features.rasterize(
        [(region, 1)], out_shape=tuple(geobox.shape), transform=geobox.affine, fill=0,
        dtype="uint8",
    )


def build_event_chip(
    geometry_4326: BaseGeometry,
    loss_year: int,
    store: Path,
    index: gpd.GeoDataFrame,
    spec: ChipSpec,
    composite_only: bool = False,
) -> EventChip:
    """Cut one event's chip from every candidate scene in the store's index."""
    geobox = chip_geobox(geometry_4326, spec)
    region = gpd.GeoSeries([geometry_4326], crs="EPSG:4326").to_crs(geobox.crs.to_wkt()).iloc[0]
    loss_mask = rasterize_region(region, geobox)
    footprint = geobox.extent.to_crs("EPSG:4326").geom
    start = pd.Timestamp(year=loss_year - spec.years_window, month=1, day=1)
    end = pd.Timestamp(year=loss_year + spec.years_window, month=12, day=31)
    candidates = query_scenes(index, footprint, start, end)
    n_views = 1 if composite_only else spec.n_views
    empty = np.zeros((n_views, len(CHIP_BANDS), *geobox.shape), dtype=np.float32)
    if candidates.empty:
        return EventChip(geobox, empty, [""] * n_views, [1.0] * n_views, [], loss_mask, region,
                         status=f"no scene within {spec.years_window} years covers the chip")
    views = [scene_on_grid(store, sid, geobox) for sid in candidates["scene_id"]]
    views = [v for v in views if v.usable.any()]
    if not views:
        return EventChip(geobox, empty, [""] * n_views, [1.0] * n_views, [], loss_mask, region,
                         status="no usable (cloud-free, non-fill) pixel in any scene")
    views.sort(key=lambda v: (v.cloud_fraction, v.scene_id))
    passing = [v for v in views if v.cloud_fraction <= spec.max_view_cloud]
    pool = passing if len(passing) >= spec.composite_pool else views[: spec.composite_pool]
    comp = composite(pool, spec.composite_pool)
    image, dates, clouds = empty, [""] * n_views, [1.0] * n_views
    image[0] = comp
    dates[0] = "composite"
    clouds[0] = float(np.mean([v.cloud_fraction for v in pool]))
    notes = [] if passing else ["no view passes the cloud filter; composite of least cloudy"]
    if not composite_only:
        for i, view in enumerate(passing[: spec.max_single_views], start=1):
            # Cloudy pixels of single views keep their values (as ForestNet's scene PNGs
            # do); only missing pixels are filled from the composite.
            image[i] = np.where(np.isfinite(view.image), view.image, comp)
            dates[i] = view.date
            clouds[i] = view.cloud_fraction
    return EventChip(geobox, image, dates, clouds, [v.scene_id for v in pool], loss_mask, region,
                     notes=notes)
