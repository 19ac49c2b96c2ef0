"""Sample-world chips -> the release's layout (``release_writer``) -> ``import-forestnet``'s
functions -> chips equal to the originals within the release's 8-bit display step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.imagery.views import ChipSpec
from pipeline.training_set.chip_store import open_chips
from pipeline.training_set.release_aux import NCEP_VALUES
from pipeline.training_set.release_import import INFRARED_SCALE, VISIBLE_SCALE
from pipeline.training_set.release_writer import write_release
from tests.release_chain import import_in_process
from tests.world_chips import world_chip_store

SPEC = ChipSpec(max_single_views=2)
AUX_BANDS = ("elevation", "slope", "aspect", "treecover2000")
FEATURES = ("street_dist_km", "city_dist_km", "peat_fraction", "temperature_c")


@pytest.fixture(scope="module")
def round_trip(tiny_world: Path, tiny_scene_store: Path, tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("round-trip")
    original = open_chips(world_chip_store(tiny_world.parent, folder, AUX_BANDS, FEATURES, SPEC,
                                           scene_store=tiny_scene_store))
    release = write_release(original, folder / "release")
    imported = open_chips(import_in_process(release, folder / "imported.zarr", SPEC, AUX_BANDS,
                                            FEATURES, batch_size=8))
    assert imported.attrs["excluded_examples"] == {}
    assert imported.attrs["radiometry"] == "surface"
    return original, imported, release


def pairs(original, imported) -> list[tuple[int, int]]:
    """(original row, imported row) of each usable event, matched by its anchor."""
    usable = np.flatnonzero(original["chip_ok"].values == 1)
    rows = []
    for i in usable:
        j = np.flatnonzero(np.isclose(imported["lat"].values, original["lat"].values[i],
                                      atol=1e-9) & np.isclose(imported["lon"].values,
                                                              original["lon"].values[i],
                                                              atol=1e-9))
        assert len(j) == 1
        rows.append((int(i), int(j[0])))
    return rows


def test_every_usable_event_comes_back_with_its_label_split_and_mask(round_trip) -> None:
    original, imported, release = round_trip
    matched = pairs(original, imported)
    assert len(matched) == int((original["chip_ok"].values == 1).sum()) >= 10
    assert (release / "examples").is_dir() and len(list((release / "examples").iterdir())) \
        == len(matched)
    for i, j in matched:
        for name in ("label", "merged_label", "split", "loss_year"):
            assert imported[name].values[j] == original[name].values[i]
        np.testing.assert_array_equal(imported["loss_mask"].values[j],
                                      original["loss_mask"].values[i])


def test_images_equal_the_originals_within_the_display_step(round_trip) -> None:
    original, imported, _ = round_trip
    clipped = 0
    for i, j in pairs(original, imported):
        dates = original["view_date"].values[i]
        for view, date in enumerate(dates):
            if view and not date:
                continue
            k = 0 if view == 0 else int(np.flatnonzero(imported["view_date"].values[j] == date)[0])
            want = np.nan_to_num(original["image"].values[i, view])
            got = imported["image"].values[j, k]
            clipped += int((want[:3] > 0.4).sum())
            # Half a display step each way, plus the stores' 1e-4 reflectance quantum.
            np.testing.assert_allclose(got[:3], np.clip(want[:3], 0, 0.4),
                                       atol=VISIBLE_SCALE / 2 + 1e-4)
            np.testing.assert_allclose(got[3:], np.clip(want[3:], 0, 1.0),
                                       atol=INFRARED_SCALE / 2 + 1e-4)
    # The display range clips bright visible pixels (0.4 reflectance); the sample world's
    # Level-1 chips are top-of-atmosphere, brighter than the release's surface reflectance.
    assert clipped < 0.05 * original["image"].isel(band=slice(0, 3)).size


def test_aux_comes_back_in_the_stores_units(round_trip) -> None:
    original, imported, _ = round_trip
    features = list(map(str, imported["feature"].values))
    assert features == list(FEATURES)
    peat = features.index("peat_fraction")
    others = [k for k in range(len(features)) if k != peat]
    for i, j in pairs(original, imported):
        np.testing.assert_allclose(imported["aux"].values[j], original["aux"].values[i],
                                   rtol=1e-5, atol=1e-3, equal_nan=True)
        # Distances within 1 m (osm.json's places, 7-decimal lat/lon), temperature exact.
        np.testing.assert_allclose(imported["aux_scalar"].values[j, others],
                                   original["aux_scalar"].values[i, others], rtol=1e-5,
                                   atol=1e-3, equal_nan=True)
        # The release's peat is binary: a fraction comes back as 0 or 1.
        fraction = original["aux_scalar"].values[i, peat]
        want = float(fraction >= 0.5) if np.isfinite(fraction) else np.nan
        np.testing.assert_equal(imported["aux_scalar"].values[j, peat], want)
    # The comparison above meant something: the sample world has roads, towns and peat.
    rows = [j for _, j in pairs(original, imported)]
    got = imported["aux_scalar"].values[rows]
    for name in ("street_dist_km", "city_dist_km", "peat_fraction"):
        assert np.isfinite(got[:, features.index(name)]).all()
    assert set(got[:, peat].tolist()) <= {0.0, 1.0}


def test_aux_files_take_the_published_forms(round_trip) -> None:
    original, _, release = round_trip
    i, _ = pairs(original, round_trip[1])[0]
    lat, lon = float(original["lat"].values[i]), float(original["lon"].values[i])
    aux = release / "examples" / f"{lat:.5f}_{lon:.5f}" / "auxiliary"
    osm = json.loads((aux / "osm.json").read_text())
    for kind in ("closest_street", "closest_city"):
        assert isinstance(osm[kind]["lat"], str) and isinstance(osm[kind]["lon"], str)
        assert {"place_id", "display_name", "osm_type", "class", "type",
                "address"} <= osm[kind].keys()
    assert isinstance(json.loads((aux / "peat.json").read_text())["peat"], bool)
    assert np.load(aux / "ncep.npy").shape == (len(NCEP_VALUES),)
