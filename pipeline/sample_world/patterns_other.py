"""Land use of ForestNet's heterogeneous "Other" class, chosen by the fine label."""

from __future__ import annotations

import numpy as np

from . import spectra as sp
from .noise import smooth_noise
from .pattern_geometry import Ctx, Patch, cell_index, grid_distance, line_alpha, rotate


def render_other(fine: str, ctx: Ctx) -> Patch:
    """Mining pits, fish ponds, logging trails, rough regrowth or a mixed mosaic."""
    renderer = {
        "Mining": _mining,
        "Fish pond": _fish_pond,
        "Logging": _logging,
        "Secondary forest": _secondary_forest,
    }.get(fine, _mosaic)
    return renderer(ctx)


def _interior_points(ctx: Ctx, n: int, min_inside: float) -> np.ndarray:
    """``n`` random pixel centres at least ``min_inside`` metres inside the polygon."""
    rows, cols = np.nonzero(ctx.inside_m >= min_inside)
    if rows.size == 0:
        rows, cols = np.nonzero(ctx.inside_m >= ctx.inside_m.max())
    pick = ctx.rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.column_stack([ctx.x[rows[pick], cols[pick]], ctx.y[rows[pick], cols[pick]]])


def _segment_distance(x: np.ndarray, y: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance from every pixel centre to the segment p-q."""
    d = q - p
    t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.hypot(x - (p[0] + t * d[0]), y - (p[1] + t * d[1]))


def _mining(ctx: Ctx) -> Patch:
    rng = ctx.rng
    # Very bright tailings and sand (high SWIR), with darker wet patches and turquoise pit ponds.
    base = sp.mix(
        sp.BRIGHT_SOIL,
        sp.WET_SOIL,
        np.clip(0.25 + 0.2 * smooth_noise(rng, ctx.shape, 3.0), 0.0, 1.0),
    )
    water = np.zeros(ctx.shape, np.float32)
    rim = np.zeros(ctx.shape, np.float32)
    for cx, cy in _interior_points(ctx, int(rng.integers(2, 6)), 50.0):
        rx, ry = rng.uniform(20.0, 55.0, size=2)
        a, b = rotate(ctx.x - cx, ctx.y - cy, rng.uniform(0, np.pi))
        e = np.hypot(a / rx, b / ry)
        water = np.maximum(water, np.clip((1 - e) * min(rx, ry) / 15.0 + 0.5, 0, 1))
        rim = np.maximum(rim, np.clip(1.0 - np.abs(e - 1.25) * 3.0, 0, 1))
    base = base * (1 - 0.6 * rim) + sp.WET_SOIL[:, None, None] * (0.6 * rim)  # dug pit walls
    pond = sp.MINE_POND * rng.normal(1.0, 0.08, size=6).astype(np.float32)
    refl = base * (1 - water) + pond[:, None, None] * water
    return Patch(refl.astype(np.float32), water, np.zeros(ctx.shape, np.float32))


def _fish_pond(ctx: Ctx) -> Patch:
    rng = ctx.rng
    # A grid of rectangular ponds separated by grassy dykes.
    a, b = rotate(ctx.x, ctx.y, ctx.angle)
    pa, pb, dyke = rng.uniform(40.0, 70.0), rng.uniform(30.0, 50.0), rng.uniform(10.0, 14.0)
    oa, ob = rng.uniform(0, pa), rng.uniform(0, pb)
    da, db = grid_distance(a, pa, oa), grid_distance(b, pb, ob)
    pond = np.clip((np.minimum(da, db) - dyke / 2) / 15.0 + 0.5, 0.0, 1.0)
    pond *= np.clip((ctx.inside_m - dyke) / 15.0 + 0.5, 0.0, 1.0)
    ia, ib = cell_index(a, pa, oa), cell_index(b, pb, ob)
    n_a, n_b = ia.max() + 1, ib.max() + 1
    wet = rng.random((n_a, n_b)) < 0.85  # some ponds are drained for harvest
    tint = rng.normal(1.0, 0.1, size=(n_a, n_b, 6)).astype(np.float32)
    algae = rng.uniform(0.0, 0.5, size=(n_a, n_b, 1)).astype(np.float32)
    colour = (
        np.where(
            wet[..., None], sp.FISH_WATER + algae * (sp.CROP - sp.FISH_WATER) * 0.3, sp.WET_SOIL
        )
        * tint
    )
    inside = colour[ia, ib].transpose(2, 0, 1)
    dykes = sp.mix(sp.GRASS, sp.SOIL, np.full(ctx.shape, 0.4, np.float32))
    refl = dykes * (1 - pond) + inside * pond
    water = pond * wet[ia, ib]
    return Patch(refl.astype(np.float32), water.astype(np.float32), np.zeros(ctx.shape, np.float32))


def _logging(ctx: Ctx) -> Patch:
    rng = ctx.rng
    # Degraded forest: opened canopy, crossed by a haul road, skid trails and log landings.
    degrade = np.asarray([1.05, 1.06, 1.2, 0.92, 1.1, 1.15], np.float32)
    base = ctx.forest * degrade[:, None, None]
    base *= 1.0 + 0.08 * smooth_noise(rng, ctx.shape, 1.0)
    _, b = rotate(ctx.x, ctx.y, ctx.angle)
    trail = line_alpha(np.abs(b), rng.uniform(10.0, 14.0))
    for p in _interior_points(ctx, int(rng.integers(1, 4)), 40.0):
        trail = np.maximum(
            trail, line_alpha(np.hypot(ctx.x - p[0], ctx.y - p[1]), 2 * rng.uniform(18.0, 32.0))
        )
        for _ in range(int(rng.integers(4, 9))):
            heading = ctx.angle + rng.normal(np.pi / 2, 0.6) * rng.choice([-1, 1])
            length = rng.uniform(100.0, 300.0)
            q = p + length * np.array([np.cos(heading), np.sin(heading)])
            d = _segment_distance(ctx.x, ctx.y, p, q)
            trail = np.maximum(trail, 0.85 * line_alpha(d, rng.uniform(6.0, 10.0)))
    soil = sp.mix(sp.SOIL, sp.WET_SOIL, np.full(ctx.shape, 0.4, np.float32))
    refl = base * (1 - trail) + soil * trail
    zeros = np.zeros(ctx.shape, np.float32)
    return Patch(refl.astype(np.float32), zeros, zeros)


def _secondary_forest(ctx: Ctx) -> Patch:
    rng = ctx.rng
    # Rough regrowth: a bright, uneven pioneer canopy with shrubby openings.
    texture = smooth_noise(rng, ctx.shape, 1.2)
    openings = np.clip(2.0 * (smooth_noise(rng, ctx.shape, 5.0) - 0.6), 0.0, 1.0)
    refl = sp.mix(sp.REGROWTH, sp.SHRUB, openings) * (1.0 + 0.16 * texture)
    zeros = np.zeros(ctx.shape, np.float32)
    return Patch(refl.astype(np.float32), zeros, zeros)


def _mosaic(ctx: Ctx) -> Patch:
    rng = ctx.rng
    # Cleared land left waterlogged: broad, soft-edged sedge and wet-soil flats around
    # pools of standing blackwater. Patches span ~100 m and blend into each other, unlike
    # the crisp 30-60 m fields of a smallholder mosaic (which never hold standing water).
    g = smooth_noise(rng, ctx.shape, 6.0)
    h = smooth_noise(rng, ctx.shape, 4.0)
    refl = sp.mix(sp.GRASS, sp.SHRUB, np.clip(0.5 + 0.5 * h, 0, 1))
    wet = np.clip((0.2 - g) * 1.5, 0, 1)
    refl = refl * (1 - wet) + sp.WET_SOIL[:, None, None] * wet
    pools = np.clip((-0.8 - g) * 4.0, 0, 1)
    refl = refl * (1 - pools) + sp.WATER[:, None, None] * pools
    refl *= 1.0 + 0.03 * rng.standard_normal(ctx.shape, dtype=np.float32)
    return Patch(refl.astype(np.float32), pools.astype(np.float32),
                 np.zeros(ctx.shape, np.float32))
