"""Map one batch of loss events: composite chips, model probabilities, a GeoParquet part."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np

from forestnet_model.bundle import read_bundle_meta
from forestnet_model.predict import predict_events
from pipeline.atomic import atomic_output
from pipeline.auxiliary import AuxSources, aux_for_chip
from pipeline.catalog import read_index
from pipeline.chips import CHIP_BANDS, ChipSpec, build_event_chip
from pipeline.drivers import DRIVER_CLASSES, DRIVER_KEYS


def map_event_batch(
    events_path: Path,
    start: int,
    stop: int,
    scene_store: Path,
    bundle: Path,
    spec: ChipSpec,
    aux_sources: AuxSources,
    part_path: Path,
    run_id: str,
) -> dict:
    """Predict the driver of events ``[start, stop)``; skip if the part already exists."""
    part_path = Path(part_path)
    if part_path.exists():
        return {"part": str(part_path), "skipped": True}
    meta = read_bundle_meta(bundle)
    events = gpd.read_parquet(events_path).iloc[start:stop].reset_index(drop=True)
    index = read_index(scene_store)
    band_idx = [CHIP_BANDS.index(b) for b in meta.model.in_bands]
    aux_bands = tuple(meta.model.aux_bands)
    images, masks, scenes, dates, ok = [], [], [], [], []
    for row in events.itertuples(index=False):
        chip = build_event_chip(row.geometry, int(row.loss_year), scene_store, index, spec,
                                composite_only=True)
        x = chip.image[0][band_idx]
        if aux_bands:
            # Only the bands the model reads: no distances or climate per mapped event.
            aux, _ = aux_for_chip(chip.geobox, chip.region, chip.loss_mask, chip.image[0],
                                  aux_sources, bands=aux_bands, features=())
            x = np.concatenate([x, aux])
        images.append(x)
        masks.append(chip.loss_mask.astype(bool))
        scenes.append(",".join(chip.scene_ids))
        dates.append(",".join(sorted(_scene_date(s) for s in chip.scene_ids)))
        ok.append(chip.status == "ok")
    probs, model_id = (predict_events(bundle, np.stack(images), np.stack(masks))
                       if images else (np.zeros((0, len(DRIVER_CLASSES))), meta.model_id))
    out = events[["event_id", "province", "loss_year", "n_pixels", "geometry"]].copy()
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    out["driver"] = [DRIVER_CLASSES[i] for i in best]
    out["driver_code"] = (best + 1).astype(np.int16)
    for k, key in enumerate(DRIVER_KEYS):
        out[f"p_{key}"] = probs[:, k].astype(np.float64)
    out["confidence"] = probs.max(axis=1) if len(probs) else np.zeros(0)
    out["scene_ids"], out["scene_dates"] = scenes, dates
    out["model_id"], out["run_id"] = model_id, run_id
    # An event with no usable imagery keeps its polygon but no driver: never a guess.
    bad = ~np.asarray(ok, dtype=bool)
    if bad.any():
        out.loc[bad, "driver"] = "No imagery"
        out.loc[bad, "driver_code"] = 0
    with atomic_output(part_path) as tmp:
        out.to_parquet(tmp, index=False)
    return {"part": str(part_path), "skipped": False, "n_events": len(out),
            "no_imagery": int(bad.sum())}


def _scene_date(scene_id: str) -> str:
    stamp = scene_id.split("_")[3]
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}"
