"""A model never meets numbers of another radiometry: stores and bundles record theirs,
training refuses to resume on other chips, mapping refuses another bundle or scenes of
another level; each refusal is one line naming both sides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
import zarr

from flows.config.mapping_job import check_map_radiometry
from flows.config.schema import load_config
from forestnet_model.bundle import read_bundle_meta
from forestnet_model.train import TrainSpec, train_model
from pipeline.core.radiometry import RadiometryMismatch, require_same, store_radiometry
from pipeline.imagery.views import ChipSpec
from pipeline.training_set.chip_store import open_chips
from tests.map_job import untrained_bundle
from tests.model.synthetic_chips import MODEL, synthetic_chip_store
from tests.tiny_config import write_tiny_config
from tests.world_chips import ingest_world

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def set_radiometry(store: Path, radiometry: str) -> None:
    group = zarr.open_group(str(store), mode="a")
    group.attrs["radiometry"] = radiometry
    zarr.consolidate_metadata(str(store))


def test_stores_record_their_radiometry_and_old_ones_read_as_what_they_were(tmp_path) -> None:
    toa = synthetic_chip_store(tmp_path / "toa.zarr", ChipSpec(size=48, max_single_views=2,
                                                               radiometry="toa"))
    assert open_chips(toa).attrs["radiometry"] == "toa"
    assert "reflectance 0-1" in open_chips(toa).attrs["reflectance_scaling"]
    assert store_radiometry({}) == "toa"  # built from Level-1 before the contract
    assert store_radiometry({"source": "forestnet_release"}) == "surface"
    with pytest.raises(RadiometryMismatch, match="^a is top-of-atmosphere .* but b is surface"):
        require_same("toa", "a", "surface", "b")


def test_training_resumes_only_on_chips_of_the_radiometry_it_started_on(tmp_path) -> None:
    chips = synthetic_chip_store(tmp_path / "chips.zarr")  # surface, the default
    out = tmp_path / "model"
    spec = TrainSpec(epochs=1, batch_size=4, crop=32, samples_per_epoch=8, lr=1e-3, seed=0,
                     num_threads=1, progress="off")
    bundle = train_model(chips, out, MODEL, spec)
    assert read_bundle_meta(bundle).radiometry == "surface"
    set_radiometry(chips, "toa")  # the same store path, now of Level-1 chips
    with pytest.raises(RadiometryMismatch) as info:
        train_model(chips, out, MODEL, spec.model_copy(update={"epochs": 2}))
    message = str(info.value)
    assert f"{chips} is top-of-atmosphere (Level-1)" in message
    assert f"the model resumed from {out / 'checkpoint.pt'} is surface reflectance" in message
    assert "\n" not in message


@pytest.fixture(scope="module")
def map_config(tiny_world: Path, tiny_scene_store: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("map-radiometry")
    config = write_tiny_config(folder, tiny_world.parent)
    work = Path(yaml.safe_load(config.read_text())["workdir"])
    work.mkdir(parents=True)
    (work / "scenes.zarr").symlink_to(tiny_scene_store)
    untrained_bundle(work / "model" / "bundle", radiometry="toa")
    return config


def test_the_map_refuses_a_bundle_of_another_radiometry_than_the_chips(map_config) -> None:
    config = load_config(map_config)
    assert config.chips.radiometry == "surface"
    with pytest.raises(RadiometryMismatch, match=r"^chips.radiometry in the config is surface "
                       r"reflectance \(Level-2\) but the model bundle .*bundle is "
                       r"top-of-atmosphere \(Level-1\); they must match$"):
        check_map_radiometry(config)
    check_map_radiometry(config.model_copy(update={"chips": config.chips.model_copy(
        update={"radiometry": "toa"})}))


def test_an_sr_bundle_is_refused_over_level1_only_scenes(tiny_world: Path, tmp_path) -> None:
    config = load_config(write_tiny_config(tmp_path, tiny_world.parent))
    level1_only = tmp_path / "world"
    (level1_only / "landsat").mkdir(parents=True)
    for product in (tiny_world.parent / "landsat").glob("*_L1TP_*"):
        (level1_only / "landsat" / product.name).symlink_to(product)
    ingest_world(level1_only, config.scene_store)
    untrained_bundle(config.bundle_path, radiometry="surface")
    with pytest.raises(RadiometryMismatch, match=r"^every scene in .*scenes.zarr \(L1TP\) is "
                       r"top-of-atmosphere \(Level-1\) but the model bundle .* is surface"):
        check_map_radiometry(config)
