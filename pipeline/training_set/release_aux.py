"""The published ForestNet release's ``auxiliary/`` files -> the chip store's aux bands and
scalars, read as the release publishes them.

========================  ====================================  ============================
file (published form)     holds                                 stored as
========================  ====================================  ============================
``srtm.npy`` (channels    metres, 1/100 degree, 1/100 degree    elevation (m), aspect and
altitude, aspect, slope)                                        slope (degrees)
or ``altitude.npy``,
``slope.npy``,
``aspect.npy``
``treecover*.npy``        percent                               treecover2000 (percent)
``ncep.npy``              84 NCEP CFSR values                   temperature_c from ``tavg``;
                          (:data:`NCEP_VALUES`), temperatures   the other 83 are counted as
                          in kelvin * 100                       not understood
``tavg.npy`` (or          kelvin * 100                          temperature_c (mean)
``ncep/tavg.npy``)
``osm.json``              ``{"closest_city": {...},             city_dist_km /
                          "closest_street": {...}}``,           street_dist_km: geodesic km
                          Nominatim reverse-geocoding results   from the CSV lat/lon (pixel
                          with ``"lat"``/``"lon"`` strings; or  (166, 166)), capped at
                          flat ``{"street_dist": km,            :data:`MAX_DISTANCE_KM`
                          "city_dist": km}``
``peat.json``             ``{"peat": true|false}`` (binary in   peat_fraction 1.0 / 0.0
                          the release); a fraction 0-1 passes
========================  ====================================  ============================

The units are those of ForestNet's own feature-scaling constants (slope up to 8421, aspect
+-18000, NCEP temperature 27286-31693, OSM distances in km). ``ncep.npy``'s order is that
of ForestNet's NCEP features: its 30 bands in order, each band three values (``_min``,
``_max``, ``_avg``) except the temperatures ``tavg``, ``tmax``, ``tmin`` (one each), 84
in all. Its temperatures are checked (kelvin * 100, ``tmin <= tavg <= tmax``) before use,
so a file of another layout is reported, never read as a wrong temperature.

Nothing is dropped silently: a file the importer does not know is noted as
:data:`UNKNOWN_AUX` and a value it cannot read (a place without lat/lon, a JSON that does
not parse, a bad ``.npy``) as :data:`UNREADABLE_AUX`; :func:`unknown_aux_counts` and
:func:`unreadable_aux_counts` count both per file name for the import's report.
"""

from __future__ import annotations

import io
import json
import math
import posixpath

import numpy as np
from pyproj import Geod

from pipeline.core.errors import ForestNetError
from pipeline.training_set.auxiliary import MAX_DISTANCE_KM  # capped as the built chips
from pipeline.training_set.release_reader import ReleaseReader

#: The note that marks an auxiliary file the importer does not understand.
UNKNOWN_AUX = "auxiliary file not understood, not imported"
#: The note that marks an auxiliary value the importer cannot read (reason follows).
UNREADABLE_AUX = "auxiliary value unreadable, not imported"
#: Release aux rasters (file stem) -> (store aux band, scale to the store's units).
AUX_NPY = {"altitude": ("elevation", 1.0), "elevation": ("elevation", 1.0),
           "slope": ("slope", 0.01), "aspect": ("aspect", 0.01),
           "treecover2000": ("treecover2000", 1.0), "treecover": ("treecover2000", 1.0)}
#: The channels of the release's one-file terrain layout, ``srtm.npy``, in order: the
#: Stanford-lineage code that exported it lists its SRTM bands as altitude, aspect, slope
#: (aspect signed, -17954 to 18000, slope 0 to 8421, in 1/100 degree).
SRTM_CHANNELS = ("altitude", "aspect", "slope")
#: Release JSON keys (containing this word) -> store aux feature.
AUX_JSON = {"street": "street_dist_km", "city": "city_dist_km", "peat": "peat_fraction"}

#: ForestNet's NCEP bands, in the order of its features (and of ``ncep.npy``).
NCEP_BANDS = (
    "albedo", "clear-sky_downward_longwave_flux", "clear-sky_downward_solar_flux",
    "clear-sky_upward_longwave_flux", "clear-sky_upward_solar_flux",
    "direct_evaporation_bare_soil", "downward_longwave_radiation_flux",
    "downward_shortwave_radiation_flux", "ground_heat_net_flux", "latent_heat_net_flux",
    "max_specific_humidity", "min_specific_humidity", "potential_evaporation_rate", "prec",
    "sensible_heat_net_flux", "soilmoist1", "soilmoist2", "soilmoist3", "soilmoist4",
    "specific_humidity", "sublimation", "surface_pressure", "tavg", "tmax", "tmin",
    "u_wind_10m", "upward_longwave_radiation_flux", "upward_shortwave_radiation_flux",
    "v_wind_10m", "water_runoff")
