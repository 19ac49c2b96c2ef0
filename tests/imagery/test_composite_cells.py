"""Cell composites: the pool rule, pool-only warps, the lattice cells under a grid, and the
cloud overview and candidates on the tiny world's scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox

import pipeline.imagery.composite_cells as composite_cells
from pipeline.core.tile_lattice import TILE_PIXELS, MapTile
from pipeline.imagery import views
from pipeline.imagery.composite_cells import (
    build_cell,
    cell_candidates,
    choose_pool,
    lattice_cells,
    no_scene_reason,
)
from pipeline.imagery.qa_overview import qa_overview
from pipeline.imagery.views import CHIP_BANDS, ChipSpec, SceneView
from pipeline.ingest.catalog import read_index

SPEC = ChipSpec(max_view_cloud=0.5, composite_pool=5)
NOTE = "no view passes the cloud filter; composite of least cloudy"
#: A lattice cell over the tiny world (zone 49, just south of the equator).
CENTRE = MapTile(49, -44, 157)


# --- choose_pool -------------------------------------------------------------------------


def test_pool_is_capped_at_the_five_least_cloudy_passing_scenes() -> None:
    clouds = {"a": 0.9, "b": 0.1, "c": 0.45, "d": 0.2, "e": 0.6, "f": 0.3, "g": 0.4,
              "h": 0.05, "i": 0.5}
    pool, notes = choose_pool(clouds, SPEC)
    assert pool == ["h", "b", "d", "f", "g"]
    assert notes == []


def test_without_a_cap_every_passing_scene_is_pooled_as_forestnet() -> None:
    clouds = {"a": 0.9, "b": 0.1, "c": 0.45, "d": 0.2, "e": 0.6, "f": 0.3, "g": 0.4,
              "h": 0.05, "i": 0.5}
    pool, notes = choose_pool(clouds, SPEC.model_copy(update={"composite_max_views": None}))
    # "i" sits exactly on the threshold: it passes (at or below).
    assert pool == ["h", "b", "d", "f", "g", "c", "i"]
    assert notes == []


def test_when_none_pass_the_five_least_cloudy_are_pooled_with_a_note() -> None:
    clouds = {"a": 0.95, "b": 0.6, "c": 0.8, "d": 0.7, "e": 0.9, "f": 0.97, "g": 0.99}
    pool, notes = choose_pool(clouds, SPEC)
    assert pool == ["b", "d", "c", "e", "a"]
    assert notes == [NOTE]


def test_when_a_few_pass_the_five_least_cloudy_are_pooled() -> None:
    """ForestNet's fallback takes failing scenes too; the note only says when none pass."""
    clouds = {"a": 0.95, "b": 0.1, "c": 0.8, "d": 0.7, "e": 0.9, "f": 0.97, "g": 0.3}
    pool, notes = choose_pool(clouds, SPEC)
    assert pool == ["b", "g", "d", "c", "e"]
    assert notes == []


def test_a_scene_without_a_usable_pixel_is_never_pooled() -> None:
    clouds = {"a": 1.0, "b": 0.9, "c": 1.0, "d": 0.8}
    pool, notes = choose_pool(clouds, SPEC)
    assert pool == ["d", "b"]  # fewer than 5, yet neither cloud-1.0 scene fills the pool
    assert notes == [NOTE]
    assert choose_pool({"a": 1.0, "b": 1.0}, SPEC) == ([], [])


def test_equal_clouds_are_ranked_by_scene_id() -> None:
    clouds = {"s7": 0.2, "s3": 0.2, "s9": 0.1, "s1": 0.2, "s5": 0.2, "s2": 0.2, "s0": 0.3}
    pool, _ = choose_pool(clouds, SPEC)
    # The cap cuts through the tie at 0.2: the lower ids win.
    assert pool == ["s9", "s1", "s2", "s3", "s5"]


# --- build_cell: only the pool is warped ------------------------------------------------


class _FakeOverview:
    def __init__(self, cloud: float) -> None:
        self.cloud = cloud

    def cloud_fraction(self, grid: GeoBox) -> float:
        return self.cloud


def _scene_image(scene_id: str) -> np.ndarray:
    seed = int(scene_id[1:])
    return np.random.default_rng(seed).uniform(
        0, 1, (len(CHIP_BANDS), TILE_PIXELS, TILE_PIXELS)).astype(np.float32)


@pytest.fixture()
def fake_scenes(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, float], list[str]]:
    """Candidates with given overview clouds; records the scenes warped."""
    clouds: dict[str, float] = {}
    warped: list[str] = []

    def fake_overview(store: Path, scene_id: str) -> _FakeOverview:
        return _FakeOverview(clouds[scene_id])

    def fake_warp(store: Path, scene_id: str, geobox: GeoBox, qa_usable=None,
                  pan_from: str | None = None, out: np.ndarray | None = None) -> SceneView:
        warped.append(scene_id)
        assert out is not None and out.shape == (len(CHIP_BANDS), *geobox.shape)
        out[...] = _scene_image(scene_id)
        return SceneView(scene_id, "2016-01-01", out, np.ones(geobox.shape, bool))

    monkeypatch.setattr(composite_cells, "qa_overview", fake_overview)
    monkeypatch.setattr(composite_cells, "scene_on_grid", fake_warp)
    return clouds, warped


