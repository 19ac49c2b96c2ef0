"""Synthetic driver-map features for the mapping-output tests (summary, PNG, COG, 1 km grid)."""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS, driver_code
from pipeline.export.geopackage import add_area_ha

#: Riau sits in UTM zone 47N; (x, y) = (600 km, 60 km) is about 101.9 E, 0.54 N.
RIAU_UTM = "EPSG:32647"
NO_IMAGERY = "No imagery"


def utm_squares(squares: Sequence[tuple[float, float, float]]) -> list[BaseGeometry]:
    """Squares ``(x_min, y_min, side_m)`` in UTM metres (so each has a known size)."""
    return [box(x, y, x + side, y + side) for x, y, side in squares]


def make_features(
    geoms: Sequence[BaseGeometry],
    drivers: Sequence[str],
    crs: str = RIAU_UTM,
    *,
    provinces: Sequence[str] | None = None,
    years: Sequence[int] | None = None,
    confidence: Sequence[float] | None = None,
) -> gpd.GeoDataFrame:
    """A driver-map frame in EPSG:4326 with every contract field; ``NO_IMAGERY`` -> code 0."""
    n = len(geoms)
    conf = np.asarray(confidence if confidence is not None else np.linspace(0.4, 0.95, n))
    rows = []
    for i, driver in enumerate(drivers):
        code = 0 if driver == NO_IMAGERY else driver_code(driver)
        probs = np.full(len(DRIVER_CLASSES), (1.0 - conf[i]) / 3)
        if code:
            probs[code - 1] = conf[i]
        rows.append({
            "event_id": f"ev-{i:04d}",
            "province": provinces[i] if provinces is not None else "Riau",
            "loss_year": years[i] if years is not None else 2018,
            "driver": driver,
            "driver_code": code,
            **{f"p_{k}": float(p) for k, p in zip(DRIVER_KEYS, probs, strict=True)},
            "confidence": float(conf[i]) if code else 0.0,
            "n_pixels": 10,
            "scene_ids": "LC08_L2SP_127060_20180101_20200902_02_T1",
            "scene_dates": "2018-01-01",
            "model_id": "forestnet-test",
            "run_id": "run-test",
        })
    frame = gpd.GeoDataFrame(rows, geometry=list(geoms), crs=crs).to_crs("EPSG:4326")
    return add_area_ha(frame)
