"""The reference sample design: allocations with literal numbers, the uniform pixel draw,
and the sample GeoPackage over driver maps built from pixels of a known grid."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from affine import Affine
from odc.geo import CRS
from shapely.geometry import Point, box
from shapely.ops import unary_union

from pipeline.accuracy.loss_pixel_grid import GFC_LOSS_GRID, LossPixelGrid
from pipeline.accuracy.reference_gpkg import (
    REFERENCE_CLASSES,
    REFERENCE_FIELDS,
    REFERENCE_LAYER,
    STRATA_TABLE,
    write_sample_design,
)
from pipeline.accuracy.sample_design import (
    SampleDesignError,
    allocate,
    apportion,
    design_sample,
    draw_stratum,
)
from pipeline.core.drivers import DRIVER_KEYS, driver_code
from pipeline.export.geopackage import (
    DRIVER_MAP_LAYER,
    add_area_ha,
    empty_driver_frame,
    write_driver_geopackage,
)

#: A lattice that is not GFC's (other pixel size and origin), recorded in the map.
GRID = Affine(0.001, 0.0, 112.0003, 0.0, -0.001, -1.0007)
GFC = GFC_LOSS_GRID.affine


def block(row: int, col: int, height: int, width: int) -> list[tuple[int, int]]:
    """The (row, col) cells of a rectangle of pixels."""
    return [(r, c) for r in range(row, row + height) for c in range(col, col + width)]


def pixel_polygon(cells: list[tuple[int, int]], grid: Affine = GRID):
    """The union of whole pixels (row, col) of ``grid``: a map event's polygon."""
    return unary_union([box(*(grid @ (c, r + 1)), *(grid @ (c + 1, r))) for r, c in cells])


#: event_id -> (driver, province, cells). Plantation has events of 10 and 30 pixels;
#: Smallholder agriculture holds fewer than 50 pixels (min50 takes all of them).
EVENTS: dict[str, tuple[str, str, list[tuple[int, int]]]] = {
    "ev-a": ("Plantation", "Riau", block(0, 0, 2, 5)),
    "ev-b": ("Plantation", "Jambi", block(10, 10, 3, 10)),
    "ev-c": ("Smallholder agriculture", "Riau", block(0, 30, 3, 4)),
    # An L shape: its bounding box holds pixels that are not the event's.
    "ev-d": ("Other", "Riau", block(20, 20, 20, 10) + block(20, 30, 5, 30)),
    "ev-e": ("Other", "Jambi", block(50, 0, 10, 10)),
}


def write_map(path: Path, events: dict = EVENTS, grid: Affine | None = GRID) -> Path:
    """A driver map of ``events`` on ``grid``, recorded in its metadata (None: not recorded,
    and the events lie on GFC's lattice)."""
    rows = [{
        "event_id": event_id, "province": province, "loss_year": 2018, "driver": driver,
        "driver_code": driver_code(driver), **{f"p_{k}": 0.25 for k in DRIVER_KEYS},
        "confidence": 0.25, "n_pixels": len(cells), "scene_ids": "", "scene_dates": "",
        "model_id": "m", "run_id": "r", "geometry": pixel_polygon(cells, grid or GFC),
    } for event_id, (driver, province, cells) in events.items()]
    frame = gpd.GeoDataFrame(rows, crs="EPSG:4326") if rows else empty_driver_frame()
    metadata = {"run_id": "r"}
    if grid is not None:
        metadata["loss_pixel_grid"] = json.dumps({"crs": "EPSG:4326",
                                                  "transform": list(grid)[:6]})
    return write_driver_geopackage(add_area_ha(frame), path, metadata=metadata)


def _table(size_ha: list[float], n_pixels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"stratum": [f"s{i}" for i in range(len(size_ha))],
                         "size_ha": size_ha, "n_pixels": n_pixels})


# --- allocation -------------------------------------------------------------------------

