"""The model half of mapping: tile inputs -> each piece's region statistics -> a part per tile.

The bundle is loaded once per worker process (:func:`cached_bundle`). Each piece is seen
as evaluation sees an event: in its event window (the bundle's ``event_context``), so a
mapped driver comes from the same inputs as an evaluated one; windows of one shape run
in batches. Per-pixel logits never leave this function: each piece keeps its
region-mean logits, its pixel count (the weight when pieces merge across tiles) and the
fusion head's other inputs (``fusion_inputs``); the head itself runs on merged events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np

from forestnet_model.model_inputs import (
    event_window,
    normalise,
    pad_to_multiple,
    same_shape_batches,
)
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
    device: str = "auto", cpu_runtime: str = "auto",
) -> list[dict]:
    """Predict every piece of ``inputs`` and write one GeoParquet part per tile.

    ``cpu_runtime`` (``auto``, ``eager``, ``onnxruntime``) chooses how a CPU runs the
    network (:mod:`forestnet_model.fast_forward`), as evaluation runs it. Failed tiles
    (``error`` set) write nothing, so a rerun tries them again.
    """
    # The model stack (torch, smp, timm: about 10 s of imports) loads here, in the worker
    # that predicts; the flow that plans the tiles and submits this never loads it.
    from forestnet_model.predict import cached_forward
    from forestnet_model.train import pick_device

    dev = pick_device(device)
    forward, meta = cached_forward(str(Path(bundle).resolve()), dev.type, cpu_runtime)
    expected = meta.model.in_channels
    samples = [(t, s) for t in inputs if not t.error for s in t.samples]
    for _, sample in samples:
        if sample.image.shape[0] != expected:
            raise ValueError(f"{bundle}: model expects {expected} input channels "
                             f"({meta.model.in_bands + meta.model.aux_bands}), "
                             f"got {sample.image.shape[0]}")
    images = [normalise(s.image, meta.normalisation) for _, s in samples]
    views = model_views([s for _, s in samples], meta.model.event_context)
    pooled = [np.full((len(s.pieces), meta.model.n_classes), np.nan) for _, s in samples]
    pixels = [np.zeros(len(s.pieces)) for _, s in samples]
    for batch in same_shape_batches([images[v.sample][:, v.rows, v.cols].shape for v in views],
                                    batch_size):
        x = np.stack([pad_to_multiple(images[views[j].sample][:, views[j].rows, views[j].cols])
                      for j in batch])
        for v, pixel_logits in zip((views[j] for j in batch), forward(x), strict=True):
            sample = samples[v.sample][1]
            labels = sample.labels[v.rows, v.cols]
            means, counts = region_means(pixel_logits, pad_to_multiple(labels),
                                         len(pooled[v.sample]))
            pooled[v.sample][v.pieces] = means[v.pieces]
            pixels[v.sample][v.pieces] = counts[v.pieces]
            for k in v.pieces:  # an edge piece pools its whole event's pixels
                if k in sample.event_masks:
                    event = pad_to_multiple(sample.event_masks[k][v.rows, v.cols])
                    pooled[v.sample][k] = region_means(pixel_logits, event.astype(np.int32),
                                                       1)[0][0]
    per_piece: dict[int, dict[int, PieceStats]] = {}
    for i, (tile, sample) in enumerate(samples):
        n = len(sample.pieces)
        # Band moments are over the piece's own pixels: the same in any window.
        band_mean, band_var = (piece_band_moments(images[i], sample.labels, n) if meta.model.fusion
                               else (np.zeros((n, 0)), np.zeros((n, 0))))
        for k, event in sample.event_masks.items():
            if meta.model.fusion:  # the whole event's moments, as its chip's
                mean, var = piece_band_moments(images[i], event.astype(np.int32), 1)
                band_mean[k], band_var[k] = mean[0], var[0]
        scalars = sample.scalars if sample.scalars is not None else np.zeros((n, 0))
        for k, row in enumerate(sample.pieces):
            per_piece.setdefault(id(tile), {})[row] = PieceStats(
                pooled[i][k], pixels[i][k], band_mean[k], band_var[k], scalars[k], sample)
    results = []
    for tile in inputs:
        if tile.error:
            results.append({"tile_id": tile.tile_id, "status": "failed", "error": tile.error})
            continue
        part = tile_part(tile, per_piece.get(id(tile), {}), meta.model_id)
        with atomic_output(Path(part_paths[tile.tile_id])) as tmp:
            part.to_parquet(tmp, index=False)
        results.append({"tile_id": tile.tile_id, "status": "done", "pieces": len(part),
                        "notes": tile.notes, "composites": tile.composites})
    return results


@dataclass(frozen=True)
class ModelView:
    """One network input: a window of a sample and the pieces it classifies."""

    sample: int
    rows: slice
    cols: slice
    pieces: list[int]  # piece positions in the sample (label k + 1)


def model_views(samples: list[TileSample], context: int | None) -> list[ModelView]:
    """What the network sees of each sample: each piece's event window, as evaluation sees
    an event's chip (``event_window`` with the bundle's ``event_context``; a piece at the
    tile's edge: its whole event's window), or, with no context set, the whole tile for all
    its pieces at once."""
    whole = slice(None)
    if context is None:
        return [ModelView(i, whole, whole, list(range(len(s.pieces))))
                for i, s in enumerate(samples)]
    return [ModelView(i, *event_window(s.region(k), context), [k])
            for i, s in enumerate(samples) for k in range(len(s.pieces))]


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
