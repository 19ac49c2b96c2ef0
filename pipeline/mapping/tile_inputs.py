"""Model inputs of one map tile: its loss pieces, composite and aux, on the tile's 15 m grid.

This is the CPU half of mapping (composites, pieces, aux); the model half consumes
:class:`TileInput` s. A tile gets one sample per group of loss years whose lattice cells
have the same candidate scenes (``years_by_cells``), each cut from those cells'
composites (``composite_store``), so every piece is predicted from the very composite
pixels its event's chip gets: the scenes within ``years_window`` of its own loss year
(ForestNet).

Each tile is read with a halo wide enough for the event window of every piece it holds
(:func:`tile_halo`), so a piece is cut the window that evaluation cuts from an event's
chip: centred on it, with its full context, wherever it lies in the tile. A window that
slid to stay inside a narrow halo moved pieces 23-57 px off centre and flipped their
drivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.features
from scipy import ndimage
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.core.tile_lattice import HALO_PIXELS, MapTile
from pipeline.imagery.composite_store import CompositeSource, grid_composite, years_by_cells
from pipeline.imagery.views import CHIP_BANDS, ChipSpec
from pipeline.mapping.edge_events import fitting_events, halo_needed
from pipeline.mapping.fusion_inputs import piece_scalars
from pipeline.mapping.loss_pieces import tile_pieces, whole_events
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
    #: Position in ``pieces`` -> the region its whole event covers on the sample's grid,
    #: for pieces at the tile's edge classified as their event (``edge_events``).
    event_masks: dict[int, np.ndarray] = field(default_factory=dict)

    def region(self, k: int) -> np.ndarray:
        """The pixels piece ``k`` is classified by: its event's, or its own."""
        mask = self.event_masks.get(k)
        return mask if mask is not None else self.labels == k + 1