@pytest.mark.parametrize(("allocation", "size_ha", "n_pixels", "n", "expected"), [
    ("proportional", [100, 300, 600], [1000] * 3, 10, [1, 3, 6]),
    ("proportional", [1, 1, 1], [1000] * 3, 10, [4, 3, 3]),  # ties go to the first
    ("proportional", [10, 10, 80], [1000, 1000, 5], 20, [8, 7, 5]),  # capped, redistributed
    ("equal", [1, 50, 900], [1000, 1000, 1000], 10, [4, 3, 3]),
    ("equal", [1, 50, 900], [1000, 3, 1000], 11, [4, 3, 4]),
    # min50: 50 + 40 + 12 first; the other 18 in proportion to area where pixels remain.
    ("min50", [900, 90, 10], [10_000, 40, 12], 120, [68, 40, 12]),
    ("min50", [900, 90, 10], [10_000, 10_000, 20], 200, [123, 57, 20]),
    ("min50", [1, 2, 3], [1000] * 3, 30, [10, 10, 10]),  # 150 > 30: equal instead
    ("min50", [5, 5], [3, 4], 100, [3, 4]),  # fewer pixels than n: all of them
    ("equal", [5, 5], [3, 4], 100, [3, 4]),
    ("proportional", [5, 5], [3, 4], 100, [3, 4]),
])
def test_allocations_with_literal_numbers(allocation, size_ha, n_pixels, n, expected) -> None:
    got = allocate(_table(size_ha, n_pixels), n, allocation)
    assert got.tolist() == expected


def test_apportion_sums_exactly_and_respects_caps() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        h = int(rng.integers(1, 8))
        weights, caps = rng.random(h) * 1000, rng.integers(0, 200, h)
        total = int(rng.integers(0, 600))
        got = apportion(total, weights, caps)
        assert got.sum() == min(total, caps.sum()) and (got <= caps).all() and (got >= 0).all()


def test_sample_smaller_than_strata_and_unknown_names_are_errors() -> None:
    table = _table([1, 2, 3], [100] * 3)
    with pytest.raises(SampleDesignError, match=r"sample of 2 .* the 3 strata"):
        allocate(table, 2)
    with pytest.raises(SampleDesignError, match="min50, equal, proportional"):
        allocate(table, 10, "neyman")
    frame = pd.DataFrame({"driver": ["Other"], "province": ["Riau"], "area_ha": [1.0],
                          "n_pixels": [1]})
    with pytest.raises(SampleDesignError, match="driver, driver,province"):
        design_sample(frame, 5, lambda r, k: np.zeros((len(r), 2)), strata="province")


# --- the draw ---------------------------------------------------------------------------

def _fake_locate(actual: list[int]):
    """Pixel k of event e is at (e, k); NaN past the event's ``actual`` pixel count."""
    actual_ = np.asarray(actual)

    def locate(rows: np.ndarray, ks: np.ndarray) -> np.ndarray:
        xy = np.column_stack([rows, ks]).astype(float)
        xy[ks >= actual_[rows]] = np.nan
        return xy

    return locate


def test_every_pixel_has_the_same_chance() -> None:
    counts, draws = np.array([10, 30]), 4000
    rng = np.random.default_rng(1)
    hits = np.zeros(40, int)
    for _ in range(draws):
        rows, xy = draw_stratum(counts, 1, rng, _fake_locate([10, 30]))
        hits[int(xy[0, 0]) * 10 + int(xy[0, 1])] += 1
    # Binomial(4000, 1/4) events (sd 27) and Binomial(4000, 1/40) pixels (sd 9.9): 5 sd.
    assert abs(hits[:10].sum() - 1000) < 140
    assert hits.min() > 50 and hits.max() < 150


