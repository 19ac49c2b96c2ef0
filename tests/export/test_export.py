"""Tests for the driver-map GeoPackage writer and its QGIS style."""

from __future__ import annotations

import os
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from pyproj import Geod
from shapely.geometry import MultiPolygon, box

from pipeline.core.drivers import DRIVER_CLASSES, DRIVER_COLOURS, DRIVER_KEYS, driver_code
from pipeline.export import geopackage as export
from pipeline.export.geopackage import (
    AREA_TABLE,
    DRIVER_MAP_FIELDS,
    DRIVER_MAP_LAYER,
    add_area_ha,
    driver_area_by_year,
    empty_driver_frame,
    write_driver_geopackage,
)
from pipeline.export.qgis_style import categorized_qml, write_layer_style

METADATA = {"run_id": "run-7", "bundle_sha256": "abc123", "config": "province: Riau\nyear: 2018"}
RTREE = f"rtree_{DRIVER_MAP_LAYER}_geom"


def _features(n: int = 6, start: int = 0) -> gpd.GeoDataFrame:
    """``n`` small squares across 2 provinces and 2 years, with probabilities summing to 1."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=n)
    rows = []
    for i in range(n):
        j = start + i
        driver = DRIVER_CLASSES[int(probs[i].argmax())]
        rows.append(
            {
                "event_id": f"ev-{j:04d}",
                "province": ("Riau", "Jambi")[j % 2],
                "loss_year": 2016 + (j // 2) % 2,
                "driver": driver,
                "driver_code": driver_code(driver),
                **{f"p_{k}": float(p) for k, p in zip(DRIVER_KEYS, probs[i], strict=True)},
                "confidence": float(probs[i].max()),
                "n_pixels": 10 + j,
                "scene_ids": "LC08_A,LC08_B",
                "scene_dates": "2017-01-02,2017-03-04",
                "model_id": "forestnet-v1",
                "run_id": "run-7",
            }
        )
    geoms = [box(101 + 0.02 * j, 0.5, 101.01 + 0.02 * j, 0.51) for j in range(start, start + n)]
    return add_area_ha(gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4326"))


@pytest.fixture
def features() -> gpd.GeoDataFrame:
    return _features()


@pytest.fixture
def gpkg(tmp_path: Path, features: gpd.GeoDataFrame) -> Path:
    return write_driver_geopackage(features, tmp_path / "riau.gpkg", metadata=METADATA)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_layer_and_table_are_listed_with_fields_type_and_crs(gpkg: Path) -> None:
    layers = {name: kind for name, kind in pyogrio.list_layers(gpkg)}
    assert layers == {DRIVER_MAP_LAYER: "MultiPolygon", AREA_TABLE: None, "layer_styles": None}
    info = pyogrio.read_info(gpkg, layer=DRIVER_MAP_LAYER)
    assert list(info["fields"]) == list(DRIVER_MAP_FIELDS)
    assert info["geometry_type"] == "MultiPolygon"
    assert info["crs"] == "EPSG:4326"
    dtypes = dict(zip(info["fields"], info["dtypes"], strict=True))
    assert dtypes["loss_year"] == "int32" and dtypes["driver_code"] == "int16"
    assert dtypes["n_pixels"] == "int32" and dtypes["confidence"] == "float64"
    with sqlite3.connect(gpkg) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47


def test_features_round_trip(gpkg: Path, features: gpd.GeoDataFrame) -> None:
    assert sorted(p.name for p in gpkg.parent.iterdir()) == ["riau.gpkg"]  # no temp, no sidecar
    back = pyogrio.read_dataframe(gpkg, layer=DRIVER_MAP_LAYER)
    assert len(back) == len(features)
    assert (back.geom_type == "MultiPolygon").all()
    pd.testing.assert_frame_equal(
        pd.DataFrame(back[list(DRIVER_MAP_FIELDS)]),
        pd.DataFrame(features[list(DRIVER_MAP_FIELDS)]),
        check_dtype=False,
    )
    assert back.geometry.geom_equals(features.geometry).all()


def test_rtree_has_one_row_per_feature(gpkg: Path, features: gpd.GeoDataFrame) -> None:
    with sqlite3.connect(gpkg) as con:
        (count,) = con.execute(f'SELECT count(*) FROM "{RTREE}"').fetchone()
        ext = con.execute(
            "SELECT count(*) FROM gpkg_extensions WHERE table_name = ? AND extension_name = ?",
            (DRIVER_MAP_LAYER, "gpkg_rtree_index"),
        ).fetchone()[0]
    assert count == len(features) and ext == 1


def test_area_is_equal_area_not_degrees() -> None:
    square = box(120.0, 0.0, 120.01, 0.01)
    frame = add_area_ha(gpd.GeoDataFrame(geometry=[square], crs="EPSG:4326"))
    geodesic_ha = abs(Geod(ellps="WGS84").geometry_area_perimeter(square)[0]) / 10_000
    assert frame["area_ha"].iloc[0] == pytest.approx(geodesic_ha, rel=1e-3)
    assert frame["area_ha"].iloc[0] != pytest.approx(square.area, rel=0.5)
    # The same area comes out whatever CRS the input is in.
    utm = add_area_ha(frame.to_crs("EPSG:32651"))
    assert utm["area_ha"].iloc[0] == pytest.approx(frame["area_ha"].iloc[0], rel=1e-9)


def test_area_table_sums_match(gpkg: Path, features: gpd.GeoDataFrame) -> None:
    table = pyogrio.read_dataframe(gpkg, layer=AREA_TABLE, read_geometry=False)
    assert list(table.columns) == ["province", "year", "driver", "area_ha", "n_events"]
    assert table["area_ha"].sum() == pytest.approx(features["area_ha"].sum())
    assert table["n_events"].sum() == len(features)
    assert set(table["province"]) == {"Riau", "Jambi"} and set(table["year"]) == {2016, 2017}
    expected = driver_area_by_year(features)
    assert not expected.duplicated(["province", "year", "driver"]).any()
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert list(expected.itertuples(index=False)) == sorted(expected.itertuples(index=False))


def test_layer_style_is_default_with_four_coloured_categories(gpkg: Path) -> None:
    with sqlite3.connect(gpkg) as con:
        rows = con.execute(
            "SELECT styleQML, useAsDefault, f_geometry_column FROM layer_styles "
            "WHERE f_table_name = ?",
            (DRIVER_MAP_LAYER,),
        ).fetchall()
        kind = con.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert kind == ("attributes",)
    assert len(rows) == 1 and rows[0][1] == 1 and rows[0][2] == "geom"
    root = ET.fromstring(rows[0][0].split("\n", 1)[1])  # skip the DOCTYPE line
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "categorizedSymbol"
    assert renderer.get("attr") == "driver"
    categories = renderer.findall("categories/category")
    assert [c.get("value") for c in categories] == list(DRIVER_CLASSES)
    assert [c.get("label") for c in categories] == list(DRIVER_CLASSES)
    fills = [
        renderer.find(
            f"symbols/symbol[@name='{c.get('symbol')}']/layer/Option/Option[@name='color']"
        )
        for c in categories
    ]
    for fill, name in zip(fills, DRIVER_CLASSES, strict=True):
        hex_colour = DRIVER_COLOURS[name].lstrip("#")
        rgb = [int(hex_colour[i : i + 2], 16) for i in (0, 2, 4)]
        assert fill is not None and fill.get("value") == ",".join(map(str, [*rgb, 255]))


def test_qml_outline_is_darker_and_other_geometries_work() -> None:
    root = ET.fromstring(categorized_qml().split("\n", 1)[1])
    layer = root.find("renderer-v2/symbols/symbol/layer")
    assert layer is not None and layer.get("class") == "SimpleFill"
    options = {o.get("name"): o.get("value") for o in layer.iter("Option") if o.get("name")}
    fill = [int(v) for v in options["color"].split(",")[:3]]
    outline = [int(v) for v in options["outline_color"].split(",")[:3]]
    assert all(o <= f for o, f in zip(outline, fill, strict=True)) and outline != fill
    assert 'class="SimpleMarker"' in categorized_qml(geometry="point")
    with pytest.raises(ValueError, match="polygon"):
        categorized_qml(geometry="raster")


def test_metadata_round_trips(gpkg: Path) -> None:
    info = pyogrio.read_info(gpkg, layer=DRIVER_MAP_LAYER)
    assert METADATA.items() <= info["layer_metadata"].items()
    # Reading must not leave a GDAL .aux.xml sidecar next to the user's file.
    gpd.read_file(gpkg, layer=DRIVER_MAP_LAYER)
    assert not Path(f"{gpkg}.aux.xml").exists()


def test_missing_fields_are_named(tmp_path: Path, features: gpd.GeoDataFrame) -> None:
    broken = features.drop(columns=["confidence", "run_id"])
    with pytest.raises(ValueError, match="confidence, run_id"):
        write_driver_geopackage(broken, tmp_path / "x.gpkg", metadata=METADATA)
    assert not (tmp_path / "x.gpkg").exists()


def test_no_crs_and_unknown_driver_are_rejected(tmp_path: Path, features) -> None:
    with pytest.raises(ValueError, match="no CRS"):
        no_crs = features.set_crs(None, allow_override=True)
        write_driver_geopackage(no_crs, tmp_path / "x.gpkg", metadata={})
    bad = features.assign(driver="Mining")
    with pytest.raises(ValueError, match="Mining"):
        write_driver_geopackage(bad, tmp_path / "x.gpkg", metadata={})


def test_other_crs_and_polygons_are_normalised(tmp_path: Path, features) -> None:
    projected = features.to_crs("EPSG:32647")
    out = write_driver_geopackage(projected, tmp_path / "p.gpkg", metadata={})
    back = pyogrio.read_dataframe(out, layer=DRIVER_MAP_LAYER)
    assert back.crs == "EPSG:4326" and isinstance(back.geometry.iloc[0], MultiPolygon)
    assert back.geometry.iloc[0].equals_exact(MultiPolygon([features.geometry.iloc[0]]), 1e-7)


def test_failure_mid_write_leaves_nothing(tmp_path: Path, features, monkeypatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write_area_table", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_driver_geopackage(features, tmp_path / "riau.gpkg", metadata=METADATA)
    assert list(tmp_path.iterdir()) == []


def test_failed_rerun_keeps_old_file_and_rerun_replaces_it(gpkg: Path, monkeypatch) -> None:
    before = gpkg.read_bytes()
    monkeypatch.setattr(export, "_write_area_table", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_driver_geopackage(_features(3, start=50), gpkg, metadata=METADATA)
    assert gpkg.read_bytes() == before and _leftovers(gpkg.parent) == []
    monkeypatch.undo()
    write_driver_geopackage(_features(3, start=50), gpkg, metadata={"run_id": "run-8"})
    back = pyogrio.read_dataframe(gpkg, layer=DRIVER_MAP_LAYER)
    assert list(back["event_id"]) == ["ev-0050", "ev-0051", "ev-0052"]
    metadata = pyogrio.read_info(gpkg, layer=DRIVER_MAP_LAYER)["layer_metadata"]
    assert metadata["run_id"] == "run-8"
    assert _leftovers(gpkg.parent) == []


def test_read_only_folder_gives_clear_error(tmp_path: Path, features) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:  # root (or a permissive filesystem) ignores the mode bits
            probe.unlink()
            pytest.skip("chmod does not stop writes here (running as root?)")
        target = folder / "riau.gpkg"
        with pytest.raises(PermissionError, match=str(target)):
            write_driver_geopackage(features, target, metadata=METADATA)
    finally:
        folder.chmod(0o755)


def test_unwritable_folder_error_names_path(tmp_path: Path, features, monkeypatch) -> None:
    """The same check without relying on chmod, so it also runs as root."""

    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    target = tmp_path / "out" / "riau.gpkg"
    with pytest.raises(PermissionError, match="riau.gpkg.*not writable"):
        write_driver_geopackage(features, target, metadata=METADATA)
    assert not target.exists() and _leftovers(target.parent) == []


def test_scene_lists_become_comma_separated_text(tmp_path: Path, features) -> None:
    listed = features.assign(scene_ids=[["LC08_A", "LC08_B"]] * len(features))
    out = write_driver_geopackage(listed, tmp_path / "l.gpkg", metadata={})
    back = pyogrio.read_dataframe(out, layer=DRIVER_MAP_LAYER, read_geometry=False)
    assert set(back["scene_ids"]) == {"LC08_A,LC08_B"}


def test_restyling_keeps_one_default(gpkg: Path) -> None:
    write_layer_style(gpkg, DRIVER_MAP_LAYER, categorized_qml(), "second")
    with sqlite3.connect(gpkg) as con:
        rows = con.execute(
            "SELECT styleName, useAsDefault FROM layer_styles ORDER BY id"
        ).fetchall()
    assert rows == [("driver", 0), ("second", 1)]


def test_empty_input_writes_valid_empty_geopackage(tmp_path: Path) -> None:
    empty = empty_driver_frame()
    assert list(empty.columns) == [*DRIVER_MAP_FIELDS, "geometry"] and empty.crs == "EPSG:4326"
    out = write_driver_geopackage(empty, tmp_path / "empty.gpkg", metadata=METADATA)
    info = pyogrio.read_info(out, layer=DRIVER_MAP_LAYER)
    assert info["features"] == 0 and info["geometry_type"] == "MultiPolygon"
    assert list(info["fields"]) == list(DRIVER_MAP_FIELDS)
    table = pyogrio.read_info(out, layer=AREA_TABLE)
    assert table["features"] == 0
    assert list(table["fields"]) == ["province", "year", "driver", "area_ha", "n_events"]
    with sqlite3.connect(out) as con:
        assert con.execute(f'SELECT count(*) FROM "{RTREE}"').fetchone() == (0,)
    assert {name for name, _ in pyogrio.list_layers(out)} >= {DRIVER_MAP_LAYER, AREA_TABLE}
    assert os.path.getsize(out) > 0


def test_maps_are_geopackage_1_3_so_gdal_3_6_and_qgis_3_22_open_them_quietly(
        gpkg: Path, tmp_path: Path) -> None:
    empty = write_driver_geopackage(empty_driver_frame(), tmp_path / "empty.gpkg",
                                    metadata=METADATA)
    for path in (gpkg, empty):
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA user_version").fetchone() == (10300,)  # not 1.4
            assert con.execute("PRAGMA application_id").fetchone() == (0x47504B47,)
            # The style table is an 'attributes' table, which 1.2 and later know.
            assert con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = "
                               "'layer_styles'").fetchone() == ("attributes",)
