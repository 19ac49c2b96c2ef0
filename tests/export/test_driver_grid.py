"""Tests for the 1 km dominant-driver grid, the GFW crosswalk and the grid GeoPackage."""

from __future__ import annotations

import contextlib
import sqlite3
import warnings

import numpy as np
import pyogrio
import pytest
from shapely.geometry import box

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_KEYS
from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.export.driver_grid import (
    AREA_COLUMNS,
    CROSSWALK_TABLE,
    DOMINANT_GRID_LAYER,
    GFW_CLASSES,
    GFW_CROSSWALK,
    UNMAPPED,
    dominant_driver_grid,
    write_dominant_grid,
)
from tests.mapped_features import NO_IMAGERY, make_features, utm_squares

EA = "EPSG:6933"
# A 1 km cell near 101.1 E, 0.5 N in EPSG:6933 metres (both multiples of 1000).
X0, Y0 = 9_750_000, 60_000


@pytest.fixture
def two_driver_cell():
    """Cell (X0, Y0): 18 ha Plantation + 4 ha Other; one event over a corner of 4 cells."""
    geoms = [
        box(X0 + 100, Y0 + 100, X0 + 700, Y0 + 400),  # 18 ha, Plantation
        box(X0 + 750, Y0 + 600, X0 + 950, Y0 + 800),  # 4 ha, Other
        box(X0 + 4_800, Y0 + 4_800, X0 + 5_200, Y0 + 5_200),  # 16 ha over 4 cells
        box(X0 + 2_000, Y0, X0 + 3_000, Y0 + 1_000),  # no imagery: not in the grid
    ]
    drivers = ["Plantation", "Other", "Grassland shrubland", NO_IMAGERY]
    return make_features(geoms, drivers, crs=EA)


def _cell(grid, x, y):
    (row,) = grid[grid["cell_id"] == f"{x // 1000}:{y // 1000}"].itertuples()
    return row


def test_dominant_driver_is_the_larger_area(two_driver_cell):
    grid = dominant_driver_grid(two_driver_cell)
    cell = _cell(grid, X0, Y0)
    assert cell.area_ha_plantation == pytest.approx(18.0)
    assert cell.area_ha_other == pytest.approx(4.0)
    assert cell.loss_area_ha == pytest.approx(22.0)
    assert (cell.dominant_driver, cell.dominant_code, cell.n_events) == ("Plantation", 1, 2)
    assert cell.dominant_share == pytest.approx(18 / 22)
    assert (cell.gfw_class, cell.gfw_fit) == ("Permanent agriculture", "partial")


def test_an_event_over_a_corner_is_split_by_area_not_by_centroid(two_driver_cell):
    grid = dominant_driver_grid(two_driver_cell)
    corner = [_cell(grid, X0 + dx, Y0 + dy) for dx in (4_000, 5_000) for dy in (4_000, 5_000)]
    assert [c.area_ha_grassland_shrubland for c in corner] == pytest.approx([4.0] * 4)
    assert {c.gfw_class for c in corner} == {"Wildfire"}
    assert len(grid) == 5  # the no-imagery event adds no cell


def test_cells_are_1_km_squares_on_multiples_of_1000_m(two_driver_cell):
    grid = dominant_driver_grid(two_driver_cell)
    assert grid.crs.to_epsg() == 4326
    bounds = grid.to_crs(EA).bounds.to_numpy()
    assert np.allclose(bounds, np.round(bounds / 1000) * 1000, atol=1e-4)
    assert np.allclose(bounds[:, 2] - bounds[:, 0], 1000, atol=1e-4)
    assert np.allclose(bounds[:, 3] - bounds[:, 1], 1000, atol=1e-4)
    assert np.allclose(bounds[:, 0] / 1000, grid["cell_x"]) and np.allclose(
        bounds[:, 1] / 1000, grid["cell_y"])


def test_total_area_per_driver_matches_the_polygons(tmp_path):
    # 64 disjoint squares (loss events never overlap) of 60 m to 1.5 km, off any cell line.
    rng = np.random.default_rng(3)
    squares = [(600_000 + 1_600 * i + rng.uniform(0, 50), 60_000 + 1_600 * j + rng.uniform(0, 50),
                rng.uniform(60, 1_500)) for i in range(8) for j in range(8)]
    drivers = [DRIVER_CLASSES[i] for i in rng.integers(0, 4, len(squares))]
    features = make_features(utm_squares(squares), drivers)
    grid = dominant_driver_grid(features)
    areas = features.to_crs(EQUAL_AREA_CRS.proj).area / 10_000
    for name, column in zip(DRIVER_CLASSES, AREA_COLUMNS, strict=True):
        assert grid[column].sum() == pytest.approx(areas[features["driver"] == name].sum(),
                                                   rel=0.01)
    assert (grid["loss_area_ha"] <= 100 + 1e-9).all()  # never more loss than the cell
    best = grid[list(AREA_COLUMNS)].to_numpy().argmax(axis=1)
    assert (grid["dominant_code"].to_numpy() == best + 1).all()


