"""The map beside evaluation: evaluated events joined to the map polygons that overlap them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.affinity import translate

from pipeline.accuracy.map_agreement import (
    PROBABILITY_FIELDS,
    MapInputError,
    check_driver_map,
    event_regions,
    map_beside_evaluation,
)
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.export.geopackage import DRIVER_MAP_LAYER
from pipeline.training_set.chip_store import open_chips
from tests.model.synthetic_chips import synthetic_chip_store


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return open_chips(synthetic_chip_store(tmp_path_factory.mktemp("agree") / "chips.zarr"))


def test_event_regions_are_the_loss_masks_on_the_ground(chips) -> None:
    regions = event_regions(chips, [0, 1])
    assert list(regions["event_id"]) == ["2015_ev0", "2015_ev1"]
    # 60 + 40 loss pixels of 15 m, measured in the equal-area CRS.
    area = regions.to_crs("EPSG:6933").area.to_numpy()
    np.testing.assert_allclose(area, 100 * 15.0 ** 2, rtol=0.01)


def write_map(path: Path, chips, rows: list[int], drivers: list[str], probs: np.ndarray
              ) -> Path:
    frame = event_regions(chips, rows)
    frame["driver"] = drivers
    for k, field in enumerate(PROBABILITY_FIELDS):
        frame[field] = probs[:, k]
    # A decoy: a smaller polygon overlapping the first event, with another driver.
    decoy = frame.iloc[[0]].copy()
    decoy["geometry"] = [translate(frame.geometry.iloc[0].buffer(-0.00005), 0.0001, 0)]
    decoy["driver"] = "Other"
    pyogrio.write_dataframe(pd.concat([frame, decoy], ignore_index=True), path,
                            layer=DRIVER_MAP_LAYER, driver="GPKG")
    return path


def test_the_map_scores_on_evaluations_events(chips, tmp_path: Path) -> None:
    rows = list(range(8))
    truth = [str(m) for m in chips["merged_label"].values[rows]]
    evaluated = list(truth)
    evaluated[5] = DRIVER_CLASSES[0]  # evaluation wrong on one event
    mapped = list(evaluated)
    mapped[2] = DRIVER_CLASSES[3] if truth[2] != DRIVER_CLASSES[3] else DRIVER_CLASSES[0]
    p_eval = np.full((8, 4), 0.1)
    for i, d in enumerate(evaluated):
        p_eval[i, DRIVER_CLASSES.index(d)] = 0.7
    p_map = p_eval.copy()
    p_map[4] += [0.03, -0.03, 0, 0]
    p_map[2] = 0.1
    p_map[2, DRIVER_CLASSES.index(mapped[2])] = 0.7
    path = write_map(tmp_path / "map.gpkg", chips, rows[:7], mapped[:7], p_map[:7])
    report = {"events": [{"event_id": str(chips["event_id"].values[i]), "true": truth[i],
                          "predicted": evaluated[i], "probabilities": p_eval[i].tolist()}
                         for i in rows]}
    result = map_beside_evaluation([path], chips, report)
    assert result["n"] == 8 and result["missing"] == 1  # the last event is not mapped
    assert result["evaluation_accuracy"] == pytest.approx(7 / 8)
    # Mapped right on 6 (event 2 differs, 5 repeats evaluation's error, 7 is missing).
    assert result["map_accuracy"] == pytest.approx(5 / 8)
    assert result["agreement"] == pytest.approx(6 / 8)
    assert result["max_probability_gap"] == pytest.approx(0.6)  # event 2's flipped class
    by_id = {e["event_id"]: e for e in result["events"]}
    assert by_id["2015_ev0"]["mapped"] == evaluated[0]  # the larger overlap wins
    assert by_id["2015_ev4"]["max_probability_gap"] == pytest.approx(0.03)
    assert by_id["2015_ev7"]["mapped"] == ""


def test_a_file_that_is_not_a_driver_map_is_named(tmp_path: Path) -> None:
    with pytest.raises(MapInputError, match="no such driver map"):
        check_driver_map(tmp_path / "none.gpkg")
    text = tmp_path / "notes.gpkg"
    text.write_text("not a geopackage")
    with pytest.raises(MapInputError, match="notes.gpkg"):
        check_driver_map(text)
