"""The ForestNet-release style event tables and the loss-region polygons."""

from __future__ import annotations

import csv
from pathlib import Path

import geopandas as gpd
import numpy as np

from .layout import SPLITS, Event
from .vectors import write_gpkg

#: Columns of ForestNet's released train/val/test CSVs, in order.
RELEASE_COLUMNS = ("label", "merged_label", "latitude", "longitude", "year", "example_path")


def write_events(root: Path, events: tuple[Event, ...]) -> dict[str, str]:
    """Write events/{train,val,test}.csv and events/loss_regions.gpkg; return their paths."""
    folder = root / "events"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        rel = f"events/{split}.csv"
        with (root / rel).open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(RELEASE_COLUMNS)
            for e in events:
                if e.split != split:
                    continue
                lat, lon = f"{e.latitude:.6f}", f"{e.longitude:.6f}"
                writer.writerow(
                    [e.label, e.merged_label, lat, lon, e.year, f"examples/{lat}_{lon}"]
                )
        paths[f"events_{split}"] = rel

    gdf = gpd.GeoDataFrame(
        {
            "event_id": [e.event_id for e in events],
            "label": [e.label for e in events],
            "merged_label": [e.merged_label for e in events],
            "year": np.asarray([e.year for e in events], np.int32),
            "split": [e.split for e in events],
            "latitude": [e.latitude for e in events],
            "longitude": [e.longitude for e in events],
            "area_ha": [e.area_ha for e in events],
        },
        geometry=[e.poly_lonlat for e in events],
        crs="EPSG:4326",
    )
    paths["loss_regions"] = "events/loss_regions.gpkg"
    write_gpkg(gdf, root / paths["loss_regions"], "loss_regions")
    return paths
