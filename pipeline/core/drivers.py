"""The ForestNet driver classes: fine labels, the 4-class merge, codes and map colours."""

from __future__ import annotations

import numpy as np

#: The four merged driver classes, in model output order. The code is the index + 1
#: (0 is reserved for "no data" in driver rasters).
DRIVER_CLASSES: tuple[str, ...] = (
    "Plantation",
    "Smallholder agriculture",
    "Grassland shrubland",
    "Other",
)

#: Column-safe names used for per-class probability fields (``p_<key>``).
DRIVER_KEYS: tuple[str, ...] = (
    "plantation",
    "smallholder_agriculture",
    "grassland_shrubland",
    "other",
)

#: Fine ForestNet labels -> merged driver class (Irvin et al. 2020, Table 1).
FINE_TO_MERGED: dict[str, str] = {
    "Oil palm plantation": "Plantation",
    "Timber plantation": "Plantation",
    "Other large-scale plantations": "Plantation",
    "Small-scale agriculture": "Smallholder agriculture",
    "Small-scale mixed plantation": "Smallholder agriculture",
    "Small-scale oil palm plantation": "Smallholder agriculture",
    "Grassland shrubland": "Grassland shrubland",
    "Secondary forest": "Other",
    "Other": "Other",
    "Mining": "Other",
    "Logging": "Other",
    "Fish pond": "Other",
}

#: Colours used for the QGIS style and driver rasters (hex RGB).
DRIVER_COLOURS: dict[str, str] = {
    "Plantation": "#e6550d",
    "Smallholder agriculture": "#fdae6b",
    "Grassland shrubland": "#74c476",
    "Other": "#9e9ac8",
}


def driver_code(name: str) -> int:
    """Return the 1-based code of a merged driver class name."""
    try:
        return DRIVER_CLASSES.index(name) + 1
    except ValueError:
        raise ValueError(
            f"unknown driver class {name!r}; expected one of {', '.join(DRIVER_CLASSES)}"
        ) from None


def has_driver(codes: object) -> np.ndarray:
    """Which driver codes name a driver (1..4): not 0, the "no imagery" of events the
    model could not see, nor a missing value."""
    codes = np.asarray(codes)
    return (codes >= 1) & (codes <= len(DRIVER_CLASSES))


def merge_label(fine_label: str) -> str:
    """Map a fine ForestNet label (or an already merged one) to its merged class."""
    if fine_label in FINE_TO_MERGED:
        return FINE_TO_MERGED[fine_label]
    if fine_label in DRIVER_CLASSES:
        return fine_label
    raise ValueError(
        f"unknown ForestNet label {fine_label!r}; expected one of "
        f"{', '.join(sorted(FINE_TO_MERGED))}"
    )
