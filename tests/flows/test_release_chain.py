"""The release chain: the path a user with the published ForestNet release takes.

The demo world (100 events, 50 / 20 / 30 train / val / test) is ingested and chipped as
``forestnet demo`` does, and the demo's recipe (``configs/demo.yaml``: FPN on EfficientNet-B2,
late fusion with aux scalars, scene data augmentation) trains on those chips from random
weights on the CPU. The same chips are then written in the release's layout and scaling
(``release_writer``), and the user's chain runs through the real CLI: ``import-forestnet``
-> ``train`` -> ``map`` of the demo world. Both models must classify the held-out events as
ForestNet does (accuracy >= 0.85; chance is 0.25), and the map must agree with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point

from flows.config.schema import load_config
from forestnet_model.baseline import fit_random_forest
from forestnet_model.bundle import load_bundle
from forestnet_model.data import event_scalars
from forestnet_model.predict import predict_events
from forestnet_model.train import train_model
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.sample_world import WorldSpec, generate_world
from pipeline.training_set.chip_store import open_chips
from pipeline.training_set.release_writer import write_release
from tests.map_job import forestnet, geopackages, read_map
from tests.tiny_config import write_demo_config
from tests.world_chips import world_chip_store

pytestmark = pytest.mark.slow


def recipe(config: Path) -> tuple:
    """The demo's model and training specs, on the CPU and quiet."""
    cfg = load_config(config)
    return cfg, cfg.model, cfg.train.model_copy(update={"device": "cpu", "progress": "off"})


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, cli_on_shared_prefect: None) -> dict:
    folder = tmp_path_factory.mktemp("release-chain")
    world = generate_world(folder / "world", WorldSpec.demo()).parent
    config = write_demo_config(folder, world)
    cfg, model, train = recipe(config)
    own_chips = world_chip_store(world, folder / "own", cfg.aux.bands, cfg.aux.features,
                                 cfg.chips.spec(), workers=2,
                                 scene_store=cfg.scene_store)
    own_bundle = train_model(own_chips, folder / "own" / "model", model, train)

    release = write_release(open_chips(own_chips), folder / "release")
    steps = {}
    for step in (("import-forestnet", str(release)), ("train",), ("map",)):
        steps[step[0]] = result = forestnet(*step, "--config", str(config), timeout=600)
        assert result.returncode == 0, f"{step[0]}: {result.stderr[-3000:]}"
    return {"world": world, "cfg": cfg, "own_chips": own_chips, "own_bundle": own_bundle,
            "chips": cfg.chips_path, "bundle": cfg.bundle_path,
            "maps": [read_map(p) for p in geopackages(steps["map"])]}


def held_out(chips_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the usable test events and their true class indices."""
    chips = open_chips(chips_path)
    rows = np.flatnonzero((chips["split"].values == "test") & (chips["chip_ok"].values == 1))
    truth = np.array([list(DRIVER_CLASSES).index(str(m))
                      for m in chips["merged_label"].values[rows]])
    return rows, truth


def bundle_predictions(bundle: Path, chips_path: Path, rows: np.ndarray) -> np.ndarray:
    """``predict_events`` (the entry that evaluation uses) on the events' composites."""
    _, meta = load_bundle(bundle)
    chips = open_chips(chips_path)
    images = chips["image"].isel(event=rows, view=0).sel(band=list(meta.model.in_bands)).values
    scalars = event_scalars(chips, rows, meta.model.fusion_features)
    probs, _ = predict_events(bundle, images, chips["loss_mask"].values[rows], device="cpu",
                              scalars=scalars)
    return probs.argmax(1)


def mapped_classes(maps: list[gpd.GeoDataFrame], chips_path: Path, rows: np.ndarray
                   ) -> np.ndarray:
    """The mapped driver at each event's anchor (-1 where no mapped event holds it)."""
    chips = open_chips(chips_path)
    mapped = gpd.pd.concat(maps, ignore_index=True)
    found = []
    for lon, lat in zip(chips["lon"].values[rows], chips["lat"].values[rows], strict=True):
        hit = mapped[mapped.contains(Point(float(lon), float(lat)))]
        found.append(list(DRIVER_CLASSES).index(hit["driver"].iloc[0]) if len(hit) else -1)
    return np.array(found)


def test_the_demo_recipe_learns_the_drivers_from_the_pipelines_own_chips(chain: dict) -> None:
    _, meta = load_bundle(chain["own_bundle"])
    test = meta.metrics["test"]
    print(json.dumps({"own_test_accuracy": test["accuracy"], "own_test_macro_f1":
                      test["macro_f1"], "n": test["n"]}))
    rows, truth = held_out(chain["own_chips"])
    assert test["n"] == len(rows) >= 25
    assert test["accuracy"] >= 0.85, test["confusion_matrix"]
    assert test["macro_f1"] >= 0.8
    # The bundle alone (predict_events, as evaluation uses it) gives the same.
    predicted = bundle_predictions(chain["own_bundle"], chain["own_chips"], rows)
    assert np.mean(predicted == truth) == pytest.approx(test["accuracy"])
    # As in the paper, it beats both random-forest baselines on the same split.
    for features in ("visible", "visible+aux"):
        forest = fit_random_forest(chain["own_chips"], features, seed=0)
        print(json.dumps({f"rf_{features}_test_accuracy": forest.test["accuracy"]}))
        assert test["accuracy"] > forest.test["accuracy"]


def test_the_release_chain_maps_the_held_out_events_as_well(chain: dict) -> None:
    rows, truth = held_out(chain["chips"])
    mapped = mapped_classes(chain["maps"], chain["chips"], rows)
    accuracy = float(np.mean(mapped == truth))
    _, own = load_bundle(chain["own_bundle"])
    _, imported = load_bundle(chain["bundle"])
    print(json.dumps({"chain_map_accuracy": accuracy, "chain_bundle_test_accuracy":
                      imported.metrics["test"]["accuracy"],
                      "own_test_accuracy": own.metrics["test"]["accuracy"]}))
    assert len(rows) >= 25 and (mapped >= 0).all()  # every held-out event is on the map
    assert imported.radiometry == own.radiometry == "surface"
    assert accuracy >= 0.85
    assert abs(accuracy - own.metrics["test"]["accuracy"]) <= 0.05


def test_the_map_gives_the_drivers_that_evaluation_gives(chain: dict) -> None:
    rows, _ = held_out(chain["chips"])
    evaluated = bundle_predictions(chain["bundle"], chain["chips"], rows)
    mapped = mapped_classes(chain["maps"], chain["chips"], rows)
    assert np.mean(evaluated == mapped) >= 0.9
