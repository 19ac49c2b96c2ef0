"""Model inputs of one map tile: its loss pieces, composite and aux, on the tile's 15 m grid.

This is the CPU half of mapping (read, warp, composite); the model half consumes
:class:`TileInput` s. A tile whose pieces span loss years further apart than the scene
window allows gets one sample per group of years, each with its own composite, so every
piece is predicted from scenes within ``years_window`` of its loss year (ForestNet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
from shapely.ops import unary_union

from pipeline.imagery.views import CHIP_BANDS, ChipSpec, composite_views, scene_views, years_span
from pipeline.mapping.fusion_inputs import piece_scalars
from pipeline.mapping.loss_pieces import tile_pieces
from pipeline.mapping.tiles import MapTile
from pipeline.training_set.auxiliary import AuxContext, AuxSources, check_aux_names


@dataclass
class TileSample:
    """One model input: ``image (channel, y, x)`` and ``labels`` (piece index + 1, 0 = none)."""

    image: np.ndarray
    labels: np.ndarray
    pieces: list[int]  # row positions in ``TileInput.pieces``
    scene_ids: list[str]
    scene_dates: list[str]
    #: ``(len(pieces), scalars)``: each piece's aux scalars (``fusion_inputs.scalar_names``)
    scalars: np.ndarray | None = None


@dataclass
class TileInput:
    """Everything the model half needs for one tile; ``error`` set when the tile failed."""

    tile_id: str
    pieces: gpd.GeoDataFrame
    samples: list[TileSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""


def year_groups(years: list[int], window: int) -> list[list[int]]:
    """Sorted loss years split so that each group has scenes within ``window`` of all."""
    groups: list[list[int]] = []
    for year in sorted(set(years)):
        if groups and year - groups[-1][0] <= 2 * window:
            groups[-1].append(year)
        else:
            groups.append([year])
    return groups


def prepare_tile(
    tile: MapTile,
    lossyear: Path,
    years: list[int],
    provinces: gpd.GeoDataFrame,
    scene_store: Path,
    index: gpd.GeoDataFrame,
    spec: ChipSpec,
    bands: tuple[str, ...],
    aux_bands: tuple[str, ...],
    aux_sources: AuxSources,
    scalars: tuple[str, ...] = (),
) -> TileInput:
    """Pieces, composite(s) and the model's channels for one tile, and each piece's aux
    ``scalars`` (names from ``fusion_inputs.scalar_names``) for a fusion model."""
    pieces = tile_pieces(lossyear, tile, years, provinces)
    out = TileInput(tile.tile_id, pieces)
    if pieces.empty:
        return out
    geobox = tile.geobox()
    local = pieces.to_crs(geobox.crs.to_wkt())
    band_idx = [CHIP_BANDS.index(b) for b in bands]
    for group in year_groups(pieces["loss_year"].tolist(), spec.years_window):
        rows = np.flatnonzero(pieces["loss_year"].isin(group).to_numpy())
        views, problem = scene_views(geobox, *years_span(group[0], group[-1], spec.years_window),
                                     scene_store, index, spec)
        if not views:
            out.notes.append(f"loss years {group}: {problem}")
            continue
        image, pool, _, notes = composite_views(views, spec)
        out.notes.extend(notes)
        labels = piece_labels(local.geometry.iloc[rows], geobox)
        x, values = image[band_idx], None
        if aux_bands or scalars:
            regions = list(local.geometry.iloc[rows])
            ctx = AuxContext(geobox, unary_union(regions), labels > 0, image, aux_sources)
            if aux_bands:
                x = np.concatenate([x, np.stack([ctx.band(b) for b in aux_bands])])
            values = piece_scalars(ctx, regions, labels, scalars)
        out.samples.append(TileSample(
            image=x.astype(np.float32), labels=labels, pieces=rows.tolist(),
            scene_ids=[v.scene_id for v in pool], scene_dates=[v.date for v in pool],
            scalars=values,
        ))
    return out


def piece_labels(geometries: gpd.GeoSeries, geobox) -> np.ndarray:
    """Burn pieces (in the grid's CRS) as 1..n by pixel centre; a piece too thin to hold
    a pixel centre is burnt with every pixel it touches, so every piece gets pixels."""
    shape = tuple(geobox.shape)
    burn = [(geom, i + 1) for i, geom in enumerate(geometries)]
    labels = rasterio.features.rasterize(burn, out_shape=shape, transform=geobox.affine, fill=0,
                                         dtype="int32")
    present = np.bincount(labels.ravel(), minlength=len(burn) + 1)
    for i in np.flatnonzero(present[1:] == 0):
        touched = rasterio.features.rasterize([burn[i]], out_shape=shape,
                                              transform=geobox.affine, fill=0, dtype="int32",
                                              all_touched=True)
        labels = np.where((touched > 0) & (labels == 0), i + 1, labels)
    return labels


def prepare_tiles(
    tile_ids: list[str],
    lossyear: Path,
    years: list[int],
    scene_store: Path,
    spec: ChipSpec,
    bands: tuple[str, ...],
    aux_bands: tuple[str, ...],
    aux_sources: AuxSources,
    scalars: tuple[str, ...] = (),
) -> list[TileInput]:
    """:func:`prepare_tile` for a batch; a tile that fails carries its error, the rest go on."""
    from pipeline.core.provinces import provinces
    from pipeline.ingest.catalog import read_index

    check_aux_names(aux_bands, scalars)
    index = read_index(scene_store)
    out = []
    for tile_id in tile_ids:
        try:
            out.append(prepare_tile(MapTile.from_id(tile_id), lossyear, years, provinces(),
                                    scene_store, index, spec, bands, aux_bands, aux_sources,
                                    scalars))
        except Exception as exc:  # a damaged scene or aux file fails its tile, not the run
            out.append(TileInput(tile_id, gpd.GeoDataFrame(), error=f"{type(exc).__name__}: "
                                 f"{exc}"))
    return out
