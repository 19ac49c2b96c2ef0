"""Rivers, roads, settlements and peat of the world, laid out in UTM metres.

They are drawn into the imagery (landscape.py), the GFC tree cover (gfc.py) and the DEM,
and written as the OSM-like / peat vector files (ancillary.py), so all of them agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shapely import unary_union
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from .noise import stream
from .region import Region
from .spec import WorldSpec

ROAD_WIDTH_M = {"primary": 20.0, "secondary": 14.0, "track": 8.0}
PEAT_CLASSES = ("shallow (50-100 cm)", "medium (100-200 cm)", "deep (200-400 cm)")
_NAME_HEADS = ("Tumbang", "Sungai", "Kuala", "Tanjung", "Pulau", "Muara", "Bukit", "Tewah")
_NAME_SYLL = ("ka", "ha", "ri", "ngan", "ba", "lu", "sa", "pan", "ti", "rung", "ma", "jang")


@dataclass(frozen=True)
class Road:
    geom: LineString
    highway: str  # primary / secondary / track (OSM ``highway`` values)
    osm_id: int

    @property
    def width(self) -> float:
        return ROAD_WIDTH_M[self.highway]


@dataclass(frozen=True)
class Settlement:
    point: Point
    name: str
    place: str  # town / village (OSM ``place`` values)
    population: int

    @property
    def radius(self) -> float:
        """Footprint radius in metres, growing with population."""
        return float(80.0 + 4.0 * np.sqrt(self.population))


@dataclass(frozen=True)
class Features:
    rivers: tuple[tuple[LineString, float], ...]  # (centre line, width m)
    roads: tuple[Road, ...]
    settlements: tuple[Settlement, ...]
    peat: tuple[tuple[Polygon, str], ...]  # (polygon, depth class), non-overlapping

    def water(self) -> BaseGeometry:
        return unary_union([line.buffer(w / 2, quad_segs=4) for line, w in self.rivers])

    def peat_area(self) -> BaseGeometry:
        return unary_union([p for p, _ in self.peat])

    def keep_out(self) -> BaseGeometry:
        """Where no event may be placed: rivers, roads and villages plus a clearance."""
        parts = [line.buffer(w / 2 + 150.0, quad_segs=4) for line, w in self.rivers]
        parts += [r.geom.buffer(r.width / 2 + 80.0, quad_segs=4) for r in self.roads]
        parts += [s.point.buffer(s.radius + 250.0, quad_segs=8) for s in self.settlements]
        return unary_union(parts)


def make_features(spec: WorldSpec, region: Region) -> Features:
    """Lay out a meandering river system, a road network, settlements and a peat dome."""
    rng = stream(spec.seed, "features")
    left, bottom, right, top = region.bounds
    fl, fb, fr, ft = region.feature_bounds
    width, height = right - left, top - bottom

    # Kalimantan Tengah's rivers run roughly north -> south to the Java Sea.
    x_main = left + width * rng.uniform(0.3, 0.42)
    main = _meander(
        rng, along=np.linspace(ft, fb, 240), base=x_main, amp=0.05 * width, vertical=True
    )
    y_join = bottom + height * rng.uniform(0.35, 0.65)
    trib = _meander(
        rng, along=np.linspace(fr, x_main, 160), base=y_join, amp=0.04 * height, vertical=False
    )
    rivers = ((main, float(rng.uniform(90.0, 130.0))), (trib, float(rng.uniform(35.0, 50.0))))

    ids = iter(int(v) for v in rng.integers(100_000_000, 999_999_999, size=16))
    y_road = bottom + height * rng.uniform(0.6, 0.8)
    primary = _meander(
        rng, along=np.linspace(fl, fr, 120), base=y_road, amp=0.02 * height, vertical=False
    )
    x_branch = left + width * rng.uniform(0.62, 0.78)
    y_at_branch = _value_at(primary, x_branch, vertical=False)
    secondary = _meander(
        rng,
        along=np.linspace(y_at_branch, fb, 100),
        base=x_branch,
        amp=0.025 * width,
        vertical=True,
    )
    roads = [Road(primary, "primary", next(ids)), Road(secondary, "secondary", next(ids))]
    for start_frac, direction in ((rng.uniform(0.25, 0.45), 1.0), (rng.uniform(0.6, 0.8), -1.0)):
        start = secondary.interpolate(start_frac, normalized=True)
        length = width * rng.uniform(0.2, 0.3)
        angle = rng.uniform(-0.3, 0.3)
        end = (start.x + direction * length * np.cos(angle), start.y + length * np.sin(angle))
        roads.append(Road(LineString([(start.x, start.y), end]), "track", next(ids)))

    town = main.intersection(primary)
    town_pt = town if isinstance(town, Point) else Point(x_main, y_road)
    settlements = [Settlement(town_pt, _name(rng), "town", int(rng.integers(8_000, 25_000)))]
    for frac in np.sort(rng.uniform(0.55, 0.9, size=2)):
        pt = main.interpolate(_frac_at(main, bottom + height * (1 - frac)), normalized=True)
        settlements.append(
            Settlement(
                Point(pt.x + 140.0, pt.y), _name(rng), "village", int(rng.integers(300, 2_500))
            )
        )
    pt = secondary.interpolate(0.75, normalized=True)
    settlements.append(
        Settlement(Point(pt.x, pt.y), _name(rng), "village", int(rng.integers(300, 2_500)))
    )

    peat = _peat(rng, region)
    return Features(rivers, tuple(roads), tuple(settlements), peat)


def _meander(
    rng: np.random.Generator, along: np.ndarray, base: float, amp: float, vertical: bool
) -> LineString:
    """A sinuous line: ``along`` runs the main axis, the other axis wobbles around ``base``."""
    t = (along - along.min()) / max(np.ptp(along), 1.0)
    offset = np.zeros_like(t)
    for k, scale in ((1.5, 1.0), (3.7, 0.45), (8.3, 0.15)):
        offset += scale * np.sin(
            2 * np.pi * k * rng.uniform(0.8, 1.2) * t + rng.uniform(0, 2 * np.pi)
        )
    across = base + amp * offset
    coords = np.column_stack([across, along] if vertical else [along, across])
    return LineString(np.round(coords, 2))


def _value_at(line: LineString, coord: float, vertical: bool) -> float:
    """The across-axis value of a ``_meander`` line at a given along-axis coordinate."""
    xy = np.asarray(line.coords)
    a, b = (xy[:, 1], xy[:, 0]) if vertical else (xy[:, 0], xy[:, 1])
    order = np.argsort(a)
    return float(np.interp(coord, a[order], b[order]))


def _frac_at(line: LineString, y: float) -> float:
    """Normalised position along a north->south line where it reaches northing ``y``."""
    xy = np.asarray(line.coords)
    i = int(np.argmin(np.abs(xy[:, 1] - y)))
    return float(line.project(Point(xy[i]), normalized=True))


def _peat(rng: np.random.Generator, region: Region) -> tuple[tuple[Polygon, str], ...]:
    """Peat under the southern part of the world, deepening away from its wavy northern edge."""
    left, bottom, right, top = region.bounds
    fl, fb, fr, _ = region.feature_bounds
    xs = np.linspace(fl, fr, 120)
    t = (xs - fl) / (fr - fl)
    wobble = sum(
        a * np.sin(2 * np.pi * k * t + rng.uniform(0, 2 * np.pi))
        for k, a in ((1.0, 0.06), (2.6, 0.03))
    )
    edge = bottom + (top - bottom) * (rng.uniform(0.4, 0.5) + wobble)
    polys = []
    for depth in (0.0, 0.12 * (top - bottom) + 600.0, 0.3 * (top - bottom) + 1800.0):
        ring = np.column_stack([xs, edge - depth])
        ring = np.vstack([ring, [[fr, fb - 10.0], [fl, fb - 10.0]]])
        polys.append(Polygon(np.round(ring, 2)))
    parts = (polys[0].difference(polys[1]), polys[1].difference(polys[2]), polys[2])
    return tuple((p, c) for p, c in zip(parts, PEAT_CLASSES, strict=True) if not p.is_empty)


def _name(rng: np.random.Generator) -> str:
    """An Indonesian-sounding place name (invented, drawn from syllables)."""
    head = _NAME_HEADS[int(rng.integers(len(_NAME_HEADS)))]
    n = int(rng.integers(2, 4))
    word = "".join(_NAME_SYLL[int(i)] for i in rng.integers(len(_NAME_SYLL), size=n))
    return f"{head} {word.capitalize()}"
