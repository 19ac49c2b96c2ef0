"""Scenes are ranked by their QA mask first; only the views the composite and the single
views can use are warped in full (ForestNet's pool: every view passing the cloud filter,
or the 5 least cloudy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline.imagery.views as chips
from pipeline.core.grid import centred_geobox
from pipeline.imagery.views import ChipSpec, SceneView, composite_views, scene_views

GEOBOX = centred_geobox(113.5, -2.0, 20, 15.0)
SPEC = ChipSpec(max_view_cloud=0.5, composite_pool=5)


def mask_with_cloud(cloud: float) -> np.ndarray:
    """A usable mask of 400 pixels of which ``cloud`` (a multiple of 1/400) are cloudy."""
    usable = np.ones(GEOBOX.shape, dtype=bool).reshape(-1)
    usable[: round(cloud * usable.size)] = False
    return usable.reshape(GEOBOX.shape)


@pytest.fixture()
def fake_store(monkeypatch: pytest.MonkeyPatch):
    """Scenes with given QA cloud fractions; records which ones get a full warp."""
    clouds: dict[str, float] = {}
    warped: list[str] = []

    def fake_rows(index, footprint, start, end, level=None):
        # Surface-reflectance scenes (the default radiometry), unless named "toa-*".
        levels = ["L1TP" if sid.startswith("toa-") else "L2SP" for sid in index["scene_id"]]
        return np.array([i for i, lv in enumerate(levels) if level is None
                         or lv.startswith(level)], dtype=np.int64)

    def fake_qa(store, scene_id, geobox):
        return mask_with_cloud(clouds[scene_id])

    def fake_warp(store, scene_id, geobox, qa_usable=None, pan_from=None, out=None):
        warped.append(scene_id)
        image = np.ones((6, *geobox.shape), dtype=np.float32)
        if out is not None:
            out[...] = image
        return SceneView(scene_id, "2015-01-01", image if out is None else out, qa_usable)

    monkeypatch.setattr(chips, "scene_rows", fake_rows)
    monkeypatch.setattr(chips, "qa_usable_on_grid", fake_qa)
    monkeypatch.setattr(chips, "scene_on_grid", fake_warp)
    return clouds, warped


def select(clouds: dict[str, float]) -> list[SceneView]:
    index = pd.DataFrame({"scene_id": list(clouds), "pan_partner": ""})
    views, problem = scene_views(GEOBOX, pd.Timestamp("2010-01-01"),
                                 pd.Timestamp("2020-12-31"), Path("unused"), index, SPEC)
    assert problem == ""
    return views


def test_when_five_pass_only_the_passing_scenes_are_warped(fake_store) -> None:
    clouds, warped = fake_store
    clouds.update({"a": 0.9, "b": 0.1, "c": 0.45, "d": 0.2, "e": 0.6, "f": 0.3, "g": 0.4})
    views = select(clouds)
    assert sorted(warped) == ["b", "c", "d", "f", "g"]
    assert [v.scene_id for v in views] == ["b", "d", "f", "g", "c"]  # least cloudy first
    _, pool, passing, notes = composite_views(views, SPEC)
    assert [v.scene_id for v in pool] == [v.scene_id for v in passing] == [
        "b", "d", "f", "g", "c"]
    assert notes == []


def test_when_few_pass_the_five_least_cloudy_are_warped(fake_store) -> None:
    clouds, warped = fake_store
    clouds.update({"a": 0.95, "b": 0.1, "c": 0.8, "d": 0.7, "e": 0.9, "f": 0.97, "g": 1.0})
    select(clouds)
    # "g" has no usable pixel and "f" is the sixth least cloudy: neither costs a warp.
    assert sorted(warped) == ["a", "b", "c", "d", "e"]


def test_selection_matches_choosing_from_every_warped_view(fake_store) -> None:
    """The views picked from QA alone are those picked after warping everything."""
    clouds, warped = fake_store
    rng = np.random.default_rng(3)
    for trial in range(20):
        clouds.clear()
        warped.clear()
        clouds.update({f"s{i:02d}": round(float(c) * 400) / 400
                       for i, c in enumerate(rng.uniform(0, 1, rng.integers(1, 12)))})
        chosen = composite_views(select(clouds), SPEC)
        every = sorted((chips.scene_on_grid(None, sid, GEOBOX, mask_with_cloud(c))
                        for sid, c in clouds.items() if c < 1.0),
                       key=lambda v: (v.cloud_fraction, v.scene_id))
        reference = composite_views(every, SPEC)
        for got, want in zip(chosen[1:3], reference[1:3], strict=True):
            assert [v.scene_id for v in got] == [v.scene_id for v in want], trial
        np.testing.assert_array_equal(chosen[0], reference[0])


def test_scenes_of_the_other_radiometry_are_never_candidates(fake_store) -> None:
    clouds, warped = fake_store
    clouds.update({"toa-a": 0.0, "b": 0.3, "toa-c": 0.1, "d": 0.2})
    views = select(clouds)
    assert [v.scene_id for v in views] == ["d", "b"] and sorted(warped) == ["b", "d"]


def test_an_event_with_only_the_other_radiometry_says_so(fake_store) -> None:
    clouds, warped = fake_store
    clouds.update({"toa-a": 0.0, "toa-b": 0.1})
    index = pd.DataFrame({"scene_id": list(clouds), "pan_partner": ""})
    views, problem = scene_views(GEOBOX, pd.Timestamp("2010-01-01"),
                                 pd.Timestamp("2020-12-31"), Path("unused"), index, SPEC)
    assert views == [] and warped == []
    assert problem == ("no surface reflectance (Level-2) scene between 2010-01-01 and "
                       "2020-12-31: the 2 covering the grid are of another level")
