"""A small synthetic chip store for the training tests: 8 events of 48 px, 2 per class.

View v holds about v + 0.1 everywhere (so a sample's view can be read off its values) and
the composite carries a class signal inside the loss region.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from shapely.geometry import box

from forestnet_model.specs import ModelSpec
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.imagery.views import CHIP_BANDS, ChipSpec, EventChip, chip_geobox
from pipeline.training_set.auxiliary import AUX_BANDS, AUX_SCALARS
from pipeline.training_set.chip_store import (
    finalize_chip_store,
    init_chip_store,
    write_chip_batch,
)

#: 48 px chips: not a multiple of 32, so evaluation has to pad them (to 64).
SPEC = ChipSpec(size=48, max_single_views=2)
SPLITS = ["train", "train", "train", "train", "val", "val", "test", "test"]
CLASSES = [0, 1, 2, 3, 0, 1, 2, 3]  # 2 events per class
MODEL = ModelSpec(encoder="efficientnet-b0")
BANDS = tuple(CHIP_BANDS)


def synthetic_events() -> gpd.GeoDataFrame:
    lons = 113.50 + 0.01 * np.arange(len(SPLITS))
    return gpd.GeoDataFrame({
        "event_id": [f"2015_ev{i}" for i in range(len(SPLITS))],
        "loss_year": [2015] * len(SPLITS),
        "label": [DRIVER_CLASSES[c] for c in CLASSES],
        "merged_label": [DRIVER_CLASSES[c] for c in CLASSES],
        "split": SPLITS,
        "geometry": [box(x - 0.0005, -1.9504, x + 0.0005, -1.9496) for x in lons],
    }, crs="EPSG:4326")


def synthetic_chips(events: gpd.GeoDataFrame):
    """View v holds about v + 0.1 everywhere, so a sample's view can be read off its values."""
    rng = np.random.default_rng(0)
    s, v = SPEC.size, SPEC.n_views
    chips, aux, scalars = [], [], []
    for i, geom in enumerate(events.geometry):
        image = (0.1 + np.arange(v)[:, None, None, None]
                 + 0.02 * rng.standard_normal((v, len(CHIP_BANDS), s, s))).astype(np.float32)
        mask = np.zeros((s, s), np.uint8)
        mask[22:28, 20:30] = 1  # around the centre pixel (24, 24), as real chips are
        mask[10:14, 30:40] = 1
        image[0, :, mask.astype(bool)] += 0.05 * CLASSES[i]  # a class signal in the region
        if SPLITS[i] == "train":
            image[0, 2, :3, :5] = np.nan  # no data in a corner
        a = rng.normal(50.0, 5.0, size=(len(AUX_BANDS), s, s)).astype(np.float32)
        a[0, -4:] = np.nan
        chips.append(EventChip(
            geobox=chip_geobox(geom, SPEC), image=image,
            view_dates=["composite", "2017-06-12", ""], view_cloud=[0.2, 0.1, 1.0],
            scene_ids=["scene"], loss_mask=mask, region=geom,
        ))
        aux.append(a)
        scalars.append(np.zeros(len(AUX_SCALARS), np.float32))
    return chips, aux, scalars


def synthetic_chip_store(final: Path, spec: ChipSpec | None = None) -> Path:
    """Write and finish the store at ``final`` (``spec`` default: :data:`SPEC`)."""
    spec = spec or SPEC
    events = synthetic_events()
    chips, aux, scalars = synthetic_chips(events)
    init_chip_store(final, events, spec)
    write_chip_batch(final, 0, chips[:4], aux[:4], scalars[:4])
    write_chip_batch(final, 4, chips[4:], aux[4:], scalars[4:])
    return finalize_chip_store(final, [(0, 4), (4, 8)])