@dataclass
class TileInput:
    """Everything the model half needs for one tile; ``error`` set when the tile failed."""

    tile_id: str
    pieces: gpd.GeoDataFrame
    samples: list[TileSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    #: Cell composites this tile built and reused (``composite_store``).
    composites: dict[str, int] = field(default_factory=dict)


def prepare_tile(
    tile: MapTile,
    lossyear: Path,
    years: list[int],
    provinces: gpd.GeoDataFrame,
    source: CompositeSource,
    bands: tuple[str, ...],
    aux_bands: tuple[str, ...],
    aux_sources: AuxSources,
    scalars: tuple[str, ...] = (),
    event_context: int | None = None,
) -> TileInput:
    """Pieces, composite(s) and the model's channels for one tile, and each piece's aux
    ``scalars`` (names from ``fusion_inputs.scalar_names``) for a fusion model.

    ``event_context`` is the bundle's: the tile's halo grows to hold every piece's event
    window (:func:`tile_halo`)."""
    pieces = tile_pieces(lossyear, tile, years, provinces)
    out = TileInput(tile.tile_id, pieces)
    if pieces.empty:
        return out
    # Pieces own pixel centres inside the core; the default halo holds their edges.
    narrow = tile.geobox()
    local = pieces.to_crs(narrow.crs.to_wkt())
    all_labels = piece_labels(local.geometry, narrow)
    events: dict[int, BaseGeometry] = {}
    halo = tile_halo(all_labels, len(pieces), event_context)
    if event_context is not None:
        crs = narrow.crs.to_wkt()
        whole = {k: gpd.GeoSeries([g], crs="EPSG:4326").to_crs(crs).iloc[0]
                 for k, g in whole_events(lossyear, tile, pieces).items()}
        events, beyond = fitting_events(whole, narrow, event_context)
        if len(events) < len(whole):
            out.notes.append(f"{len(whole) - len(events)} edge piece(s) seen on their own: "
                             "their event is too large for the tile's halo")
        halo = max(halo, halo_beyond(beyond))
    geobox = tile.geobox(halo)
    all_labels = np.pad(all_labels, halo - HALO_PIXELS)
    event_masks = {k: piece_labels(gpd.GeoSeries([g]), geobox) > 0 for k, g in events.items()}
    band_idx = [CHIP_BANDS.index(b) for b in bands]
    for group in years_by_cells(pieces["loss_year"].tolist(), geobox, source):
        rows = np.flatnonzero(pieces["loss_year"].isin(group).to_numpy())
        # Every year of the group has the same candidate scenes: the first's composite.
        comp = grid_composite(geobox, group[0], source)
        if comp.image is None:
            out.notes.append(f"loss years {group}: {comp.problem}")
            continue
        image = comp.image
        out.notes.extend(n for n in comp.notes if n not in out.notes)
        sample = TileSample(
            image=image[band_idx], labels=group_labels(all_labels, rows), pieces=rows.tolist(),
            scene_ids=comp.scene_ids, scene_dates=comp.scene_dates,
            event_masks={j: event_masks[int(r)] for j, r in enumerate(rows)
                         if int(r) in event_masks})
        if aux_bands or scalars:
            # An edge piece's scalars are its whole event's, as its chip's are.
            regions = [events.get(int(r), local.geometry.iloc[r]) for r in rows]
            ctx = AuxContext(geobox, unary_union(regions), sample.labels > 0, image,
                             aux_sources)
            if aux_bands:
                sample.image = np.concatenate(
                    [sample.image, np.stack([ctx.band(b) for b in aux_bands])])
            sample.scalars = piece_scalars(ctx, regions, [sample.region(j) for j in
                                                          range(len(rows))], scalars)
        sample.image = sample.image.astype(np.float32)
        out.samples.append(sample)
    return out


def tile_halo(labels: np.ndarray, n_pieces: int, context: int | None) -> int:
    """Halo (px) of a tile read so that no piece's event window leaves it.

    ``labels`` are the pieces burnt on the tile with the default halo. The result is at
    least :data:`HALO_PIXELS` and keeps the input edge a multiple of 32 (332 + 2 x halo),
    so tiles whose pieces lie inside keep the default read.
    """
    if context is None or n_pieces == 0:
        return HALO_PIXELS
    boxes = [(rows.start, rows.stop, cols.start, cols.stop)
             for rows, cols in filter(None, ndimage.find_objects(labels, n_pieces))]
    return halo_beyond(max((halo_needed(b, labels.shape, context) for b in boxes), default=0))


def halo_beyond(beyond: int) -> int:
    """The halo holding ``beyond`` pixels past the default one, in steps of 16 px so that
    the input edge (332 + 2 x halo) stays a multiple of 32."""
    return HALO_PIXELS + -(-beyond // 16) * 16


def group_labels(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The pieces ``rows`` (positions, 0-based) of tile-wide ``labels`` as 1..len(rows)."""
    lookup = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lookup[rows + 1] = np.arange(1, len(rows) + 1, dtype=np.int32)
    return lookup[labels]


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
    event_context: int | None = None,
    composite_store: Path | None = None,
) -> list[TileInput]:
    """:func:`prepare_tile` for a batch; a tile that fails carries its error, the rest go on."""
    from pipeline.core.provinces import provinces
    from pipeline.ingest.catalog import read_index

    check_aux_names(aux_bands, scalars)
    source = CompositeSource(scene_store, read_index(scene_store), spec, composite_store)
    out = []
    for tile_id in tile_ids:
        built, reused = source.built, source.reused
        try:
            out.append(prepare_tile(MapTile.from_id(tile_id), lossyear, years, provinces(),
                                    source, bands, aux_bands, aux_sources, scalars,
                                    event_context))
            out[-1].composites = {"built": source.built - built,
                                  "reused": source.reused - reused}
        except Exception as exc:  # a damaged scene or aux file fails its tile, not the run
            out.append(TileInput(tile_id, gpd.GeoDataFrame(), error=f"{type(exc).__name__}: "
                                 f"{exc}"))
    return out