NCEP_TEMPERATURES = ("tavg", "tmax", "tmin")
#: The names of ``ncep.npy``'s 84 values, in order.
NCEP_VALUES: tuple[str, ...] = tuple(
    name for band in NCEP_BANDS
    for name in ((band,) if band in NCEP_TEMPERATURES
                 else (f"{band}_min", f"{band}_max", f"{band}_avg")))
#: What ``ncep.npy`` holds beyond the temperature the store keeps (counted as not understood).
NCEP_OTHER = f"{len(NCEP_VALUES) - 1} NCEP values other than tavg"
#: Plausible kelvin * 100 (-50 to 60 C): anything else is another unit or layout.
KELVIN100_RANGE = (22315.0, 33315.0)

_GEOD = Geod(ellps="WGS84")


class AuxFileError(ForestNetError, ValueError):
    """An auxiliary file or value cannot be read; the message is the reason."""


def read_aux(reader: ReleaseReader, folder: str, size: int, anchor: tuple[float, float],
             notes: list[str]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The aux bands (``size`` x ``size``, store units) and scalars of one example.

    ``anchor`` is the event's (lat, lon) from the CSV: the point the release's OSM
    distances are measured from. Files and values not imported are added to ``notes``.
    """
    bands: dict[str, np.ndarray] = {}
    scalars: dict[str, float] = {}
    base = f"{folder}/auxiliary"
    for rel in reader.files_under(base):
        stem, ext = posixpath.splitext(posixpath.basename(rel))
        stem, path = stem.lower(), f"auxiliary/{rel}"
        try:
            if ext == ".npy" and stem == "srtm":
                terrain = _channels(load_npy(reader, f"{base}/{rel}"), len(SRTM_CHANNELS), size)
                for name, channel in zip(SRTM_CHANNELS, terrain, strict=True):
                    _put_band(bands, name, channel, path, notes)
            elif ext == ".npy" and stem in AUX_NPY:
                arr = np.squeeze(load_npy(reader, f"{base}/{rel}"))
                if arr.shape != (size, size):
                    raise AuxFileError(f"shape {arr.shape}, expected {size} x {size}")
                _put_band(bands, stem, arr, path, notes)
            elif ext == ".npy" and stem == "ncep":
                scalars["temperature_c"] = ncep_temperature_c(load_npy(reader, f"{base}/{rel}"))
                notes.append(f"{path} ({NCEP_OTHER}): {UNKNOWN_AUX}")
            elif ext == ".npy" and stem == "tavg":
                scalars["temperature_c"] = kelvin100_to_c(
                    _finite_mean(load_npy(reader, f"{base}/{rel}")))
            elif ext == ".json":
                values, problems = json_scalars(json.loads(reader.read(f"{base}/{rel}")), anchor)
                scalars.update(values)
                if problems:
                    notes.append(f"{path}: {UNREADABLE_AUX} ({'; '.join(problems)})")
                elif not values:
                    notes.append(f"{path}: {UNKNOWN_AUX}")
            else:
                notes.append(f"{path}: {UNKNOWN_AUX}")
        except (ValueError, TypeError) as exc:  # AuxFileError, JSONDecodeError, bad bytes
            notes.append(f"{path}: {UNREADABLE_AUX} ({exc})")
    return bands, scalars


def load_npy(reader: ReleaseReader, rel: str) -> np.ndarray:
    """A plain numeric ``.npy`` of the release (never a pickle)."""
    try:  # allow_pickle=False: an object array would be a pickle in disguise
        return np.load(io.BytesIO(reader.read(rel)), allow_pickle=False)
    except ValueError as exc:
        raise AuxFileError(f"{reader.describe(rel)}: not a plain numeric .npy ({exc})") from None


def _channels(arr: np.ndarray, n: int, size: int) -> np.ndarray:
    """``(n, size, size)`` from a channels-last or channels-first array."""
    if arr.shape == (size, size, n):
        return np.moveaxis(arr, -1, 0)
    if arr.shape == (n, size, size):
        return arr
    raise AuxFileError(f"shape {arr.shape}, expected {size} x {size} x {n} "
                       f"({', '.join(SRTM_CHANNELS)})")


def _put_band(bands: dict[str, np.ndarray], stem: str, values: np.ndarray, rel: str,
              notes: list[str]) -> None:
    """One release aux raster into the store's band and units (:data:`AUX_NPY`)."""
    band, scale = AUX_NPY[stem]
    arr = values.astype(np.float32) * scale
    if (n_inf := int(np.isinf(arr).sum())):  # no data, never a huge value
        notes.append(f"{rel}: {n_inf} infinite values read as no data")
        arr = np.where(np.isinf(arr), np.float32(np.nan), arr)
    bands[band] = arr % 360.0 if band == "aspect" else arr


def _finite_mean(values: np.ndarray) -> float:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        raise AuxFileError("no finite values")
    return float(finite.mean())


def kelvin100_to_c(value: float) -> float:
    """A temperature in the release's kelvin * 100 as degrees Celsius; a value outside
    :data:`KELVIN100_RANGE` is another unit, refused."""
    low, high = KELVIN100_RANGE
    if not low <= value <= high:
        raise AuxFileError(f"temperature {value:g} is not kelvin * 100 ({low:g}-{high:g})")
    return value / 100.0 - 273.15


def ncep_temperature_c(values: np.ndarray) -> float:
    """``temperature_c`` from the release's ``ncep.npy`` (its ``tavg`` value).

    The layout is checked, not assumed: 84 values whose ``tmin``, ``tavg`` and ``tmax`` are
    kelvin * 100 in that order of size; anything else raises naming what was found.
    """
    flat = np.asarray(values, np.float64).ravel()
    if flat.size != len(NCEP_VALUES):
        raise AuxFileError(f"{flat.size} values, expected the release's {len(NCEP_VALUES)} "
                           "NCEP values")
    at = {name: NCEP_VALUES.index(name) for name in NCEP_TEMPERATURES}
    tavg, tmax, tmin = (float(flat[at[name]]) for name in NCEP_TEMPERATURES)
    low, high = KELVIN100_RANGE
    if not low <= tmin <= tavg <= tmax <= high:
        raise AuxFileError(
            f"values {at['tmin']}/{at['tavg']}/{at['tmax']} ({tmin:g}/{tavg:g}/{tmax:g}) are "
            f"not tmin <= tavg <= tmax in kelvin * 100 ({low:g}-{high:g}): not the layout "
            "the importer knows")
    return kelvin100_to_c(tavg)


def geodesic_km(anchor: tuple[float, float], lat: float, lon: float) -> float:
    """WGS84 geodesic distance in km from ``anchor`` (lat, lon) to (``lat``, ``lon``): the
    distance the release's OSM features were computed as."""
    _, _, metres = _GEOD.inv(anchor[1], anchor[0], lon, lat)
    return float(metres) / 1000.0


def json_scalars(data: object, anchor: tuple[float, float]) -> tuple[dict[str, float],
                                                                     list[str]]:
    """The store features of one release JSON (:data:`AUX_JSON`), and the values that could
    not be read ("<key>: <reason>")."""
    if not isinstance(data, dict):
        raise AuxFileError("JSON is not an object of named values")
    values: dict[str, float] = {}
    problems: list[str] = []
    for key, value in data.items():
        feature = next((f for word, f in AUX_JSON.items() if word in str(key).lower()), None)
        if feature is None:
            continue
        try:
            values[feature] = _json_value(feature, value, anchor)
        except AuxFileError as exc:
            problems.append(f"{key}: {exc}")
    return values, problems


def _json_value(feature: str, value: object, anchor: tuple[float, float]) -> float:
    if feature == "peat_fraction":
        if isinstance(value, bool):  # the release's {"peat": true|false}
            return float(value)
        if isinstance(value, int | float) and 0.0 <= value <= 1.0:
            return float(value)
        raise AuxFileError(f"{value!r} is neither true/false nor a fraction 0-1")
    if isinstance(value, dict):  # a Nominatim reverse-geocoding result: the closest place
        km = geodesic_km(anchor, _coordinate(value, "lat", 90.0), _coordinate(value, "lon", 180.0))
    elif (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and value >= 0):
        km = float(value)
    else:
        raise AuxFileError(f"{value!r} is neither a distance in km nor a place with lat/lon")
    return min(km, MAX_DISTANCE_KM)


def _coordinate(place: dict, key: str, limit: float) -> float:
    """A place's ``lat`` or ``lon``: Nominatim writes them as strings, numbers also pass."""
    raw = place.get(key)
    if raw is None:
        raise AuxFileError(f"no {key}")
    try:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError
        value = float(raw)
    except ValueError:
        raise AuxFileError(f"{key} {raw!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise AuxFileError(f"{key} {raw!r} is outside +-{limit:g}")
    return value


def _counts(notes: list[str], what: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for note in notes:
        path, _, kind = note.partition(": ")
        if kind.startswith(what):
            name = posixpath.basename(path)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def unknown_aux_counts(notes: list[str]) -> dict[str, int]:
    """Auxiliary file names the import did not understand, with how many examples had each."""
    return _counts(notes, UNKNOWN_AUX)


def unreadable_aux_counts(notes: list[str]) -> dict[str, int]:
    """Auxiliary file names with a value the import could not read, with how many examples
    had one (e.g. ``{"osm.json": 3}``)."""
    return _counts(notes, UNREADABLE_AUX)