def test_cell_ids_do_not_depend_on_the_rest_of_the_run(two_driver_cell):
    alone = dominant_driver_grid(two_driver_cell.iloc[:1])
    together = dominant_driver_grid(two_driver_cell)
    assert alone["cell_id"].tolist() == [f"{X0 // 1000}:{Y0 // 1000}"]
    assert alone["cell_id"].iloc[0] in set(together["cell_id"])


def test_ties_go_to_the_earlier_class():
    geoms = [box(X0 + 10, Y0 + 10, X0 + 210, Y0 + 210),
             box(X0 + 500, Y0 + 10, X0 + 700, Y0 + 210)]
    grid = dominant_driver_grid(make_features(geoms, ["Other", "Smallholder agriculture"],
                                              crs=EA))
    assert grid["dominant_driver"].tolist() == ["Smallholder agriculture"]


def test_no_mapped_events_give_an_empty_grid_with_all_columns(two_driver_cell):
    grid = dominant_driver_grid(two_driver_cell.iloc[3:])
    assert grid.empty and grid.crs.to_epsg() == 4326
    assert {"cell_id", "dominant_driver", "gfw_class", *AREA_COLUMNS} <= set(grid.columns)


def test_crosswalk_covers_every_class_with_a_real_gfw_class():
    assert list(GFW_CROSSWALK) == list(DRIVER_CLASSES)
    for name, match in GFW_CROSSWALK.items():
        assert match.gfw_class in (*GFW_CLASSES, UNMAPPED), name
        assert match.fit in ("close", "partial", "none") and match.note
    assert GFW_CROSSWALK["Other"].gfw_class == UNMAPPED  # mixed: no honest single class
    assert len(GFW_CLASSES) == 7 and len(DRIVER_KEYS) == 4


def test_geopackage_has_the_layer_the_crosswalk_and_a_style(two_driver_cell, tmp_path):
    grid = dominant_driver_grid(two_driver_cell)
    path = tmp_path / "riau_grid.gpkg"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. GDAL's warning about a non-.gpkg name
        write_dominant_grid(grid, path)
        layers = dict(pyogrio.list_layers(path))
    assert layers[DOMINANT_GRID_LAYER] == "Polygon" and layers[CROSSWALK_TABLE] is None
    back = pyogrio.read_dataframe(path, layer=DOMINANT_GRID_LAYER)
    assert back.crs.to_epsg() == 4326
    assert back["cell_id"].tolist() == grid["cell_id"].tolist()
    assert np.allclose(back["area_ha_plantation"], grid["area_ha_plantation"])
    crosswalk = pyogrio.read_dataframe(path, layer=CROSSWALK_TABLE)
    assert dict(zip(crosswalk["driver"], crosswalk["gfw_class"], strict=True)) == {
        k: v.gfw_class for k, v in GFW_CROSSWALK.items()}
    with contextlib.closing(sqlite3.connect(path)) as con:
        styles = con.execute("SELECT f_table_name, styleQML, useAsDefault FROM layer_styles")
        ((table, qml, default),) = styles.fetchall()
        (rtree,) = con.execute(f"SELECT count(*) FROM rtree_{DOMINANT_GRID_LAYER}_geom").fetchone()
        (version,) = con.execute("PRAGMA user_version").fetchone()
    assert version == 10300  # GeoPackage 1.3: GDAL 3.6 and QGIS 3.22 open it without a warning
    assert (table, default) == (DOMINANT_GRID_LAYER, 1)
    assert 'attr="dominant_driver"' in qml and rtree == len(grid)
    assert [p.name for p in tmp_path.iterdir()] == ["riau_grid.gpkg"]


def test_write_rejects_a_frame_that_is_not_a_grid(two_driver_cell, tmp_path):
    with pytest.raises(ValueError, match="dominant_driver_grid"):
        write_dominant_grid(two_driver_cell, tmp_path / "x.gpkg")
    assert list(tmp_path.iterdir()) == []
