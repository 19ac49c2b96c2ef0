"""Event layout: labels, loss years, polygon placement and the stratified split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Point, Polygon, box
from shapely.prepared import PreparedGeometry, prep

from pipeline.core.drivers import DRIVER_CLASSES, FINE_TO_MERGED
from pipeline.core.grid import EQUAL_AREA_CRS

from .features import Features
from .noise import stream
from .rasters import lattice_window, rasterise
from .region import Region, geom_to_lonlat, geom_to_utm
from .shapes import make_shape
from .spec import WorldSpec

GFC_PER_DEGREE = 4000  # Hansen GFC: 0.00025 degree pixels
EDGE_MARGIN_M = 1000.0
MIN_GAP_M = 600.0
MIN_LOSS_PIXELS = 20
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Event:
    event_id: str
    label: str  # fine ForestNet label
    merged_label: str
    year: int
    split: str
    angle: float  # orientation of the land-use pattern, radians
    poly_lonlat: Polygon  # the exact polygon rasterised into gfc/lossyear.tif
    poly_utm: Polygon  # the same polygon in the scene CRS, for rendering
    latitude: float  # representative point inside the polygon, 6 decimals
    longitude: float
    area_ha: float  # in the equal-area CRS


def layout_events(spec: WorldSpec, region: Region, features: Features) -> tuple[Event, ...]:
    """Draw labels and years, place non-touching polygons, and split them by class."""
    rng = stream(spec.seed, "layout")
    labels = _draw_labels(rng, spec.n_events)
    years = [int(y) for y in rng.permutation(np.resize(np.asarray(spec.loss_years), spec.n_events))]
    shapes = [
        make_shape(stream(spec.seed, f"shape-{i}"), fine, merged)
        for i, (fine, merged) in enumerate(labels)
    ]
    keep_out = prep(features.keep_out())
    peat = prep(features.peat_area())
    left, bottom, right, top = region.bounds
    inner = box(
        left + EDGE_MARGIN_M, bottom + EDGE_MARGIN_M, right - EDGE_MARGIN_M, top - EDGE_MARGIN_M
    )

    placed: dict[int, Polygon] = {}
    # Big blocks first: they are the hardest to fit, small plots fill the gaps.
    for i in sorted(range(spec.n_events), key=lambda k: -shapes[k].polygon.area):
        fine, _ = labels[i]
        poly = shapes[i].polygon
        for attempt in range(3000):
            px, py = (
                rng.uniform(inner.bounds[0], inner.bounds[2]),
                rng.uniform(inner.bounds[1], inner.bounds[3]),
            )
            cand = affinity.translate(poly, px, py)
            if not inner.contains(cand) or keep_out.intersects(cand):
                continue
            if any(cand.distance(other) < MIN_GAP_M for other in placed.values()):
                continue
            # Prefer realistic settings (oil palm near roads, plots near villages, burned
            # grassland on peat); the preference is dropped when the world is crowded.
            if attempt < 600 and rng.random() > _preference(fine, cand, features, peat):
                continue
            if _loss_components(geom_to_lonlat(cand, region.epsg)) != 1:
                continue
            placed[i] = cand
            break
        else:
            raise RuntimeError(
                f"could not place event {i} ({fine}) in a {spec.size_km} km world; "
                "use fewer events or a larger size_km"
            )

    order = [int(k) for k in rng.permutation(spec.n_events)]
    split_of = stratified_split(rng, [labels[k] for k in order], spec.split_fractions)
    to_area = Transformer.from_crs(4326, EQUAL_AREA_CRS.epsg, always_xy=True)
    events = []
    for n, k in enumerate(order):
        fine, merged = labels[k]
        lonlat = geom_to_lonlat(placed[k], region.epsg)
        rep = lonlat.representative_point()
        lon, lat = round(rep.x, 6), round(rep.y, 6)
        if not lonlat.contains(Point(lon, lat)):
            raise AssertionError(f"representative point of event {n} fell outside its polygon")
        area = shapely.transform(lonlat, lambda xy: np.column_stack(to_area.transform(*xy.T))).area
        events.append(
            Event(
                event_id=f"sw-{n + 1:04d}",
                label=fine,
                merged_label=merged,
                year=years[k],
                split=split_of[n],
                angle=shapes[k].angle,
                poly_lonlat=lonlat,
                poly_utm=geom_to_utm(lonlat, region.epsg),
                latitude=lat,
                longitude=lon,
                area_ha=round(area / 10_000.0, 4),
            )
        )
    return tuple(events)


def _draw_labels(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """(fine, merged) labels balanced over the merged classes, fine labels cycled evenly."""
    out = []
    for c, merged in enumerate(DRIVER_CLASSES):
        count = n // len(DRIVER_CLASSES) + (1 if c < n % len(DRIVER_CLASSES) else 0)
        fines = [f for f, m in FINE_TO_MERGED.items() if m == merged]
        cycle: list[str] = []
        while len(cycle) < count:
            cycle += [fines[int(j)] for j in rng.permutation(len(fines))]
        out += [(fine, merged) for fine in cycle[:count]]
    return out


def _preference(fine: str, poly: Polygon, features: Features, peat: PreparedGeometry) -> float:
    """Acceptance probability of a candidate site for this fine label."""
    c = poly.centroid
    if FINE_TO_MERGED[fine] == "Plantation":
        d = min(r.geom.distance(c) for r in features.roads if r.highway != "track")
        return 1.0 if d < 3000 else 0.3
    if FINE_TO_MERGED[fine] == "Smallholder agriculture":
        d = min(s.point.distance(c) for s in features.settlements)
        return 1.0 if d < 3000 else 0.25
    if fine == "Grassland shrubland":
        return 1.0 if peat.contains(c) else 0.35
    if fine == "Mining":
        return 1.0 if min(s.point.distance(c) for s in features.settlements) > 2000 else 0.3
    if fine == "Fish pond":
        return 1.0 if min(line.distance(c) for line, _ in features.rivers) < 1500 else 0.2
    if fine == "Logging":
        return 1.0 if min(r.geom.distance(c) for r in features.roads) > 1500 else 0.4
    return 1.0


def _loss_components(poly_lonlat: Polygon) -> int:
    """8-connected components of the polygon on the GFC lattice (0 if under MIN_LOSS_PIXELS)."""
    mask = rasterise([poly_lonlat], lattice_window(poly_lonlat, GFC_PER_DEGREE)) > 0
    if mask.sum() < MIN_LOSS_PIXELS:
        return 0
    return int(ndimage.label(mask, structure=np.ones((3, 3)))[1])


def stratified_split(
    rng: np.random.Generator, labels: list[tuple[str, str]], fractions: tuple[float, float, float]
) -> list[str]:
    """Assign train/val/test per merged class, each fine label spread over the splits in
    proportion; every split gets one event when a class has 3+.

    Stratifying by the merged class alone can put every event of one fine label (say all
    the Mining pits of "Other") in the test split: a model then meets a kind of land use
    at test time that it never saw in training, which no recipe can learn.
    """
    out = [""] * len(labels)
    for cls in DRIVER_CLASSES:
        idx = [i for i, (_, m) in enumerate(labels) if m == cls]
        n = len(idx)
        counts = [int(round(f * n)) for f in fractions[:2]]
        counts.append(n - sum(counts))
        if n >= 3:
            for s in range(3):
                while counts[s] < 1:
                    counts[int(np.argmax(counts))] -= 1
                    counts[s] += 1
        elif n > 0:
            counts = [n, 0, 0]  # too few to split: keep them for training
        # Events of one fine label next to each other (in random order), then dealt out so
        # that each split's share stays closest to its quota along the way.
        shuffled = [idx[int(j)] for j in rng.permutation(n)]
        ordered = sorted(shuffled, key=lambda i: labels[i][0])
        dealt = [0, 0, 0]
        for position, i in enumerate(ordered, start=1):
            s = max((s for s in range(3) if dealt[s] < counts[s]),
                    key=lambda s: counts[s] * position / n - dealt[s])
            dealt[s] += 1
            out[i] = SPLITS[s]
    return out
