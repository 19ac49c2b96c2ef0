"""Landsat 8/9 Collection 2 facts: band table, MTL (ODL) parsing, radiometric scaling, QA bits.

Pure functions over metadata and arrays; no I/O beyond reading the MTL text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from pipeline.core.errors import ForestNetError

#: OLI reflective bands stored in ``multispectral``, by band number (Collection 2 naming).
MULTISPECTRAL_BANDS: dict[int, str] = {
    1: "coastal",
    2: "blue",
    3: "green",
    4: "red",
    5: "nir",
    6: "swir1",
    7: "swir2",
}
PAN_BAND = 8

#: QA_PIXEL bit positions (Collection 2, Level-1 and Level-2 alike).
QA_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}

#: Pixels unusable for reflectance: anything cloudy, shadowed or fill.
CLOUDY_FLAGS = ("fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow")

#: A Collection 2 product id, e.g. ``LC08_L1TP_118062_20170612_20200922_02_T1``.
PRODUCT_ID_RE = re.compile(
    r"^L(?P<sensor>[COTEM])(?P<mission>\d{2})_(?P<level>L1TP|L1GT|L1GS|L2SP|L2SR)_"
    r"(?P<path>\d{3})(?P<row>\d{3})_(?P<acquired>\d{8})_(?P<processed>\d{8})_"
    r"(?P<collection>\d{2})_(?P<category>T1|T2|RT)$"
)


class MTLError(ForestNetError, ValueError):
    """An MTL file that cannot describe its scene."""


class SceneInputError(ForestNetError, ValueError):
    """A product that cannot be ingested; the message names the file and the reason.

    ``scene_id`` is the product id when the metadata was readable, so failures are
    recorded under the scene's own name.
    """

    def __init__(self, message: str, scene_id: str | None = None) -> None:
        super().__init__(message)
        self.scene_id = scene_id


@dataclass(frozen=True)
class SceneMetadata:
    """What the pipeline needs from a Collection 2 MTL."""

    product_id: str
    processing_level: str  # e.g. "L1TP", "L2SP"
    spacecraft: str
    wrs_path: int
    wrs_row: int
    acquired: datetime
    sun_elevation: float
    sun_azimuth: float
    cloud_cover: float  # percent
    utm_zone: int
    #: band name -> file name, for multispectral bands, "pan" and "qa_pixel" where present.
    band_files: dict[str, str] = field(default_factory=dict)
    #: band name -> (multiplicative, additive) reflectance rescaling, before sun correction.
    rescaling: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: UL / LR pixel-centre projection coordinates of the reflective grid.
    corner_ul_xy: tuple[float, float] | None = None
    corner_lr_xy: tuple[float, float] | None = None
    reflective_shape: tuple[int, int] | None = None  # (lines, samples)
    reflective_cell: float = 30.0

    @property
    def level(self) -> str:
        """``"L1"`` (TOA reflectance) or ``"L2"`` (surface reflectance)."""
        return self.processing_level[:2]


def reflectance_scaling(meta: SceneMetadata, band: str) -> tuple[float, float]:
    """CF ``(scale_factor, add_offset)`` that decode a band's DN to reflectance.

    Level-1 products get the sun-elevation correction folded in, so decoded values are
    TOA reflectance = (M * DN + A) / sin(sun elevation). Level-2 values are surface
    reflectance = M * DN + A (0.0000275, -0.2).
    """
    mult, add = meta.rescaling[band]
    if meta.level == "L1":
        sin_sun = math.sin(math.radians(meta.sun_elevation))
        if sin_sun <= 0:
            raise MTLError(f"{meta.product_id}: sun elevation {meta.sun_elevation} is not positive")
        return mult / sin_sun, add / sin_sun
    return mult, add


def qa_flag(qa: np.ndarray, name: str) -> np.ndarray:
    """Boolean mask of one named QA_PIXEL bit."""
    return (np.asarray(qa, dtype=np.uint16) >> QA_BITS[name]) & 1 == 1



def usable_mask(qa: np.ndarray) -> np.ndarray:
    """Pixels with usable surface: not fill, cloud, dilated cloud, cirrus or shadow."""
    qa = np.asarray(qa, dtype=np.uint16)
    bad = np.zeros(qa.shape, dtype=np.uint16)
    for name in CLOUDY_FLAGS:
        bad |= np.uint16(1 << QA_BITS[name])
    return (qa & bad) == 0


def clear_fraction(qa: np.ndarray, within: np.ndarray | None = None) -> float:
    """Fraction of (optionally masked) non-fill pixels that are usable; 0 when none."""
    qa = np.asarray(qa, dtype=np.uint16)
    valid = ~qa_flag(qa, "fill")
    if within is not None:
        valid &= within
    n = int(valid.sum())
    return float((usable_mask(qa) & valid).sum() / n) if n else 0.0