def test_draw_is_without_replacement_and_skips_missing_pixels(caplog) -> None:
    rng = np.random.default_rng(0)
    rows, xy = draw_stratum(np.array([10, 30]), 40, rng, _fake_locate([10, 30]))
    assert sorted(map(tuple, xy.astype(int).tolist())) == [(0, k) for k in range(10)] + [
        (1, k) for k in range(30)]
    assert (rows == xy[:, 0]).all()
    # Event 0 holds only 5 of its 10 pixels: 35 exist, and a sample of 40 gets all 35.
    rows, xy = draw_stratum(np.array([10, 30]), 40, rng, _fake_locate([5, 30]))
    assert len(xy) == 35 and len(set(map(tuple, xy.tolist()))) == 35
    assert "drew 35 of 40" in caplog.text


def _features() -> pd.DataFrame:
    rows = [{"event_id": eid, "province": prov, "loss_year": 2018, "driver": drv,
             "area_ha": len(cells) * 0.09, "n_pixels": len(cells)}
            for eid, (drv, prov, cells) in EVENTS.items()]
    return pd.DataFrame(rows)


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    features = _features()
    locate = _fake_locate(features["n_pixels"].tolist())
    first, table = design_sample(features, 80, locate, seed=7)
    again, _ = design_sample(features, 80, locate, seed=7)
    other, _ = design_sample(features, 80, locate, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first[["x", "y"]].equals(other[["x", "y"]])
    assert first["sample_id"].tolist() == list(range(1, 81))
    assert table["n"].sum() == 80 and table["stratum"].is_monotonic_increasing


def test_strata_of_driver_and_province() -> None:
    features = _features()
    points, table = design_sample(features, 60, _fake_locate(features["n_pixels"].tolist()),
                                  strata="driver,province", allocation="equal")
    assert table["stratum"].tolist() == ["Other | Jambi", "Other | Riau", "Plantation | Jambi",
                                         "Plantation | Riau", "Smallholder agriculture | Riau"]
    assert table["n_pixels"].tolist() == [100, 350, 30, 10, 12]
    # 12 each, but Plantation | Riau has 10 pixels and Smallholder 12: the rest goes to the
    # other three, 38 / 3 each, the spare two to the first two.
    assert table["n"].tolist() == [13, 13, 12, 10, 12]
    assert (points["stratum"] == points["map_driver"] + " | " + points["province"]).all()


# --- the GeoPackage ---------------------------------------------------------------------

def _pixel_centre(x: np.ndarray, y: np.ndarray, grid: Affine) -> bool:
    col, row = (x - grid.c) / grid.a - 0.5, (y - grid.f) / grid.e - 0.5
    return bool(np.allclose(col, np.round(col), atol=1e-6)
                and np.allclose(row, np.round(row), atol=1e-6))


def _style(path: Path) -> ET.Element:
    with contextlib.closing(sqlite3.connect(path)) as con:
        ((qml,),) = con.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = ? "
                                "AND useAsDefault = 1", (REFERENCE_LAYER,)).fetchall()
    return ET.fromstring(qml.split("\n", 1)[1])


