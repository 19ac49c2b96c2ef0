"""Loss-polygon shapes per driver, in local metres around (0, 0).

Each shape carries the parameters that the land-use pattern needs (orientation, block
layout), so the rendered land use lines up with the polygon edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

#: Target area range (ha) per fine label; the merged class sets the look, the fine label
#: the size (ForestNet's plantations are large blocks, smallholder plots are small).
AREA_HA: dict[str, tuple[float, float]] = {
    "Oil palm plantation": (25.0, 60.0),
    "Timber plantation": (20.0, 55.0),
    "Other large-scale plantations": (20.0, 50.0),
    "Small-scale agriculture": (3.0, 10.0),
    "Small-scale mixed plantation": (4.0, 12.0),
    "Small-scale oil palm plantation": (4.0, 12.0),
    "Grassland shrubland": (8.0, 30.0),
    "Secondary forest": (5.0, 18.0),
    "Other": (3.0, 15.0),
    "Mining": (10.0, 35.0),
    "Logging": (8.0, 25.0),
    "Fish pond": (5.0, 18.0),
}


@dataclass(frozen=True)
class Shape:
    polygon: Polygon  # local metres, centroid near (0, 0)
    angle: float  # orientation in radians (rows, grids, trails align with it)


def make_shape(rng: np.random.Generator, fine_label: str, merged_label: str) -> Shape:
    """Draw a loss polygon for one event of the given labels."""
    lo, hi = AREA_HA[fine_label]
    area_m2 = rng.uniform(lo, hi) * 10_000.0
    angle = float(rng.uniform(0.0, np.pi))
    if merged_label == "Plantation":
        poly = _blocks(rng, area_m2)
    elif merged_label == "Smallholder agriculture":
        poly = _blob(rng, area_m2, harmonics=(2, 3, 4, 5, 6), amp=0.13, aspect=rng.uniform(1, 1.6))
    elif merged_label == "Grassland shrubland":
        poly = _blob(rng, area_m2, harmonics=(2, 3), amp=0.08, aspect=rng.uniform(1, 1.5))
    elif fine_label == "Fish pond":
        w = np.sqrt(area_m2 * rng.uniform(0.6, 1.6))
        poly = box(-w / 2, -area_m2 / w / 2, w / 2, area_m2 / w / 2)
    elif fine_label == "Logging":
        poly = _blob(rng, area_m2, harmonics=(2, 3, 4), amp=0.12, aspect=rng.uniform(1.6, 2.4))
    elif fine_label == "Mining":
        poly = _blob(rng, area_m2, harmonics=(2, 3, 4, 5), amp=0.15, aspect=rng.uniform(1, 1.5))
    else:
        poly = _blob(rng, area_m2, harmonics=(2, 3, 4, 5), amp=0.11, aspect=rng.uniform(1, 1.7))
    poly = affinity.rotate(poly, angle, origin=(0, 0), use_radians=True)
    poly = affinity.scale(poly, *(2 * [np.sqrt(area_m2 / poly.area)]), origin=(0, 0))
    c = poly.centroid
    poly = affinity.translate(poly, -c.x, -c.y)
    return Shape(poly, angle)


def _blob(
    rng: np.random.Generator, area_m2: float, harmonics: tuple[int, ...], amp: float, aspect: float
) -> Polygon:
    """A star-shaped blob: a circle whose radius wobbles with a few random harmonics."""
    phi = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(phi)
    for k in harmonics:
        r += (
            amp
            * rng.uniform(0.4, 1.0)
            / np.sqrt(k - 1)
            * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        )
    r = np.clip(r, 0.45, None)  # keep every spoke long enough: no thin necks, one component
    radius = np.sqrt(area_m2 / np.pi)
    xy = np.column_stack(
        [radius * aspect**0.5 * r * np.cos(phi), radius / aspect**0.5 * r * np.sin(phi)]
    )
    return Polygon(xy)


def _blocks(rng: np.random.Generator, area_m2: float) -> Polygon:
    """1-3 rectangles sharing edges, aligned on one axis: plantation blocks."""
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    parts, x = [], 0.0
    base_h = np.sqrt(area_m2 / n) * rng.uniform(0.8, 1.25)
    for i in range(n):
        w = area_m2 / n / base_h * rng.uniform(0.8, 1.2)
        h = base_h * (1.0 if i == 0 else rng.uniform(0.6, 1.0))
        # Blocks share the full edge with the previous one and align at the bottom or top,
        # so their union is one solid polygon (one loss component) with a stepped outline.
        y0 = 0.0 if rng.random() < 0.5 else base_h - h
        parts.append(box(x, y0, x + w, y0 + h))
        x += w
    return unary_union(parts).simplify(0.01)
