"""The map beside evaluation: which mapped event answers for each evaluated event.

Each evaluated event's loss region (its chip's loss mask, vectorised on the chip grid) is
joined to the map polygon it overlaps most, by area in the equal-area CRS. The map then
scores on the same events as evaluation, and where the two disagree is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio.features
import xarray as xr
from affine import Affine
from shapely.geometry import shape
from shapely.ops import unary_union

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS
from pipeline.core.errors import ForestNetError
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.export.geopackage import DRIVER_MAP_LAYER

PROBABILITY_FIELDS = [f"p_{key}" for key in DRIVER_KEYS]


class MapInputError(ForestNetError, ValueError):
    """A file given as a driver map is not one."""


def event_regions(chips: xr.Dataset, rows: Sequence[int]) -> gpd.GeoDataFrame:
    """The loss region of each chip row as a polygon (EPSG:4326), with its event_id."""
    ids, shapes = [], []
    for row in rows:
        mask = chips["loss_mask"].values[row].astype(np.uint8)
        transform = Affine(*chips["transform"].values[row][:6])
        crs = f"EPSG:{int(chips['epsg'].values[row])}"
        parts = [shape(g) for g, v in rasterio.features.shapes(mask, mask > 0, transform=transform)
                 if v == 1]
        region = gpd.GeoSeries([unary_union(parts)], crs=crs).to_crs("EPSG:4326").iloc[0]
        ids.append(str(chips["event_id"].values[row]))
        shapes.append(region)
    return gpd.GeoDataFrame({"event_id": ids}, geometry=shapes, crs="EPSG:4326")


def check_driver_map(path: Path) -> None:
    """Raise :class:`MapInputError` naming ``path`` unless it holds the driver layer."""
    if not path.is_file():
        raise MapInputError(f"{path}: no such driver map")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # GDAL raises several types for files it cannot open
        raise MapInputError(f"{path}: not a GeoPackage ({exc})") from None
    if DRIVER_MAP_LAYER not in layers:
        raise MapInputError(f"{path}: not a driver map (no layer {DRIVER_MAP_LAYER!r}; it "
                            f"has {', '.join(layers) or 'none'})")


def read_driver_maps(maps: Sequence[Path], bbox: tuple[float, float, float, float] | None
                     ) -> gpd.GeoDataFrame:
    """The driver layer of every map (features within ``bbox`` only), as one frame."""
    frames = []
    for path in maps:
        check_driver_map(Path(path))
        frames.append(pyogrio.read_dataframe(path, layer=DRIVER_MAP_LAYER, bbox=bbox))
    return pd.concat(frames, ignore_index=True) if frames else gpd.GeoDataFrame()


def mapped_at_events(maps: Sequence[Path], regions: gpd.GeoDataFrame) -> pd.DataFrame:
    """For each region: the driver and probabilities of the map polygon overlapping it
    most (empty driver, NaN probabilities where no map polygon touches it)."""
    mapped = read_driver_maps(maps, tuple(regions.total_bounds) if len(regions) else None)
    out = pd.DataFrame({"event_id": regions["event_id"].to_numpy(), "driver": "",
                        **{f: np.nan for f in PROBABILITY_FIELDS}})
    if mapped.empty or regions.empty:
        return out
    left = regions.to_crs(EQUAL_AREA_CRS).reset_index(names="region")
    right = mapped.to_crs(EQUAL_AREA_CRS)[["driver", *PROBABILITY_FIELDS, "geometry"]]
    overlap = gpd.overlay(left, right, how="intersection", keep_geom_type=True)
    if overlap.empty:
        return out
    overlap["overlap_m2"] = overlap.area
    best = overlap.sort_values("overlap_m2", ascending=False).drop_duplicates("region")
    out.loc[best["region"].to_numpy(), "driver"] = best["driver"].to_numpy()
    for field in PROBABILITY_FIELDS:
        out.loc[best["region"].to_numpy(), field] = best[field].to_numpy()
    return out


def map_beside_evaluation(maps: Sequence[Path], chips: xr.Dataset, report: dict) -> dict:
    """The map's accuracy on evaluation's events, beside evaluation's, and how far the two
    agree (``report`` is ``forestnet_model.evaluation.evaluate_bundle``'s)."""
    events = report["events"]
    ids = [str(v) for v in chips["event_id"].values]
    rows = [ids.index(e["event_id"]) for e in events]
    found = mapped_at_events(maps, event_regions(chips, rows))
    truth = np.array([e["true"] for e in events])
    evaluated = np.array([e["predicted"] for e in events])
    drivers = found["driver"].to_numpy()
    p_map = found[PROBABILITY_FIELDS].to_numpy(np.float64)
    p_eval = np.array([e["probabilities"] for e in events], np.float64)
    gap = np.abs(p_map - p_eval).max(axis=1)
    per_event = [{"event_id": e["event_id"], "true": e["true"], "evaluated": e["predicted"],
                  "mapped": str(d), "max_probability_gap": float(g)}
                 for e, d, g in zip(events, drivers, gap, strict=True)]
    present = drivers != ""
    return {
        "maps": [str(m) for m in maps], "n": len(events), "missing": int((~present).sum()),
        "map_accuracy": float(np.mean(drivers == truth)),
        "evaluation_accuracy": float(np.mean(evaluated == truth)),
        "agreement": float(np.mean(drivers == evaluated)),
        "max_probability_gap": float(np.nanmax(gap)) if present.any() else float("nan"),
        "classes": list(DRIVER_CLASSES), "events": per_event,
    }