def test_sample_geopackage(tmp_path: Path) -> None:
    map_path = write_map(tmp_path / "maps" / "riau.gpkg")
    out = tmp_path / "sample" / "reference_sample.gpkg"
    design = write_sample_design([map_path], out, 120, seed=3)
    assert [name for name, _ in pyogrio.list_layers(out)] == [
        REFERENCE_LAYER, STRATA_TABLE, "layer_styles"]
    info = pyogrio.read_info(out, layer=REFERENCE_LAYER)
    assert info["crs"] == "EPSG:4326" and info["geometry_type"] == "Point"
    assert list(info["fields"]) == list(REFERENCE_FIELDS)
    text = {f: t for f, t in zip(info["fields"], info["ogr_types"], strict=True)}
    assert all(text[f] == "OFTString" for f in ("reference_class", "interpreter", "notes"))
    assert info["layer_metadata"]["seed"] == "3" and info["layer_metadata"]["n"] == "120"
    points = pyogrio.read_dataframe(out, layer=REFERENCE_LAYER)
    assert len(points) == design.n_points == 120
    assert points["sample_id"].tolist() == list(range(1, 121))
    assert points[["reference_class", "interpreter", "notes"]].isna().all().all()
    # Each point: a distinct pixel centre of the grid, inside its event, with its fields.
    events = pyogrio.read_dataframe(map_path, layer=DRIVER_MAP_LAYER).set_index("event_id")
    assert _pixel_centre(points.geometry.x.to_numpy(), points.geometry.y.to_numpy(), GRID)
    assert not points.geometry.to_wkb().duplicated().any()
    for point in points.itertuples():
        event = events.loc[point.event_id]
        assert event.geometry.contains(point.geometry)
        assert (point.map_driver, point.province, point.loss_year) == (
            event.driver, event.province, event.loss_year)
    assert (points["stratum"] == points["map_driver"]).all()
    # min50: 50 + 40 + 12, the other 18 to Other (the only stratum with pixels left).
    strata = pyogrio.read_dataframe(out, layer=STRATA_TABLE)
    assert strata["stratum"].tolist() == ["Other", "Plantation", "Smallholder agriculture"]
    assert strata["n"].tolist() == [68, 40, 12] and strata["n_pixels"].tolist() == [450, 40, 12]
    assert strata["n"].tolist() == points.groupby("stratum").size().tolist()
    sizes = events.groupby("driver")["area_ha"].sum()
    assert np.allclose(strata["size_ha"], sizes.loc[strata["stratum"]].to_numpy())
    # Smallholder agriculture has 12 pixels: the sample holds every one of them.
    smallholder = points[points["stratum"] == "Smallholder agriculture"].geometry
    centres = {(round(GRID.c + (c + 0.5) * GRID.a, 6), round(GRID.f + (r + 0.5) * GRID.e, 6))
               for r, c in EVENTS["ev-c"][2]}
    assert {(round(p.x, 6), round(p.y, 6)) for p in smallholder} == centres
    # Nothing but the two files is left behind: no temporaries, sidecars or .aux.xml.
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert sorted(p.name for p in map_path.parent.iterdir()) == [map_path.name]


def test_style_colours_by_driver_and_offers_reference_classes(tmp_path: Path) -> None:
    out = write_sample_design([write_map(tmp_path / "m.gpkg")], tmp_path / "s.gpkg", 60).path
    root = _style(out)
    assert set(root.get("styleCategories").split("|")) >= {"Symbology", "Fields", "Forms"}
    assert root.find("renderer-v2").get("attr") == "map_driver"
    assert root.find("layerGeometryType").text == "0"  # points
    widgets = {f.get("name"): f.find("editWidget") for f in root.iter("field")
               if f.find("editWidget") is not None}
    value_map = widgets["reference_class"]
    assert value_map.get("type") == "ValueMap"
    entries = value_map.findall("config/Option[@type='Map']/Option[@name='map']/Option")
    values = [(e[0].get("name"), e[0].get("value")) for e in entries]
    assert values == [(c, c) for c in REFERENCE_CLASSES] and len(values) == 6
    assert {widgets["interpreter"].get("type"), widgets["notes"].get("type")} == {"TextEdit"}
    editable = {f.get("name"): f.get("editable") for f in root.find("editable")}
    assert editable["reference_class"] == editable["notes"] == "1"
    assert editable["sample_id"] == editable["map_driver"] == "0"


def test_maps_without_a_grid_use_gfc_lattice_and_maps_add_up(tmp_path: Path, caplog) -> None:
    riau = write_map(tmp_path / "riau.gpkg")
    jambi_events = {f"j{k}": v for k, v in EVENTS.items() if k != "ev-c"}
    jambi = write_map(tmp_path / "jambi.gpkg", jambi_events, grid=None)
    empty = write_map(tmp_path / "empty.gpkg", {})
    with caplog.at_level(logging.WARNING):
        design = write_sample_design([riau, jambi, empty], tmp_path / "s.gpkg", 300, seed=1)
    assert "jambi.gpkg records no loss_pixel_grid" in caplog.text
    assert "empty.gpkg: the map holds no loss events; skipping it" in caplog.text
    assert design.strata["n_pixels"].tolist() == [900, 80, 12]
    points = pyogrio.read_dataframe(design.path, layer=REFERENCE_LAYER)
    gfc = points["event_id"].str.startswith("j")
    assert 0 < gfc.sum() < len(points) == 300
    xy = points.geometry.get_coordinates().to_numpy()
    assert _pixel_centre(xy[gfc, 0], xy[gfc, 1], GFC)
    assert _pixel_centre(xy[~gfc, 0], xy[~gfc, 1], GRID)
    for point in points[gfc].itertuples():
        assert pixel_polygon(jambi_events[point.event_id][2], GFC).contains(point.geometry)


