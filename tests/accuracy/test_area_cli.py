"""``forestnet area`` end to end: a sample-design GeoPackage or CSVs in, tables, chart and
report out, tables added to map GeoPackages; bad input gives one line, exit 2, no output."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import Point, box
from typer.testing import CliRunner

from flows.cli.app import app
from pipeline.accuracy.area_estimates import estimate
from pipeline.export.qgis_style import write_layer_style
from tests.accuracy.test_area_estimates import (
    HA_PER_PIXEL,
    OLOFSSON_CLASSES,
    OLOFSSON_COUNTS,
    OLOFSSON_PIXELS,
    expand,
)
from tests.reliability.bad_input_helpers import one_line_error

runner = CliRunner()
DRIVERS = ["Plantation", "Smallholder agriculture", "Grassland/shrubland", "Other"]
# Rows = map driver (= stratum), columns = reference driver.
COUNTS = np.array([[8, 1, 0, 1], [1, 6, 1, 0], [0, 1, 5, 2], [0, 0, 1, 6]])
SIZES_HA = [1_200.0, 800.0, 450.0, 300.0]
OUTPUTS = {"area_estimates.csv", "accuracy.csv", "error_matrix.csv", "area_estimates.png",
           "report.md"}


def write_sample_gpkg(path: Path, sample: pd.DataFrame, strata: pd.DataFrame) -> Path:
    """A labelled GeoPackage as forestnet sample-design writes it (then interpreters fill)."""
    n = len(sample)
    points = gpd.GeoDataFrame({
        "sample_id": np.arange(n, dtype="int32"), "stratum": sample["stratum"],
        "map_driver": sample["map_class"], "event_id": [f"e{i}" for i in range(n)],
        "loss_year": np.full(n, 2018, dtype="int32"), "province": "Riau",
        "reference_class": sample["reference_class"], "interpreter": "ana", "notes": "",
    }, geometry=[Point(101 + i / 1000, 0.5) for i in range(n)], crs="EPSG:4326")
    pyogrio.write_dataframe(points, path, layer="reference_points", driver="GPKG")
    pyogrio.write_dataframe(strata, path, layer="strata", driver="GPKG")
    return path


def driver_sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    sample = expand(COUNTS, DRIVERS)
    counts = sample["stratum"].value_counts()
    strata = pd.DataFrame({"stratum": DRIVERS, "size_ha": SIZES_HA,
                           "n": [int(counts[d]) for d in DRIVERS]})
    return sample, strata


@pytest.fixture
def sample_gpkg(tmp_path: Path) -> Path:
    return write_sample_gpkg(tmp_path / "reference_sample.gpkg", *driver_sample())


@pytest.fixture
def map_gpkg(tmp_path: Path) -> Path:
    """A driver map with its layer and QGIS style, as ``forestnet map`` writes one."""
    path = tmp_path / "maps" / "riau.gpkg"
    path.parent.mkdir()
    events = gpd.GeoDataFrame({"event_id": ["a", "b", "c"], "driver": DRIVERS[:3]},
                              geometry=[box(i, 0, i + 0.5, 0.5) for i in range(3)],
                              crs="EPSG:4326")
    pyogrio.write_dataframe(events, path, layer="forest_loss_drivers", driver="GPKG")
    write_layer_style(path, "forest_loss_drivers", "<qgis/>", "driver", "test style")
    return path


def csv_inputs(folder: Path, sample: pd.DataFrame, strata: pd.DataFrame) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    sample.to_csv(folder / "sample.csv", index=False)
    strata.to_csv(folder / "strata.csv", index=False)
    return ["--sample", str(folder / "sample.csv"), "--strata", str(folder / "strata.csv")]


def olofsson_csvs(folder: Path) -> list[str]:
    strata = pd.DataFrame({"stratum": OLOFSSON_CLASSES, "size": OLOFSSON_PIXELS * HA_PER_PIXEL})
    return csv_inputs(folder, expand(OLOFSSON_COUNTS, OLOFSSON_CLASSES), strata)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_sample_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["area", *olofsson_csvs(tmp_path / "in"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == OUTPUTS  # no temporaries left
    assert "Deforestation: 21,158 ± 6,158 (95% CI)" in result.stdout
    assert f"outputs in {out}: " in result.stdout and "report.md" in result.stdout

    area = pd.read_csv(out / "area_estimates.csv")
    assert list(area.columns) == ["class", "mapped_area", "area", "se", "ci95_low",
                                  "ci95_high"]
    deforestation = area.set_index("class").loc["Deforestation"]
    assert round(deforestation["area"]) == 21_158
    assert round(1.96 * deforestation["se"]) == 6_158
    assert deforestation["mapped_area"] == pytest.approx(18_000)
    accuracy = pd.read_csv(out / "accuracy.csv", keep_default_na=False)
    assert list(accuracy.columns) == ["class", "users", "users_se", "producers",
                                      "producers_se"]
    assert accuracy["class"].iloc[-1] == "overall"
    assert round(float(accuracy["users"].iloc[-1]), 2) == 0.95
    matrix = pd.read_csv(out / "error_matrix.csv", index_col=0)
    assert matrix.index.name == "map\\reference"
    assert matrix.to_numpy().sum() == pytest.approx(1.0)
    assert (out / "area_estimates.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    assert "- Deforestation: 21,158 ± 6,158 (95% CI)" in report
    assert "](area_estimates.png)" in report
    assert "| Stable non-forest | 580,500 | 325 |" in report  # n per stratum


def test_geopackage_sample_and_map_tables(tmp_path: Path, sample_gpkg: Path,
                                          map_gpkg: Path) -> None:
    sample, strata = driver_sample()
    expected = estimate(sample, strata.rename(columns={"size_ha": "size"}))
    out = tmp_path / "out"
    args = ["area", "--sample", str(sample_gpkg), "--map", str(map_gpkg), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == OUTPUTS
    area = pd.read_csv(out / "area_estimates.csv")
    pd.testing.assert_frame_equal(area, expected.area, check_dtype=False)
    accuracy = pd.read_csv(out / "accuracy.csv")
    pd.testing.assert_frame_equal(accuracy, expected.accuracy, check_dtype=False)
    plantation = expected.area.iloc[0]
    assert (f"Plantation: {plantation['area']:,.0f} ± {1.96 * plantation['se']:,.0f} ha "
            "(95% CI)") in result.stdout

    for _ in range(2):  # a second run replaces the tables, it does not add rows
        tables = {name for name, _ in pyogrio.list_layers(map_gpkg)}
        assert {"forest_loss_drivers", "driver_area_estimates", "driver_accuracy"} <= tables
        in_map = pyogrio.read_dataframe(map_gpkg, layer="driver_area_estimates")
        pd.testing.assert_frame_equal(in_map, expected.area, check_dtype=False)
        in_map = pyogrio.read_dataframe(map_gpkg, layer="driver_accuracy")
        pd.testing.assert_frame_equal(in_map, expected.accuracy, check_dtype=False)
        assert len(pyogrio.read_dataframe(map_gpkg, layer="forest_loss_drivers")) == 3
        with contextlib.closing(sqlite3.connect(map_gpkg)) as con:
            styles = con.execute("SELECT f_table_name, styleName FROM layer_styles").fetchall()
        assert styles == [("forest_loss_drivers", "driver")]
        assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in map_gpkg.parent.iterdir()) == ["riau.gpkg"]


def test_drop_unlabelled_leaves_them_out_and_says_so(tmp_path: Path) -> None:
    sample, strata = driver_sample()
    blank = pd.DataFrame({"stratum": ["Plantation"] * 3, "map_class": ["Plantation"] * 3,
                          "reference_class": [None, "", "Unsure"]})
    gpkg = write_sample_gpkg(tmp_path / "s.gpkg", pd.concat([sample, blank]), strata)
    out = tmp_path / "out"
    refused = runner.invoke(app, ["area", "--sample", str(gpkg), "--out", str(out)])
    message = one_line_error(refused)
    assert "3 of" in message and "--drop-unlabelled" in message and str(gpkg) in message
    assert not out.exists()

    result = runner.invoke(app, ["area", "--sample", str(gpkg), "--out", str(out),
                                 "--drop-unlabelled"])
    assert result.exit_code == 0, result.output
    assert "3 unlabelled points left out" in result.stdout
    assert "3 unlabelled points were left out" in (out / "report.md").read_text()
    expected = estimate(sample, strata.rename(columns={"size_ha": "size"}))
    area = pd.read_csv(out / "area_estimates.csv")
    pd.testing.assert_frame_equal(area, expected.area, check_dtype=False)


def _bad_csvs(folder: Path, case: str) -> tuple[list[str], str]:
    """Command-line arguments of one bad CSV input, and what the message must name."""
    sample, strata = driver_sample()
    strata = strata.rename(columns={"size_ha": "size"})[["stratum", "size"]]
    if case == "unknown stratum":
        sample.loc[0, "stratum"] = "Mining"
        return csv_inputs(folder, sample, strata), "'Mining'"
    if case == "size not positive":
        strata.loc[2, "size"] = 0
        return csv_inputs(folder, sample, strata), "'Grassland/shrubland'"
    if case == "missing column":
        return csv_inputs(folder, sample.drop(columns="reference_class"), strata), \
            "reference_class"
    if case == "one labelled point":
        sample = sample[(sample["stratum"] != "Other")
                        | ~sample.duplicated("stratum", keep="first")]
        return csv_inputs(folder, sample, strata), "'Other'"
    if case == "stratum without points":
        return csv_inputs(folder, sample[sample["stratum"] != "Other"], strata), "'Other'"
    if case == "no such file":
        return ["--sample", str(folder / "missing.csv"), "--strata", "x.csv"], "missing.csv"
    if case == "not csv or gpkg":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sample.xlsx").write_bytes(b"PK")
        return ["--sample", str(folder / "sample.xlsx")], "sample.xlsx"
    if case == "fake gpkg":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sample.gpkg").write_text("stratum,map_class\n")
        return ["--sample", str(folder / "sample.gpkg")], "sample.gpkg"
    if case == "csv without strata":
        return csv_inputs(folder, sample, strata)[:2], "--strata"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "unknown stratum", "size not positive", "missing column", "one labelled point",
    "stratum without points", "no such file", "not csv or gpkg", "fake gpkg",
    "csv without strata",
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, map_gpkg: Path,
                                                  case: str) -> None:
    args, named = _bad_csvs(tmp_path / "in", case)
    before = digest(map_gpkg)
    out = tmp_path / "out"
    result = runner.invoke(app, ["area", *args, "--map", str(map_gpkg), "--out", str(out)])
    assert named in one_line_error(result)
    assert not out.exists()
    assert digest(map_gpkg) == before
    assert sorted(p.name for p in map_gpkg.parent.iterdir()) == ["riau.gpkg"]


@pytest.mark.parametrize("bad", ["missing.gpkg", "not-a-map.gpkg"])
def test_bad_map_is_refused_before_anything_is_written(tmp_path: Path, map_gpkg: Path,
                                                       bad: str) -> None:
    bad_map = tmp_path / bad
    if bad == "not-a-map.gpkg":
        with contextlib.closing(sqlite3.connect(bad_map)) as con:  # SQLite, but no GPKG
            con.execute("CREATE TABLE t (x)")
    before = digest(map_gpkg)
    out = tmp_path / "out"
    result = runner.invoke(app, ["area", *olofsson_csvs(tmp_path / "in"), "--map",
                                 str(map_gpkg), "--map", str(bad_map), "--out", str(out)])
    assert bad in one_line_error(result)
    assert not out.exists()
    assert digest(map_gpkg) == before


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("keep")
    result = runner.invoke(app, ["area", *olofsson_csvs(tmp_path / "in"), "--out", str(out)])
    assert "out.txt" in one_line_error(result)
    assert out.read_text() == "keep"
