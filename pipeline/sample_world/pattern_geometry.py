"""What every land-use renderer shares: its inputs, its output and the line/grid helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXEL_M = 15.0


@dataclass(frozen=True)
class Ctx:
    """What a renderer sees: pixel-centre coordinates relative to the polygon centroid."""

    x: np.ndarray  # (h, w) metres east
    y: np.ndarray  # (h, w) metres north
    inside_m: np.ndarray  # (h, w) distance to the polygon edge, inside; 0 outside
    forest: np.ndarray  # (6, h, w) the forest the event replaced
    angle: float  # pattern orientation, radians
    rng: np.random.Generator

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape


@dataclass(frozen=True)
class Patch:
    refl: np.ndarray  # (6, h, w) reflectance
    water: np.ndarray  # (h, w) open-water fraction
    seasonal: np.ndarray  # (h, w) weight of the per-scene crop cycle, in [-1, 1]


def rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (a) and across (b) a direction ``angle`` radians from east."""
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


def line_alpha(distance: np.ndarray, width: float) -> np.ndarray:
    """Antialiased coverage of a line of ``width`` metres at ``distance`` from its axis."""
    return np.clip((width / 2 - distance) / PIXEL_M + 0.5, 0.0, 1.0).astype(np.float32)


def grid_distance(a: np.ndarray, spacing: float, offset: float) -> np.ndarray:
    """Distance to the nearest line of a family ``a = offset + k * spacing``."""
    m = np.mod(a - offset, spacing)
    return np.minimum(m, spacing - m)


def cell_index(a: np.ndarray, spacing: float, offset: float) -> np.ndarray:
    """Index of the strip between grid lines holding each pixel (starting at 0)."""
    k = np.floor((a - offset) / spacing).astype(np.int64)
    return k - k.min()
