"""The model half of mapping: tile inputs -> each piece's region statistics -> a part per tile.

The bundle is loaded once per worker process (:func:`cached_bundle`) and tiles are run
through it in batches. Per-pixel logits never leave this function: each piece keeps its
region-mean logits, its pixel count (the weight when pieces merge across tiles) and the
fusion head's other inputs (``fusion_inputs``); the head itself runs on merged events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import torch

from forestnet_model.data import normalise, pad_to_multiple
from forestnet_model.predict import cached_bundle
from forestnet_model.train import pick_device
from pipeline.core.atomic import atomic_output
from pipeline.mapping.fusion_inputs import (
    AUX_VALUES,
    BAND_MEAN,
    BAND_VAR,
    FUSION_COLUMNS,
    piece_band_moments,
    region_means,
)
from pipeline.mapping.piece_merge import LOGIT_COLUMNS
from pipeline.mapping.tile_inputs import TileInput, TileSample


def infer_tiles(
    inputs: list[TileInput], bundle: Path, part_paths: dict[str, str], batch_size: int = 4,
    device: str = "auto",
) -> list[dict]:
    """Predict every piece of ``inputs`` and write one GeoParquet part per tile.

    Failed tiles (``error`` set) write nothing, so a rerun tries them again.
    """
    dev = pick_device(device)
    model, meta = cached_bundle(str(Path(bundle).resolve()), dev.type)
    expected = meta.model.in_channels
    samples = [(t, s) for t in inputs if not t.error for s in t.samples]
    for _, sample in samples:
        if sample.image.shape[0] != expected:
            raise ValueError(f"{bundle}: model expects {expected} input channels "
                             f"({meta.model.in_bands + meta.model.aux_bands}), "
                             f"got {sample.image.shape[0]}")
    logits: list[np.ndarray] = []
    moments: list[tuple[np.ndarray, np.ndarray]] = []  # only a fusion head reads them
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            x = np.stack([pad_to_multiple(normalise(s.image, meta.normalisation))
                          for _, s in chunk])
            xt = torch.from_numpy(x).to(dev).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                out = model(xt)
            logits.extend(out.float().cpu().numpy())
            if meta.model.fusion:
                moments.extend(piece_band_moments(row, pad_to_multiple(s.labels), len(s.pieces))
                                for row, (_, s) in zip(x, chunk, strict=True))
    per_piece: dict[int, dict[int, PieceStats]] = {}
    for i, ((tile, sample), pixel_logits) in enumerate(zip(samples, logits, strict=True)):
        n = len(sample.pieces)
        means, counts = region_means(pixel_logits, pad_to_multiple(sample.labels), n)
        band_mean, band_var = moments[i] if moments else (np.zeros((n, 0)), np.zeros((n, 0)))
        scalars = sample.scalars if sample.scalars is not None else np.zeros((n, 0))
        for k, row in enumerate(sample.pieces):
            per_piece.setdefault(id(tile), {})[row] = PieceStats(
                means[k], counts[k], band_mean[k], band_var[k], scalars[k], sample)
    results = []
    for tile in inputs:
        if tile.error:
            results.append({"tile_id": tile.tile_id, "status": "failed", "error": tile.error})
            continue
        part = tile_part(tile, per_piece.get(id(tile), {}), meta.model_id)
        with atomic_output(Path(part_paths[tile.tile_id])) as tmp:
            part.to_parquet(tmp, index=False)
        results.append({"tile_id": tile.tile_id, "status": "done", "pieces": len(part),
                        "notes": tile.notes})
    return results


@dataclass(frozen=True)
class PieceStats:
    """What one piece keeps from the model: see the module docstring."""

    logits: np.ndarray
    pixels: float
    band_mean: np.ndarray
    band_var: np.ndarray
    scalars: np.ndarray
    sample: TileSample


def tile_part(tile: TileInput, predicted: dict[int, PieceStats], model_id: str
              ) -> gpd.GeoDataFrame:
    """The tile's pieces with their statistics, scenes and model id (no run id: parts are
    shared by every run with the same inputs). A piece without imagery has NaN logits."""
    part = tile.pieces.copy()
    n = len(part)
    logits = np.full((n, len(LOGIT_COLUMNS)), np.nan)
    weight = np.zeros(n)
    scene_ids, scene_dates = [""] * n, [""] * n
    empty = np.zeros(0)
    fusion = {column: [empty] * n for column in FUSION_COLUMNS}
    for row, stats in predicted.items():
        logits[row], weight[row] = stats.logits, stats.pixels
        scene_ids[row] = ",".join(stats.sample.scene_ids)
        scene_dates[row] = ",".join(sorted(stats.sample.scene_dates))
        fusion[BAND_MEAN][row], fusion[BAND_VAR][row] = stats.band_mean, stats.band_var
        fusion[AUX_VALUES][row] = np.asarray(stats.scalars, np.float64)
    for k, column in enumerate(LOGIT_COLUMNS):
        part[column] = logits[:, k]
    part["logit_weight"] = weight
    for column, values in fusion.items():
        part[column] = values
    part["scene_ids"], part["scene_dates"] = scene_ids, scene_dates
    part["model_id"] = model_id
    return part
