"""Scene views: one stored scene warped onto a 15 m grid, sharpened, with its usable mask;
the chip settings (``ChipSpec``) and the chip record (``EventChip``).

Composites are made per lattice cell from these views (``composite_cells``) and kept in
the composite store; chips are cut from them (``event_chips``). Views are of the
radiometry of ``ChipSpec.radiometry`` (``pipeline.core.radiometry``): scenes of the other
product level are not candidates, so a chip never mixes the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio.features
from affine import Affine
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict, Field
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from pipeline.core.grid import CHIP_RESOLUTION, CHIP_SIZE, centred_geobox
from pipeline.core.radiometry import Radiometry
from pipeline.imagery.fast_warp import fast_nearest
from pipeline.imagery.pansharpen import pan_aligned, sfim
from pipeline.imagery.reproject import array_to_grid, source_roi
from pipeline.imagery.scene_windows import SceneHandle, open_scene_handle, read_window
from pipeline.ingest.landsat import QA_BITS, usable_mask

CHIP_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir", "swir1", "swir2")
_VISIBLE, _INFRARED = CHIP_BANDS[:3], CHIP_BANDS[3:]
_FILL_QA = 1 << QA_BITS["fill"]


class ChipSpec(BaseModel):
    """How chips are cut and which views they keep (the config's ``chips`` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(CHIP_SIZE, ge=16, description="chip edge in pixels")
    resolution: float = Field(CHIP_RESOLUTION, gt=0, description="chip pixel size in metres")
    years_window: int = Field(5, ge=0, description="scenes within +/- this many years of "
                              "the loss year")
    max_single_views: int = Field(4, ge=0, description="single scenes kept per event for SDA")
    max_view_cloud: float = Field(0.5, ge=0, le=1, description="a view passes the cloud "
                                  "filter at or below this cloud fraction")
    composite_pool: int = Field(5, ge=1, description="ForestNet: median of the 5 least "
                                "cloudy scenes when fewer pass the filter")
    composite_max_views: int | None = Field(
        5, ge=1, description="at most this many scenes, the least cloudy, in a composite "
        "(null: every scene passing the filter, as ForestNet): bounds a tile's cost when a "
        "years window holds 80-440 scenes")
    radiometry: Radiometry = Field(
        "surface", description="surface: Level-2 surface reflectance, visible bands sharpened "
        "by the Level-1 pan of the same acquisition (the ForestNet release's); toa: Level-1 "
        "top-of-atmosphere reflectance")

    @property
    def n_views(self) -> int:
        return 1 + self.max_single_views


@dataclass
class SceneView:
    """One scene on the chip grid: reflectance ``(band, y, x)`` and its usable-pixel mask."""

    scene_id: str
    date: str
    image: np.ndarray
    usable: np.ndarray


@dataclass
class EventChip:
    """The chip of one event; ``image`` is ``(view, band, y, x)`` with view 0 the composite."""

    geobox: GeoBox
    image: np.ndarray
    view_dates: list[str]
    view_cloud: list[float]
    scene_ids: list[str]
    loss_mask: np.ndarray
    region: BaseGeometry  # the loss region in the chip CRS
    status: str = "ok"
    notes: list[str] = field(default_factory=list)


def chip_geobox(geometry_4326: BaseGeometry, spec: ChipSpec) -> GeoBox:
    """The chip grid of an event, centred on its representative point, in its UTM zone."""
    anchor = geometry_4326.representative_point()
    return centred_geobox(anchor.x, anchor.y, spec.size, spec.resolution, on_lattice=True)


def qa_usable_on_grid(store: Path, scene_id: str, geobox: GeoBox) -> np.ndarray:
    """Usable (clear, non-fill) pixels of one stored scene on ``geobox``, from QA alone.

    The QA window is one small uint16 array and a nearest-neighbour warp: cheap enough to
    rank every candidate scene by cloud before warping any reflectance band.
    """
    scene = open_scene_handle(store, scene_id)
    roi = source_roi(scene.geobox, geobox, margin=4)
    if roi is None:
        return np.zeros(tuple(geobox.shape), dtype=bool)
    dn = read_window(scene, "qa_pixel", *roi)[0]
    qa = fast_nearest(dn, scene.geobox[roi], geobox, _FILL_QA)
    if qa is None:  # not a separable resampling: GDAL, on floats (NaN outside)
        qa = array_to_grid(dn.astype(np.float32), scene.geobox[roi], geobox,
                           Resampling.nearest)
        qa = np.where(np.isnan(qa), _FILL_QA, qa).astype(np.uint16)
    return usable_mask(qa)


def scene_on_grid(store: Path, scene_id: str, geobox: GeoBox,
                  qa_usable: np.ndarray | None = None, pan_from: str | None = None,
                  out: np.ndarray | None = None) -> SceneView:
    """Warp one stored scene onto ``geobox``: sharpened visible + IR, and its usable mask.

    The visible bands are sharpened by the scene's own pan, or by that of ``pan_from``
    (the Level-1 product of a Level-2 scene's acquisition). Only windows under the grid
    are read, as raw DN (decoded chunks are cached per process, ``scene_windows``), and
    decoded before the warp. ``qa_usable`` is the scene's ``qa_usable_on_grid`` when the
    caller already has it. The bands are warped straight into ``out`` (float32
    ``(band, y, x)``) when given: ``build_cell`` fills one array with its pool.
    """
    scene = open_scene_handle(store, scene_id)
    bands = np.empty((len(CHIP_BANDS), *geobox.shape), np.float32) if out is None else out
    pan = scene if scene.pan_box is not None else (
        open_scene_handle(store, pan_from) if pan_from else None)
    visible, infrared = bands[: len(_VISIBLE)], bands[len(_VISIBLE):]
    if pan is not None and pan_aligned(scene.geobox, pan.pan_box):
        _sharpened_window(scene, pan, geobox, visible)
    else:  # no pan to lend detail: the 30 m bands resampled to 15 m
        _warp_window(scene, "multispectral", scene.geobox, geobox, Resampling.bilinear,
                     tuple(scene.bands.index(b) for b in _VISIBLE), visible)
    _warp_window(scene, "multispectral", scene.geobox, geobox, Resampling.bilinear,
                 tuple(scene.bands.index(b) for b in _INFRARED), infrared)
    if qa_usable is None:
        qa_usable = qa_usable_on_grid(store, scene_id, geobox)
    # Any NaN band makes the sum NaN: one pass over the bands instead of an all() reduce.
    usable = qa_usable & np.isfinite(bands.sum(axis=0))
    return SceneView(scene_id, scene.acquired, bands, usable)


def _sharpened_window(scene: SceneHandle, pan: SceneHandle, target: GeoBox,
                      out: np.ndarray) -> None:
    """The visible bands of ``scene`` sharpened by ``pan``'s B8 on the source grids
    (``pansharpen.sfim``), then warped onto ``target``, into ``out``."""
    roi = source_roi(pan.pan_box, target, margin=4)
    if roi is None:
        out.fill(np.nan)
        return
    rows, cols = roi
    # Whole 30 m cells: each 2 x 2 block of pan pixels is one multispectral pixel.
    height, width = scene.geobox.shape
    r0, c0 = rows.start // 2, cols.start // 2
    r1, c1 = min(height, -(-rows.stop // 2)), min(width, -(-cols.stop // 2))
    dn = read_window(scene, "multispectral", slice(r0, r1), slice(c0, c1),
                     bands=tuple(scene.bands.index(b) for b in _VISIBLE))
    ms = scene.decode("multispectral", dn)
    h, w = ms.shape[1:]
    pan_h, pan_w = pan.pan_box.shape
    pan_dn = read_window(pan, "pan", slice(2 * r0, min(pan_h, 2 * r0 + 2 * h)),
                         slice(2 * c0, min(pan_w, 2 * c0 + 2 * w)))
    fine = np.full((2 * h, 2 * w), np.nan, dtype=np.float32)  # a pan one row short: NaN
    fine[:pan_dn.shape[1], :pan_dn.shape[2]] = pan.decode("pan", pan_dn)[0]
    box = GeoBox((2 * h, 2 * w), pan.pan_box.affine * Affine.translation(2 * c0, 2 * r0),
                 pan.pan_box.crs)
    array_to_grid(sfim(ms, fine), box, target, Resampling.bilinear, out)


def _warp_window(
    scene: SceneHandle, name: str, box: GeoBox, target: GeoBox, resampling: Resampling,
    bands: tuple[int, ...], out: np.ndarray,
) -> None:
    """Bands ``bands`` of one stored array warped onto ``target`` into ``out (band, y,
    x)``, float32; NaN outside the scene."""
    roi = source_roi(box, target, margin=4)
    if roi is None:
        out.fill(np.nan)
        return
    dn = read_window(scene, name, *roi, bands=bands)
    array_to_grid(scene.decode(name, dn), box[roi], target, resampling, out)


def rasterize_region(region: BaseGeometry, geobox: GeoBox) -> np.ndarray:
    """The loss region burnt onto the grid (pixel centres inside), uint8."""
    if region.is_empty:
        return np.zeros(tuple(geobox.shape), dtype=np.uint8)
    return rasterio.features.rasterize(
        [(region, 1)], out_shape=tuple(geobox.shape), transform=geobox.affine, fill=0,
        dtype="uint8",
    )


def years_span(first: int, last: int, window: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Acquisition dates within ``window`` years of every loss year in ``[first, last]``."""
    return (pd.Timestamp(year=last - window, month=1, day=1),
            pd.Timestamp(year=first + window, month=12, day=31))
