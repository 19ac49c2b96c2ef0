"""Accuracy: the demo's recipe learns the demo sample world's drivers, and so does a
user's chain through the published release's layout.

The demo world (160 events, 80 / 32 / 48 train / val / test, balanced over the 4 classes
and each fine label spread over the splits) is generated, ingested and chipped as
``forestnet demo`` does; the demo's recipe (``configs/demo.yaml``: FPN on EfficientNet-B2,
late fusion with aux scalars, scene data augmentation) trains from random weights on the
CPU, in a background process that the suite starts at collection
(``tests/accuracy_job.py``); these tests run last. Its held-out test accuracy must reach
0.85 (chance is 0.25) and beat both random-forest baselines of ``forestnet evaluate``; the
map of the same world with the same model must give the held-out events the drivers
evaluation gives them. The same chips written as the release, imported and trained on with
the same recipe must map the held-out events with accuracy 0.85 or more, within 0.05 of
the own chips' map.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from forestnet_model.baseline import fit_random_forest
from forestnet_model.bundle import load_bundle
from tests.accuracy_job import ACCURACY_JOB, DONE
from tests.map_job import read_map
from tests.release_chain import bundle_predictions, held_out, mapped_classes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_model(request: pytest.FixtureRequest) -> dict:
    """The background job's chips and model (tests/accuracy_job.py, started at collection)."""
    proc, folder = request.config.stash[ACCURACY_JOB]
    code = proc.wait(timeout=1800)
    log = (folder / "job.log").read_text(errors="replace")[-4000:]
    assert code == 0 and (folder / DONE).exists(), log
    return json.loads((folder / DONE).read_text())


def test_the_demo_recipe_classifies_the_held_out_events(demo_model: dict) -> None:
    _, meta = load_bundle(demo_model["bundle"])
    test = meta.metrics["test"]
    print(json.dumps({"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"]}))
    rows, truth = held_out(demo_model["chips"])
    assert test["n"] == len(rows) >= 25
    assert test["accuracy"] >= 0.85, test["confusion_matrix"]
    assert test["macro_f1"] >= 0.8
    assert meta.radiometry == "surface"
    # The bundle alone (predict_events, as evaluation and mapping use it) gives the same.
    predicted = bundle_predictions(demo_model["bundle"], demo_model["chips"], rows)
    assert np.mean(predicted == truth) == pytest.approx(test["accuracy"])


@pytest.mark.parametrize("features", ["visible", "visible+aux"])
def test_it_beats_the_random_forest_baseline(demo_model: dict, features: str) -> None:
    _, meta = load_bundle(demo_model["bundle"])
    # Both cores: these tests run last, alone (a forest's result does not depend on n_jobs).
    forest = fit_random_forest(Path(demo_model["chips"]), features, seed=0, n_jobs=2)
    print(json.dumps({f"rf_{features}_test_accuracy": forest.test["accuracy"]}))
    assert meta.metrics["test"]["accuracy"] > forest.test["accuracy"]


def test_the_map_gives_the_held_out_events_the_drivers_evaluation_gives(demo_model: dict
                                                                        ) -> None:
    """The demo world mapped with the same model (the map flow's functions, fusion head
    included): each held-out event's mapped driver, at its anchor, against the driver
    that evaluation's ``predict_events`` gives its chip."""
    rows, truth = held_out(demo_model["chips"])
    evaluated = bundle_predictions(demo_model["bundle"], demo_model["chips"], rows)
    mapped = mapped_classes([read_map(Path(p)) for p in demo_model["maps"]],
                            demo_model["chips"], rows)
    agreement = float(np.mean(mapped == evaluated))
    print(json.dumps({"map_accuracy": float(np.mean(mapped == truth)),
                      "map_agrees_with_evaluate": agreement}))
    assert (mapped >= 0).all(), "a held-out event is missing from the map"
    assert agreement >= 0.9


def test_the_release_chain_maps_the_held_out_events_as_the_own_chips_do(demo_model: dict
                                                                       ) -> None:
    """A user's chain: the demo world's chips written as the published release, imported
    (``import-forestnet``), the demo recipe trained on the import, and the world mapped
    with that bundle. Its map is scored at the held-out events' anchors against the world's
    true labels, beside the map of the same recipe trained on the pipeline's own chips."""
    chain = demo_model["chain"]
    _, meta = load_bundle(chain["bundle"])
    assert meta.radiometry == "surface"
    assert meta.model.fusion and meta.training["sda"]
    rows, truth = held_out(demo_model["chips"])
    assert len(held_out(chain["chips"])[0]) == len(rows)
    own = mapped_classes([read_map(Path(p)) for p in demo_model["maps"]], demo_model["chips"],
                         rows)
    mapped = mapped_classes([read_map(Path(p)) for p in chain["maps"]], demo_model["chips"],
                            rows)
    chain_accuracy, own_accuracy = float(np.mean(mapped == truth)), float(np.mean(own == truth))
    print(json.dumps({"chain_map_accuracy": chain_accuracy, "own_map_accuracy": own_accuracy,
                      "chain_test_accuracy": meta.metrics["test"]["accuracy"]}))
    assert (mapped >= 0).all(), "a held-out event is missing from the chain's map"
    assert chain_accuracy >= 0.85
    assert abs(chain_accuracy - own_accuracy) <= 0.05