def _build(ids: list[str]):
    index = pd.DataFrame({"scene_id": ids, "pan_partner": ""})
    return build_cell(CENTRE, np.arange(len(ids)), Path("unused"), index, SPEC)


@pytest.mark.parametrize("n_candidates", [10, 80])
def test_build_cell_warps_only_the_pool_whatever_the_candidates(
        fake_scenes: tuple[dict[str, float], list[str]], n_candidates: int) -> None:
    clouds, warped = fake_scenes
    rng = np.random.default_rng(n_candidates)
    ids = [f"s{i:03d}" for i in range(n_candidates)]
    shuffled = rng.permutation(np.linspace(0.0, 0.9, n_candidates))  # 6+ of them pass
    clouds.update({sid: float(c) for sid, c in zip(ids, shuffled, strict=True)})
    comp = _build(ids)

    passing = sorted((c, sid) for sid, c in clouds.items() if c <= 0.5)
    expected = [sid for _, sid in passing[:5]]
    assert len(passing) > 5  # the cap, not the fallback, decides here
    assert warped == expected  # exactly 5 warps, of the 5 least cloudy passing
    assert comp.scene_ids == tuple(expected)
    assert comp.clouds == tuple(clouds[sid] for sid in expected)
    assert comp.scene_dates == ("2016-01-01",) * 5
    median = np.median(np.stack([_scene_image(sid) for sid in expected]), axis=0)
    np.testing.assert_array_equal(comp.image, median)


def test_build_cell_without_a_usable_candidate_warps_nothing(
        fake_scenes: tuple[dict[str, float], list[str]]) -> None:
    clouds, warped = fake_scenes
    clouds.update({"s1": 1.0, "s2": 1.0})
    comp = _build(["s1", "s2"])
    assert warped == []
    assert comp.scene_ids == () and not comp.image.any()
    assert comp.notes == ("no usable scene pixel over the cell",)


# --- lattice_cells -----------------------------------------------------------------------


def test_a_tiles_grid_with_halo_lies_on_its_3x3_neighbourhood() -> None:
    cells = lattice_cells(CENTRE.geobox())  # the default halo: 10 px past each edge
    assert sorted(cells) == sorted(MapTile(49, CENTRE.row + dr, CENTRE.col + dc)
                                   for dr in (-1, 0, 1) for dc in (-1, 0, 1))
    assert lattice_cells(CENTRE.geobox(0)) == [CENTRE]


def test_an_off_lattice_grid_is_refused() -> None:
    box = CENTRE.geobox(0)
    shifted = GeoBox(box.shape, Affine.translation(7.0, 0.0) @ box.affine, box.crs)
    with pytest.raises(ValueError, match="not on the 15 m map lattice"):
        lattice_cells(shifted)
    southern = GeoBox(box.shape, box.affine, "EPSG:32749")
    with pytest.raises(ValueError, match="northern UTM zone"):
        lattice_cells(southern)


# --- on the tiny world -------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(tiny_scene_store: Path):
    return read_index(tiny_scene_store)


@pytest.mark.parametrize("cell", [MapTile(49, r, c) for r, c in
                                  [(-44, 157), (-44, 158), (-43, 157), (-45, 156)]],
                         ids=lambda c: c.tile_id)
def test_overview_cloud_is_close_to_the_full_resolution_cloud(
        tiny_scene_store: Path, index, cell: MapTile) -> None:
    grid = cell.geobox(0)
    for sid in index["scene_id"]:
        exact = 1.0 - views.qa_usable_on_grid(tiny_scene_store, sid, grid).mean()
        approx = qa_overview(tiny_scene_store, sid).cloud_fraction(grid)
        assert approx == pytest.approx(exact, abs=0.05), sid


def test_overview_of_a_grid_off_the_scene_is_all_cloud(tiny_scene_store: Path, index) -> None:
    far = MapTile(49, -44, 170).geobox(0)
    assert qa_overview(tiny_scene_store, index["scene_id"].iloc[0]).cloud_fraction(far) == 1.0


def test_candidates_are_of_the_specs_level_only(index) -> None:
    surface = index["scene_id"].to_numpy()[cell_candidates(CENTRE, 2016, index, ChipSpec())]
    toa = index["scene_id"].to_numpy()[
        cell_candidates(CENTRE, 2016, index, ChipSpec(radiometry="toa"))]
    assert len(surface) == 3 and all("_L2SP_" in sid for sid in surface)
    assert len(toa) == 3 and all("_L1TP_" in sid for sid in toa)
    # The window (+/- 5 years of 2013: to 2018) leaves out the 2019 acquisition.
    early = index["scene_id"].to_numpy()[cell_candidates(CENTRE, 2013, index, ChipSpec())]
    assert sorted(sid[17:25] for sid in early) == ["20170612", "20180718"]


def test_a_grid_covered_only_by_the_other_level_says_so(index) -> None:
    level1 = index[index["scene_id"].str.contains("_L1TP_")].reset_index(drop=True)
    grid = CENTRE.geobox(0)
    assert len(cell_candidates(CENTRE, 2016, level1, ChipSpec())) == 0
    assert no_scene_reason(grid, 2016, level1, ChipSpec()) == (
        "no surface reflectance (Level-2) scene between 2011-01-01 and 2021-12-31: the 3 "
        "covering the grid are of another level")
    assert no_scene_reason(MapTile(49, -44, 170).geobox(0), 2016, level1, ChipSpec()) == (
        "no scene between 2011-01-01 and 2021-12-31 covers the grid")
