"""The land surface at 15 m: forest, rivers, roads, settlements and the events' land use.

Rendered once per world (6 bands, blue..swir2); every scene is this surface seen under its
own sun, haze, phenology and clouds (see scenes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from odc.geo.geobox import GeoBox
from scipy import ndimage
from shapely.geometry import box

from pipeline.core.grid import pixel_centres

from . import spectra as sp
from .features import Features
from .layout import Event
from .noise import coarse_field, smooth_noise, stream
from .patterns import Ctx, render_land_use
from .rasters import rasterise, rasterise_windowed, window_of
from .region import Region
from .spec import WorldSpec

#: Canopy texture amplitude per band: crown shadows darken the visible and SWIR more than NIR.
_CANOPY_AMP = np.asarray([0.10, 0.09, 0.12, 0.07, 0.09, 0.11], np.float32)


@dataclass(frozen=True)
class Surface:
    refl: np.ndarray  # (6, H, W) float32 reflectance on region.grid15
    water: np.ndarray  # (H, W) open-water fraction
    seasonal: np.ndarray  # (H, W) weight of the per-scene crop cycle


def render_surface(
    spec: WorldSpec, region: Region, features: Features, events: tuple[Event, ...]
) -> Surface:
    """Paint forest, then rivers, roads, settlements and finally each event's land use."""
    rng = stream(spec.seed, "landscape")
    grid = region.grid15
    shape = tuple(grid.shape.yx)

    # Intact forest (peat swamp forest over peat), with crown texture and slow variation.
    peat = ndimage.gaussian_filter(
        rasterise_windowed([p for p, _ in features.peat], grid), 8.0
    ).astype(np.float32)
    refl = sp.mix(sp.FOREST, sp.PEAT_FOREST, peat)
    refl *= 1.0 + 0.04 * coarse_field(rng, shape, 8, 2.5)[None]
    crowns = 0.7 * smooth_noise(rng, shape, 0.7) + 0.5 * smooth_noise(rng, shape, 2.5)
    refl *= 1.0 + _CANOPY_AMP[:, None, None] * crowns[None]

    # Rivers with a shrubby riparian fringe.
    rivers = [line.buffer(w / 2, quad_segs=4) for line, w in features.rivers]
    banks = [line.buffer(w / 2 + 45.0, quad_segs=4) for line, w in features.rivers]
    _paint(refl, sp.SHRUB, 0.5 * rasterise_windowed(banks, grid))
    water = rasterise_windowed(rivers, grid, supersample=3)
    _paint(refl, sp.WATER, water)

    # Roads: a cleared grassy verge, then the bright laterite surface.
    verges = [r.geom.buffer(r.width / 2 + 12.0, quad_segs=2) for r in features.roads]
    _paint(refl, sp.GRASS, 0.7 * rasterise_windowed(verges, grid, supersample=3))
    surfaces = [r.geom.buffer(r.width / 2, quad_segs=2) for r in features.roads]
    _paint(refl, sp.ROAD, rasterise_windowed(surfaces, grid, supersample=3))

    _settlements(refl, grid, features, stream(spec.seed, "settlements"))

    seasonal = np.zeros(shape, np.float32)
    for event in events:
        _event(refl, water, seasonal, grid, event, stream(spec.seed, f"event-{event.event_id}"))
    return Surface(refl.astype(np.float32), water, seasonal)


def _paint(refl: np.ndarray, spectrum: np.ndarray, alpha: np.ndarray) -> None:
    """Blend a spectrum over ``refl`` in place where ``alpha`` > 0 (touching only those rows)."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    sl = slice(rows[0], rows[-1] + 1)
    a = alpha[sl][None]
    refl[:, sl] = refl[:, sl] * (1 - a) + spectrum[:, None, None] * a


def _settlements(
    refl: np.ndarray,
    grid: GeoBox,
    features: Features,
    rng: np.random.Generator,
) -> None:
    """A cleared area of gardens and bare yards, densely covered with bright roofs."""
    for s in features.settlements:
        r = s.radius
        hit = window_of(grid, (s.point.x - r, s.point.y - r, s.point.x + r, s.point.y + r), 4)
        if hit is None:
            continue
        (rows, cols), sub = hit
        x, y = pixel_centres(sub)
        dist = np.hypot(x - s.point.x, y - s.point.y)
        edge = r * (1.0 + 0.15 * smooth_noise(rng, dist.shape, 3.0))
        cleared = np.clip((edge - dist) / 30.0, 0.0, 1.0).astype(np.float32)
        yard = sp.mix(
            sp.GRASS, sp.SOIL, np.clip(0.4 + 0.3 * smooth_noise(rng, dist.shape, 1.5), 0, 1)
        )
        n = int(min(s.population / 6, 800))
        rad = r * np.sqrt(rng.uniform(0.0, 0.8, n))  # uniform over the disc's inner part
        theta = rng.uniform(0, 2 * np.pi, n)
        size = rng.uniform(8.0, 14.0, n)
        cx, cy = s.point.x + rad * np.cos(theta), s.point.y + rad * np.sin(theta)
        houses = [
            box(a - d / 2, b - d / 2, a + d / 2, b + d / 2)
            for a, b, d in zip(cx, cy, size, strict=True)
        ]
        roofs = rasterise(houses, sub, supersample=3)
        block = refl[:, rows, cols]
        block = block * (1 - cleared) + yard * cleared
        block = block * (1 - roofs) + sp.ROOF[:, None, None] * roofs
        refl[:, rows, cols] = block


def _event(
    refl: np.ndarray,
    water: np.ndarray,
    seasonal: np.ndarray,
    grid: GeoBox,
    event: Event,
    rng: np.random.Generator,
) -> None:
    """Replace forest by the event's land use inside its loss polygon (30 m soft border)."""
    hit = window_of(grid, event.poly_utm.bounds, pad=4)
    if hit is None:
        return
    (rows, cols), sub = hit
    cover = rasterise([event.poly_utm], sub, supersample=3)
    alpha = np.clip(ndimage.gaussian_filter(cover, 0.6), 0.0, 1.0)[None]
    inside_m = ndimage.distance_transform_edt(cover >= 0.5) * abs(sub.affine.a)
    x, y = pixel_centres(sub)
    c = event.poly_utm.centroid
    ctx = Ctx(
        x - c.x, y - c.y, inside_m.astype(np.float32), refl[:, rows, cols].copy(), event.angle, rng
    )
    patch = render_land_use(event.label, event.merged_label, ctx)
    refl[:, rows, cols] = refl[:, rows, cols] * (1 - alpha) + patch.refl * alpha
    water[rows, cols] = np.maximum(water[rows, cols], patch.water * (cover >= 0.5))
    seasonal[rows, cols] += patch.seasonal * alpha[0]
