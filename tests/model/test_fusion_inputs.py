"""Fusion inputs that cannot blow up: constant or mostly missing features are dropped at
training (recorded in the bundle), no normalisation scales an input by more than 10, and
a map is refused when a fusion feature has no source in the config."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from flows.cli.app import app
from forestnet_model.bundle_meta import read_bundle_meta
from forestnet_model.evaluation import evaluate_bundle
from forestnet_model.fusion_features import (
    choose_fusion_features,
    missing_warnings,
    unusable_features,
)
from forestnet_model.model import FlooredBatchNorm1d, FusionHead
from forestnet_model.train import TrainSpec, train_model
from pipeline.mapping.event_drivers import IMPUTED, imputed_fractions, imputed_inputs
from pipeline.mapping.fusion_inputs import AUX_VALUES
from pipeline.training_set.auxiliary import source_keys
from tests.map_job import untrained_bundle
from tests.model.synthetic_chips import MODEL, SPLITS, synthetic_chip_store
from tests.reliability.bad_input_helpers import map_ready, one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The training events' values: one varying, one constant, one missing on 3 of 4.
VARYING, CONSTANT, MOSTLY_MISSING = "elevation_mean", "peat_fraction", "street_dist_km"
FEATURES = (VARYING, CONSTANT, MOSTLY_MISSING)


def test_constant_and_mostly_missing_features_are_named_with_their_reason() -> None:
    values = np.array([[1.0, 0.37, np.nan], [2.0, 0.37, np.nan], [3.0, 0.37, 4.0],
                       [4.0, 0.37, np.nan]])
    assert unusable_features(values, FEATURES) == {
        CONSTANT: "constant (0.37) over the training events",
        MOSTLY_MISSING: "missing on 75% of the training events"}
    # A feature missing on exactly half of them is kept; one that varies a little is too.
    half = np.array([[1.0, 0.37], [np.nan, 0.38], [3.0, 0.37], [np.nan, 0.37]])
    assert unusable_features(half, ("a", "b")) == {}
    chosen = choose_fusion_features(half, ("a", "b"))
    assert chosen["kept"] == ["a", "b"] and chosen["missing_fraction"] == {"a": 0.5, "b": 0.0}


def test_no_input_of_the_head_is_scaled_by_more_than_ten() -> None:
    torch.manual_seed(0)
    floored, plain = FlooredBatchNorm1d(3, FusionHead.STD_FLOOR), torch.nn.BatchNorm1d(3)
    for norm in (floored, plain):
        norm.train()
        for _ in range(200):  # input 1 never moves in training: its running var decays to 0
            batch = torch.randn(16, 3)
            batch[:, 1] = 5.0
            norm(batch)
        norm.eval()
    x = torch.zeros(1, 3)
    x[0, 1] = 5.0
    moved = x.clone()
    moved[0, 1] = 6.0  # one unit away from the training value
    with torch.no_grad():
        gain = float(floored(moved)[0, 1] - floored(x)[0, 1])
        plain_gain = float(plain(moved)[0, 1] - plain(x)[0, 1])
    assert gain == pytest.approx(10.0, rel=1e-3)
    assert plain_gain > 300  # what a BatchNorm did: 1/sqrt(eps)


def _set_scalars(store: Path, values: dict[str, np.ndarray]) -> None:
    group = zarr.open_group(str(store), mode="a")
    names = [str(n) for n in group["feature"][:]]
    table = group["aux_scalar"][:]
    for name, column in values.items():
        table[:, names.index(name)] = column
    group["aux_scalar"][:] = table


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("fusion-inputs")
    store = synthetic_chip_store(folder / "chips.zarr")
    n = len(SPLITS)
    street = np.where(np.arange(n) % 4 == 2, 3.0, np.nan)  # 3 of the 4 training events lack it
    _set_scalars(store, {VARYING: np.arange(n, dtype=float) * 10, CONSTANT: np.full(n, 0.37),
                         MOSTLY_MISSING: street})
    spec = MODEL.model_copy(update={"fusion": True, "fusion_features": FEATURES})
    train = TrainSpec(epochs=1, batch_size=4, crop=32, samples_per_epoch=8, lr=1e-3, seed=0,
                      num_threads=1, progress="off")
    return store, train_model(store, folder / "model", spec, train)


def test_training_drops_them_and_the_bundle_says_why(trained, caplog) -> None:
    _, bundle = trained
    meta = read_bundle_meta(bundle)
    assert meta.model.fusion_features == (VARYING,)
    assert meta.fusion_inputs["dropped"] == {
        CONSTANT: "constant (0.37) over the training events",
        MOSTLY_MISSING: "missing on 75% of the training events"}
    assert meta.fusion_inputs["missing_fraction"] == {VARYING: 0.0, CONSTANT: 0.0,
                                                      MOSTLY_MISSING: 0.75}
    assert meta.normalisation["scalar_mean"] == [15.0]  # statistics of the kept one only
    with caplog.at_level(logging.WARNING, logger="forestnet_model.fusion_features"):
        choose_fusion_features(np.array([[1.0, 0.37]] * 2 + [[2.0, 0.37]]), (VARYING, CONSTANT))
    assert "fusion feature peat_fraction dropped: constant (0.37)" in caplog.text


def test_a_constant_feature_at_1000x_its_training_value_moves_no_probability(trained) -> None:
    store, bundle = trained
    before = np.array([e["probabilities"] for e in evaluate_bundle(bundle, store, "test",
                                                                   device="cpu")["events"]])
    n = len(SPLITS)
    _set_scalars(store, {CONSTANT: np.full(n, 370.0), MOSTLY_MISSING: np.full(n, 3000.0)})
    after = np.array([e["probabilities"] for e in evaluate_bundle(bundle, store, "test",
                                                                  device="cpu")["events"]])
    assert np.abs(after - before).max() <= 1e-6
    _set_scalars(store, {VARYING: np.arange(n, dtype=float) * 10 + 50})  # a kept one does
    moved = np.array([e["probabilities"] for e in evaluate_bundle(bundle, store, "test",
                                                                  device="cpu")["events"]])
    assert np.abs(moved - before).max() > 1e-4


def test_every_fusion_feature_names_the_input_it_reads() -> None:
    assert source_keys(("elevation", "ndvi"), ("street_dist_km", "slope_std", "ndvi_mean",
                                               "peat_fraction", "temperature_c")) == {
        "elevation": "dem", "street_dist_km": "roads", "slope_std": "dem",
        "peat_fraction": "peat", "temperature_c": "climate"}


def test_a_map_is_refused_when_a_fusion_feature_has_no_source(tiny_world: Path,
                                                               tmp_path: Path) -> None:
    bundle = untrained_bundle(tmp_path / "bundle",
                              fusion_features=("street_dist_km", "city_dist_km", "ndvi_mean"))
    (tmp_path / "job").mkdir()
    config = map_ready(tmp_path / "job", tiny_world.parent, bundle,
                       inputs={"roads": None, "settlements": None})
    text = one_line_error(CliRunner().invoke(app, ["map", "--config", str(config)]))
    assert text.endswith("reads ['city_dist_km', 'street_dist_km'] but their sources are not "
                         "configured; set inputs.roads, inputs.settlements in the config")


def test_the_map_names_each_events_imputed_features_and_their_share() -> None:
    features = ("elevation_mean", "street_dist_km")
    events = gpd.GeoDataFrame({
        AUX_VALUES: [np.array([1.0, np.nan]), np.array([np.nan, np.nan]),
                     np.array([2.0, 3.0]), np.array([np.nan, 1.0])],
        "driver_code": [1, 2, 3, 0]})  # the last has no imagery: no driver, not counted
    events[IMPUTED] = imputed_inputs(events, features)
    assert list(events[IMPUTED]) == ["street_dist_km", "elevation_mean,street_dist_km", "",
                                     "elevation_mean"]
    assert imputed_fractions(events, features) == {"elevation_mean": 0.3333,
                                                   "street_dist_km": 0.6667}
    warnings = missing_warnings(imputed_fractions(events, features), features, "mapped events")
    assert warnings == [
        "fusion feature elevation_mean is missing on 33% of the mapped events (imputed with "
        "its training mean)",
        "fusion feature street_dist_km is missing on 67% of the mapped events (imputed with "
        "its training mean)"]
