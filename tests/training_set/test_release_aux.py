"""The release's auxiliary files in their published forms (``release_aux``): osm.json's
Nominatim places as geodesic km from the event, peat.json's true/false, ncep.npy's
temperature; values that cannot be read are counted per file name, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyproj import Geod

from pipeline.training_set.release_aux import (
    MAX_DISTANCE_KM,
    NCEP_OTHER,
    NCEP_VALUES,
    json_scalars,
    read_aux,
    unknown_aux_counts,
    unreadable_aux_counts,
)
from pipeline.training_set.release_reader import ReleaseReader
from pipeline.training_set.release_writer import ncep_values, nominatim_place

ANCHOR = (-1.0, 113.0)  # (lat, lon) of the event: the CSV row, pixel (166, 166)
GEOD = Geod(ellps="WGS84")


def place(lat: object, lon: object) -> dict:
    """A Nominatim reverse-geocoding result as the release holds it (lat/lon strings)."""
    return {"place_id": 1234, "osm_type": "way", "class": "highway", "type": "residential",
            "lat": lat, "lon": lon, "display_name": "Jalan, Kalimantan Tengah, Indonesia",
            "address": {"road": "Jalan", "country": "Indonesia", "country_code": "id"}}


def read(tmp_path: Path, files: dict[str, object]) -> tuple[dict[str, float], list[str]]:
    """``read_aux`` of one example whose ``auxiliary/`` holds ``files`` (JSON-able values
    as JSON, arrays as .npy, bytes as they are): its scalars and notes."""
    root = tmp_path / "ForestNetDataset"
    aux = root / "examples" / "x" / "auxiliary"
    aux.mkdir(parents=True)
    (root / "train.csv").write_text("label,merged_label,latitude,longitude,year,example_path\n")
    for name, content in files.items():
        if isinstance(content, np.ndarray):
            np.save(aux / name, content)
        elif isinstance(content, bytes):
            (aux / name).write_bytes(content)
        else:
            (aux / name).write_text(json.dumps(content))
    notes: list[str] = []
    with ReleaseReader(root) as reader:
        _, scalars = read_aux(reader, "examples/x", 4, ANCHOR, notes)
    return scalars, notes


def test_a_city_a_tenth_of_a_degree_north_is_11_km_and_a_street_at_the_event_is_0() -> None:
    values, problems = json_scalars({"closest_city": place("-0.9", "113.0"),
                                     "closest_street": place("-1.0", "113.0")}, ANCHOR)
    assert problems == []
    assert values["city_dist_km"] == pytest.approx(11.06, abs=0.01)  # 0.1 deg of meridian
    assert values["street_dist_km"] == 0.0


def test_nested_places_give_pyprojs_geodesic_distances(tmp_path: Path) -> None:
    city, street = ("-0.7812345", "113.2954321"), ("-1.0123456", "112.9876543")
    scalars, notes = read(tmp_path, {"osm.json": {"closest_city": place(*city),
                                                  "closest_street": place(*street)}})
    for (lat, lon), feature in ((city, "city_dist_km"), (street, "street_dist_km")):
        _, _, metres = GEOD.inv(ANCHOR[1], ANCHOR[0], float(lon), float(lat))
        assert np.isfinite(scalars[feature])
        assert scalars[feature] == pytest.approx(metres / 1000.0, abs=1e-9)
    assert notes == []
    numbers, _ = json_scalars({"closest_city": place(-0.9, 113)}, ANCHOR)  # numbers pass too
    assert numbers["city_dist_km"] == pytest.approx(11.06, abs=0.01)


def test_distances_are_capped_like_built_chips() -> None:
    far, _ = json_scalars({"closest_city": place("0.0", "113.0")}, ANCHOR)  # ~110 km
    assert far["city_dist_km"] == MAX_DISTANCE_KM


def test_flat_numbers_are_still_accepted(tmp_path: Path) -> None:
    scalars, notes = read(tmp_path, {"osm.json": {"street_dist": 1.2, "city_dist": 80.0}})
    assert scalars == {"street_dist_km": 1.2, "city_dist_km": MAX_DISTANCE_KM}
    assert notes == []


@pytest.mark.parametrize(("peat", "fraction"), [(True, 1.0), (False, 0.0), (0.25, 0.25)])
def test_peat_true_false_is_one_or_zero(peat: object, fraction: float) -> None:
    values, problems = json_scalars({"peat": peat}, ANCHOR)
    assert problems == [] and values == {"peat_fraction": fraction}
    assert type(values["peat_fraction"]) is float


def test_unreadable_values_are_counted_per_file_and_the_rest_imported(tmp_path: Path) -> None:
    notes: list[str] = []
    # A place whose lat is not a number: that distance alone is NaN, the street comes in.
    scalars, n = read(tmp_path / "a", {"osm.json": {"closest_city": place("n/a", "113.0"),
                                                    "closest_street": place("-1.0", "113.0")},
                                       "peat.json": {"peat": True}})
    notes += n
    assert "city_dist_km" not in scalars and scalars["street_dist_km"] == 0.0
    assert scalars["peat_fraction"] == 1.0
    assert "closest_city: lat 'n/a' is not a number" in n[0]
    # Nominatim's answer when it finds nothing: no lat/lon.
    scalars, n = read(tmp_path / "b", {"osm.json": {"closest_city": {"error": "Unable to "
                                                                               "geocode"}},
                                       "peat.json": {"peat": "maybe"}})
    notes += n
    assert scalars == {}
    # A JSON that does not parse, beside a readable peat.json.
    scalars, n = read(tmp_path / "c", {"osm.json": b'{"closest_city": {"lat": "-0.9",',
                                       "peat.json": {"peat": False}})
    notes += n
    assert scalars == {"peat_fraction": 0.0}
    assert unreadable_aux_counts(notes) == {"osm.json": 3, "peat.json": 1}
    assert unknown_aux_counts(notes) == {}


def test_ncep_npy_gives_the_temperature_and_counts_the_other_values(tmp_path: Path) -> None:
    scalars, notes = read(tmp_path, {"ncep.npy": ncep_values(27.25)})
    assert scalars["temperature_c"] == pytest.approx(27.25)
    assert unknown_aux_counts(notes) == {f"ncep.npy ({NCEP_OTHER})": 1}
    assert len(NCEP_VALUES) == 84 and NCEP_VALUES[66:69] == ("tavg", "tmax", "tmin")


@pytest.mark.parametrize("values", [
    np.full(84, 500.0),  # not kelvin * 100 where tavg/tmax/tmin belong: another layout
    np.full(28, 30000.0),  # not the release's 84 values
    np.array([30000.0, 29000.0, 31000.0] * 28),  # tavg at 66 above tmax at 67
])
def test_an_ncep_npy_of_another_layout_is_refused_not_misread(tmp_path: Path,
                                                              values: np.ndarray) -> None:
    scalars, notes = read(tmp_path, {"ncep.npy": values})
    assert "temperature_c" not in scalars
    assert unreadable_aux_counts(notes) == {"ncep.npy": 1}


def test_tavg_npy_in_kelvin_x100_and_bad_npys_are_counted(tmp_path: Path) -> None:
    scalars, notes = read(tmp_path / "a", {"tavg.npy": np.full((2, 2), 29915.0)})
    assert scalars["temperature_c"] == pytest.approx(26.0) and notes == []
    _, notes = read(tmp_path / "b", {"tavg.npy": np.full((2, 2), 26.0),  # Celsius: refused
                                     "srtm.npy": b"not an npy"})
    assert unreadable_aux_counts(notes) == {"srtm.npy": 1, "tavg.npy": 1}


@pytest.mark.parametrize("anchor", [ANCHOR, (5.2, 95.3), (-10.9, 140.7)])
def test_written_places_give_the_distance_back(anchor: tuple[float, float]) -> None:
    for km in (0.0, 0.003, 1.5, 12.345, 49.99):
        for kind, feature in (("street", "street_dist_km"), ("city", "city_dist_km")):
            written = json.loads(json.dumps({f"closest_{kind}": nominatim_place(anchor, km,
                                                                                 kind)}))
            assert isinstance(written[f"closest_{kind}"]["lat"], str)
            values, problems = json_scalars(written, anchor)
            assert problems == [] and values[feature] == pytest.approx(km, abs=1e-3)
