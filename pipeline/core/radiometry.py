"""The radiometry contract: what numbers chips hold, and how stores and bundles say so.

Chips hold reflectance on a 0-1 scale (float32) for red, green, blue, nir, swir1 and
swir2, the visible bands pan-sharpened to 15 m. Their radiometry is one of:

- ``surface`` (the default, and the ForestNet release's): Level-2 surface reflectance;
  the visible bands are sharpened by the B8 pan of the Level-1 product of the same
  acquisition when both are ingested, keeping each 30 m cell's surface reflectance
  (``pipeline.imagery.pansharpen``), else resampled to 15 m unsharpened;
- ``toa``: Level-1 top-of-atmosphere reflectance, sharpened by its own pan.

A composite never mixes the two. ``chips.zarr`` records its radiometry and scaling in its
attributes and a model bundle the radiometry of the chips it was trained on, so a model
never meets numbers of the other kind: training refuses to resume on other chips, and
mapping refuses a bundle of another radiometry than the configured chips. The release's
own files hold display values (``pipeline.training_set.release_import``): reflectance over
``[0, DISPLAY_MAX]`` as 0-255, so nothing brighter exists in it; a model sees every band
clipped to that range (``forestnet_model.model_inputs.normalise``), whether it trains on
the release or on chips the pipeline built, and maps what it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pipeline.core.errors import ForestNetError

Radiometry = Literal["surface", "toa"]
#: The product level each radiometry is made of (a prefix of the processing level).
RADIOMETRY_LEVELS = {"surface": "L2", "toa": "L1"}
#: What a chip store's ``reflectance_scaling`` attribute says.
CHIP_SCALING = "reflectance 0-1, float32 (int16 on disk with scale_factor 1e-4)"
#: The release's display scaling (Descartes Labs ``display_range`` of Landsat 8): the
#: reflectance shown as 0-255 per band; visible 0-4000 and infrared 0-10000 of 10000.
DISPLAY_MAX = {"red": 0.4, "green": 0.4, "blue": 0.4, "nir": 1.0, "swir1": 1.0, "swir2": 1.0}
LABELS = {"surface": "surface reflectance (Level-2)", "toa": "top-of-atmosphere (Level-1)"}


class RadiometryMismatch(ForestNetError, ValueError):
    """Two parts of a chain hold numbers of different radiometries; the message names both."""


def store_radiometry(attrs: Mapping) -> str:
    """A chip store's radiometry. Stores from before the contract recorded none: those
    built from scenes were Level-1 TOA; imported releases were surface reflectance."""
    if "radiometry" in attrs:
        return str(attrs["radiometry"])
    return "surface" if attrs.get("source") == "forestnet_release" else "toa"


def require_same(have: str, what_have: str, want: str, what_want: str) -> None:
    """Refuse, in one line naming both, when two radiometries differ."""
    if have != want:
        raise RadiometryMismatch(f"{what_have} is {LABELS.get(have, have)} but "
                                 f"{what_want} is {LABELS.get(want, want)}; they must match")
