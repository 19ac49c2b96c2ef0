"""Seeded random streams and smooth random fields shared by the generator's modules."""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent PCG64 generator for one named part of the world.

    Each part draws from its own stream, so adding draws to one part never shifts another.
    ``crc32`` (not ``hash``) keeps the mapping stable across processes.
    """
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))
    )


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit std (float32)."""
    field = ndimage.gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap"
    )
    std = float(field.std())
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


class SmoothField:
    """A smooth random surface over a square extent, sampled anywhere by cubic interpolation.

    Terrain, peat edges and climate need the *same* surface at several grids (UTM imagery,
    lon/lat rasters); evaluating one coarse lattice at arbitrary points keeps them consistent.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        bounds: tuple[float, float, float, float],
        spacing: float,
        sigma_cells: float = 1.5,
    ) -> None:
        self.x0, self.y0, x1, y1 = bounds
        self.spacing = spacing
        nx = int(np.ceil((x1 - self.x0) / spacing)) + 4
        ny = int(np.ceil((y1 - self.y0) / spacing)) + 4
        self.grid = smooth_noise(rng, (ny, nx), sigma_cells).astype(np.float64)

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Field values at coordinates ``x, y`` (same units as ``bounds``)."""
        cols = (np.asarray(x, dtype=np.float64) - self.x0) / self.spacing + 1.0
        rows = (np.asarray(y, dtype=np.float64) - self.y0) / self.spacing + 1.0
        coords = np.stack([rows.ravel(), cols.ravel()])
        values = ndimage.map_coordinates(self.grid, coords, order=3, mode="nearest")
        return values.reshape(np.shape(x))


def block_mean(a: np.ndarray, factor: int = 2) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks over the last two axes (shape must divide)."""
    *lead, h, w = a.shape
    return a.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 smoothstep of ``x`` across [-width, width] (soft edges for masks)."""
    t = np.clip((x + width) / (2.0 * width), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def coarse_field(
    rng: np.random.Generator, shape: tuple[int, int], factor: int, sigma: float = 1.5
) -> np.ndarray:
    """A unit-std smooth field at ``shape``, built ``factor`` times coarser and upsampled.

    Much cheaper than a wide Gaussian at full resolution for the large-scale variation
    of forests, illumination and clouds.
    """
    h, w = shape
    small = smooth_noise(rng, (h // factor + 2, w // factor + 2), sigma)
    zoomed = ndimage.zoom(
        small, (h / small.shape[0], w / small.shape[1]), order=1, grid_mode=True, mode="nearest"
    )
    zoomed = zoomed[:h, :w]
    return ((zoomed - zoomed.mean()) / max(float(zoomed.std()), 1e-6)).astype(np.float32)
