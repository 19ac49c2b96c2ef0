"""Land use inside a loss polygon, one renderer per driver (15 m pixels, 6 bands).

The four merged classes must look clearly different, as they do to ForestNet's CNN:
plantations are large regular blocks with rows and a road grid, smallholder plots a mosaic
of small fields, grassland smooth and bright green, "Other" heterogeneous per fine label.
Every event also gets its own random gain, orientation and scale (per-event variation).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from . import patterns_other
from . import spectra as sp
from .noise import smooth_noise
from .pattern_geometry import Ctx, Patch, cell_index, grid_distance, line_alpha, rotate


def render_land_use(fine: str, merged: str, ctx: Ctx) -> Patch:
    """Dispatch to the renderer of the event's driver and apply the per-event variation."""
    if merged == "Plantation":
        patch = _plantation(fine, ctx)
    elif merged == "Smallholder agriculture":
        patch = _smallholder(fine, ctx)
    elif merged == "Grassland shrubland":
        patch = _grassland(ctx)
    else:
        patch = patterns_other.render_other(fine, ctx)
    # +-10-15 % brightness per event, plus a little per-band tint.
    gain = ctx.rng.normal(1.0, 0.06) * ctx.rng.normal(1.0, 0.03, size=6).astype(np.float32)
    refl = (patch.refl * gain[:, None, None].astype(np.float32)).astype(np.float32)
    return Patch(refl, patch.water.astype(np.float32), patch.seasonal.astype(np.float32))


def _plantation(fine: str, ctx: Ctx) -> Patch:
    rng = ctx.rng
    a, b = rotate(ctx.x, ctx.y, ctx.angle)
    canopy = {"Oil palm plantation": sp.YOUNG_PALM, "Timber plantation": sp.ACACIA}.get(
        fine, sp.RUBBER
    )
    # Planting rows: 60-90 m period at their own orientation (contour/terrace planting).
    period = rng.uniform(60.0, 90.0)
    ra, _ = rotate(ctx.x, ctx.y, rng.uniform(0.0, np.pi))
    rows = np.cos(2 * np.pi * ra / period + rng.uniform(0, 2 * np.pi))
    # Blocks between access roads were planted in different years: one cover per block.
    spacing = rng.uniform(200.0, 320.0)
    oa, ob = rng.uniform(0, spacing, size=2)
    ia, ib = cell_index(a, spacing, oa), cell_index(b, spacing, ob)
    lo, hi = (0.7, 0.95) if fine == "Timber plantation" else (0.5, 0.85)
    cohort = rng.uniform(lo, hi, size=(ia.max() + 1, ib.max() + 1)).astype(np.float32)
    cover = np.clip(cohort[ia, ib] + 0.3 * rows, 0.0, 1.0)
    soil = sp.SOIL * rng.normal(1.0, 0.05, size=6).astype(np.float32)
    refl = sp.mix(soil, canopy, cover)
    refl *= 1.0 + 0.02 * rng.standard_normal(ctx.shape, dtype=np.float32)
    width = rng.uniform(12.0, 18.0)
    d_grid = np.minimum(grid_distance(a, spacing, oa), grid_distance(b, spacing, ob))
    road = np.maximum(line_alpha(d_grid, width), line_alpha(ctx.inside_m, 2 * width))
    refl = refl * (1 - road) + sp.ROAD[:, None, None] * road
    zeros = np.zeros(ctx.shape, np.float32)
    return Patch(refl, zeros, zeros)


# Field types of smallholder mosaics and their probabilities per fine label.
_FIELD_SPECTRA = np.stack([sp.SOIL, sp.CROP, sp.YOUNG_TREES, sp.BURN, sp.YOUNG_PALM])
_FIELD_PROBS = {
    "Small-scale agriculture": (0.35, 0.30, 0.05, 0.25, 0.05),
    "Small-scale mixed plantation": (0.28, 0.15, 0.35, 0.17, 0.05),
    "Small-scale oil palm plantation": (0.30, 0.10, 0.08, 0.20, 0.32),
}


def _smallholder(fine: str, ctx: Ctx) -> Patch:
    rng = ctx.rng
    size = rng.uniform(30.0, 60.0)
    # Voronoi cells around a jittered lattice: irregular fields of roughly ``size`` metres.
    gx = np.arange(ctx.x.min() - size, ctx.x.max() + size, size)
    gy = np.arange(ctx.y.min() - size, ctx.y.max() + size, size)
    seeds = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    seeds = seeds + rng.uniform(-0.4 * size, 0.4 * size, size=seeds.shape)
    _, idx = cKDTree(seeds).query(np.column_stack([ctx.x.ravel(), ctx.y.ravel()]))
    kinds = rng.choice(
        len(_FIELD_SPECTRA),
        size=len(seeds),
        p=_FIELD_PROBS.get(fine, _FIELD_PROBS["Small-scale agriculture"]),
    )
    gains = rng.normal(1.0, 0.08, size=(len(seeds), 1)) * rng.normal(
        1.0, 0.03, size=(len(seeds), 6)
    )
    table = (_FIELD_SPECTRA[kinds] * gains).astype(np.float32)
    refl = table[idx].T.reshape(6, *ctx.shape)
    refl *= 1.0 + 0.03 * rng.standard_normal(ctx.shape, dtype=np.float32)
    # Crop fields green up and are harvested between dates; the sign sets each field's phase.
    phase = np.where(kinds == 1, rng.choice([-1.0, 1.0], size=len(seeds)), 0.0)
    seasonal = phase[idx].reshape(ctx.shape).astype(np.float32)
    return Patch(refl.astype(np.float32), np.zeros(ctx.shape, np.float32), seasonal)


def _grassland(ctx: Ctx) -> Patch:
    rng = ctx.rng
    # Smooth, low-texture open cover: grass grading into shrub over ~100 m.
    w = np.clip(0.35 + 0.25 * smooth_noise(rng, ctx.shape, 4.0), 0.0, 1.0)
    refl = sp.mix(sp.GRASS, sp.SHRUB, w)
    refl *= 1.0 + 0.012 * rng.standard_normal(ctx.shape, dtype=np.float32)
    zeros = np.zeros(ctx.shape, np.float32)
    return Patch(refl.astype(np.float32), zeros, zeros)