def test_same_seed_same_file_points(tmp_path: Path) -> None:
    map_path = write_map(tmp_path / "m.gpkg")
    read = lambda p: pyogrio.read_dataframe(p, layer=REFERENCE_LAYER)  # noqa: E731
    first = read(write_sample_design([map_path], tmp_path / "a.gpkg", 70, seed=5).path)
    again = read(write_sample_design([map_path], tmp_path / "b.gpkg", 70, seed=5).path)
    other = read(write_sample_design([map_path], tmp_path / "c.gpkg", 70, seed=6).path)
    assert first.geometry.equals(again.geometry) and first["event_id"].equals(again["event_id"])
    assert not first.geometry.equals(other.geometry)


def test_bad_maps_are_named(tmp_path: Path) -> None:
    out = tmp_path / "out.gpkg"
    empty = write_map(tmp_path / "empty.gpkg", {})
    with pytest.raises(SampleDesignError, match=r"empty.gpkg: the map holds no loss events"):
        write_sample_design([empty], out, 10)
    text = tmp_path / "notes.gpkg"
    text.write_text("not a geopackage")
    with pytest.raises(SampleDesignError, match="notes.gpkg is not a driver map GeoPackage"):
        write_sample_design([text], out, 10)
    sample = write_sample_design([write_map(tmp_path / "m.gpkg")], tmp_path / "s.gpkg", 10).path
    with pytest.raises(SampleDesignError, match="s.gpkg is not a driver map GeoPackage"):
        write_sample_design([sample], out, 10)
    with pytest.raises(SampleDesignError, match="event ev-a is in .*m.gpkg and .*m.gpkg"):
        write_sample_design([tmp_path / "m.gpkg", tmp_path / "m.gpkg"], out, 10)
    with pytest.raises(FileNotFoundError, match="missing.gpkg"):
        write_sample_design([tmp_path / "missing.gpkg"], out, 10)
    assert not out.exists()


def test_grid_metadata_is_checked() -> None:
    assert LossPixelGrid.from_metadata(GFC_LOSS_GRID.to_metadata()) == GFC_LOSS_GRID
    with pytest.raises(ValueError, match="loss_pixel_grid"):
        LossPixelGrid.from_metadata('{"crs": "EPSG:4326"}')
    with pytest.raises(ValueError, match="north-up"):
        LossPixelGrid(Affine(0.1, 0.01, 0, 0, -0.1, 0), GFC_LOSS_GRID.crs)


def test_pixels_of_a_projected_grid_come_back_in_lon_lat() -> None:
    utm = Affine(30.0, 0.0, 500_010.0, 0.0, -30.0, -99_990.0)
    grid = LossPixelGrid(utm, CRS("EPSG:32649"))
    cells = block(3, 4, 2, 3) + block(5, 4, 4, 1)
    polygon = gpd.GeoSeries([pixel_polygon(cells, utm)], crs="EPSG:32649").to_crs("EPSG:4326")
    lonlat = grid.pixel_centres(polygon.iloc[0])
    back = gpd.GeoSeries([Point(x, y) for x, y in lonlat], crs="EPSG:4326").to_crs("EPSG:32649")
    got = sorted(zip(back.x.round(3), back.y.round(3), strict=True))
    assert got == sorted(utm @ (c + 0.5, r + 0.5) for r, c in cells)
