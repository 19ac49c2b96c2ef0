"""The release's variants as users' copies hold them: one ``srtm.npy`` or per-band terrain
files, infrared NPYs as uint8 or uint16, out-of-range values, files the importer does not
know."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.imagery.views import ChipSpec
from pipeline.training_set.batches import import_release_batch
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, open_chips
from pipeline.training_set.events import write_events
from pipeline.training_set.release_aux import NCEP_OTHER, unknown_aux_counts
from pipeline.training_set.release_import import plan_release
from tests.release_fixture import EXAMPLES, SIZE, pixels, write_release

SPEC = ChipSpec(max_single_views=2)
#: Two examples: the first has two dated scenes, the second one.
TWO = EXAMPLES[:2]


def import_all(release: Path, out: Path) -> tuple[object, list[str]]:
    """Import every example in one batch; the store and the batch's notes."""
    events, problems = plan_release(str(release), SPEC)
    assert problems == []
    events_path = write_events(events, out.with_name("events.parquet"))
    init_chip_store(out, events, SPEC, attrs={"source": "forestnet_release"})
    result = import_release_batch(str(release), events_path, 0, len(events), out, SPEC)
    finalize_chip_store(out, [(0, len(events))])
    return open_chips(out), result["notes"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("release"), TWO)


def copy_of(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "ForestNetDataset"))


def example(release: Path, k: int) -> Path:
    return release / "examples" / TWO[k].folder


def row_of(ds, k: int) -> int:
    return int(np.flatnonzero(np.isclose(ds["lat"].values, TWO[k].lat))[0])


def test_one_srtm_file_or_per_band_files_give_the_same_terrain(base, tmp_path) -> None:
    release = copy_of(base, tmp_path)
    aux = example(release, 0) / "auxiliary"
    for name in ("altitude", "slope", "aspect"):
        (aux / f"{name}.npy").unlink()
    # Altitude, aspect, slope: the release's channel order.
    terrain = np.stack([np.full((SIZE, SIZE), 55.0), np.full((SIZE, SIZE), 9000.0),
                        np.full((SIZE, SIZE), 300.0)], axis=-1).astype(np.float32)
    np.save(aux / "srtm.npy", terrain)  # channels last, as the release's loaders read it
    np.save(example(release, 1) / "auxiliary" / "srtm.npy", np.moveaxis(terrain, -1, 0))
    for name in ("altitude", "slope", "aspect"):  # example 1 has both layouts
        (example(release, 1) / "auxiliary" / f"{name}.npy").unlink()
    ds, notes = import_all(release, tmp_path / "chips.zarr")
    bands = list(map(str, ds["aux_band"].values))
    for k in (0, 1):
        aux_k = ds["aux"].values[row_of(ds, k)]
        np.testing.assert_allclose(aux_k[bands.index("elevation")], 55.0)  # metres
        np.testing.assert_allclose(aux_k[bands.index("slope")], 3.0)  # 1/100 degree
        np.testing.assert_allclose(aux_k[bands.index("aspect")], 90.0)
    assert not [n for n in notes if "srtm" in n]


def test_uint16_infrared_holding_display_values_imports_like_uint8(base, tmp_path) -> None:
    release = copy_of(base, tmp_path)
    infrared = example(release, 0) / "images" / "infrared"
    for npy in infrared.glob("*.npy"):
        np.save(npy, np.load(npy).astype(np.uint16))
    ds, _ = import_all(release, tmp_path / "wide.zarr")
    plain, _ = import_all(copy_of(base, tmp_path / "plain"), tmp_path / "plain.zarr")
    np.testing.assert_array_equal(ds["image"].values, plain["image"].values)
    nir = ds["image"].values[row_of(ds, 0), 0, 3]
    np.testing.assert_allclose(nir, pixels(50)[..., 0] / 255.0, atol=6e-5)  # 0-255 -> 0-1


def test_infrared_above_255_is_refused_naming_the_file(base, tmp_path) -> None:
    release = copy_of(base, tmp_path)
    infrared = example(release, 0) / "images" / "infrared"
    scene = infrared / f"{TWO[0].scenes[0]}.npy"
    np.save(scene, np.full((SIZE, SIZE, 3), 3000, np.uint16))  # raw reflectance, not display
    composite = example(release, 1) / "images" / "infrared" / "composite.npy"
    np.save(composite, np.full((SIZE, SIZE, 3), 256, np.uint16))
    ds, notes = import_all(release, tmp_path / "chips.zarr")
    skipped = [n for n in notes if str(scene.name) in n]
    assert len(skipped) == 1 and "outside the display range 0-255" in skipped[0]
    assert str(scene.relative_to(release)) in skipped[0]
    status = ds.attrs["skipped_events"][str(ds["event_id"].values[row_of(ds, 1)])]
    assert "composite.npy" in status and "outside the display range" in status
    assert ds["chip_ok"].values[row_of(ds, 0)] == 1  # the bad scene alone was left out


def test_unknown_auxiliary_files_are_counted_by_name(base, tmp_path) -> None:
    release = copy_of(base, tmp_path)
    np.save(example(release, 1) / "auxiliary" / "lossyear.npy", np.zeros((SIZE, SIZE)))
    _, notes = import_all(release, tmp_path / "chips.zarr")
    # The fixture writes gain.npy (no store equivalent) and ncep.npy (of which only tavg
    # is stored) into every example.
    assert unknown_aux_counts(notes) == {"gain.npy": 2, "lossyear.npy": 1,
                                         f"ncep.npy ({NCEP_OTHER})": 2}
