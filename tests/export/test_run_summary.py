"""Tests for the run summary: areas per driver/province/year, JSON round trip, markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.export.run_summary import (
    SUMMARY_SCHEMA,
    render_summary_markdown,
    summarise_run,
)
from tests.mapped_features import NO_IMAGERY, make_features, utm_squares

DRIVERS = ["Plantation", "Plantation", "Smallholder agriculture", "Other", NO_IMAGERY,
           "Plantation"]
PROVINCES = ["Riau", "Riau", "Riau", "Jambi", "Jambi", "Jambi"]
YEARS = [2017, 2018, 2018, 2018, 2018, 2017]


@pytest.fixture
def features():
    squares = [(600_000 + 2_000 * i, 60_000, 300 + 100 * i) for i in range(len(DRIVERS))]
    return make_features(utm_squares(squares), DRIVERS, provinces=PROVINCES, years=YEARS)


@pytest.fixture
def summary(features):
    return summarise_run(features, 12, 3, 1, 3725.5, {"run_id": "abc", "n": np.int64(7),
                                                      "out": Path("/maps/riau.gpkg")})


def test_driver_areas_equal_input_sums_and_no_imagery_is_kept_apart(features, summary):
    mapped = features[features["driver_code"] > 0]
    expected = mapped.groupby("driver")["area_ha"].sum()
    for name in DRIVER_CLASSES:
        row = summary["drivers"][name]
        assert row["area_ha"] == pytest.approx(expected.get(name, 0.0), rel=1e-12)
        assert row["n_events"] == int((mapped["driver"] == name).sum())
    assert summary["drivers"]["Grassland shrubland"] == {
        "code": 3, "n_events": 0, "area_ha": 0.0, "share": 0.0}
    assert summary["area_ha"]["mapped"] == pytest.approx(mapped["area_ha"].sum())
    no_imagery = features.loc[features["driver"] == NO_IMAGERY, "area_ha"].sum()
    assert summary["area_ha"]["no_imagery"] == pytest.approx(no_imagery)
    assert summary["events"] == {"total": 6, "mapped": 5, "no_imagery": 1}
    assert sum(r["share"] for r in summary["drivers"].values()) == pytest.approx(1.0)


def test_province_year_rows_partition_the_driver_areas(features, summary):
    rows = summary["by_province_year"]
    assert {(r["province"], r["year"], r["driver"]) for r in rows} == {
        ("Jambi", 2017, "Plantation"), ("Jambi", 2018, "Other"), ("Riau", 2017, "Plantation"),
        ("Riau", 2018, "Plantation"), ("Riau", 2018, "Smallholder agriculture")}
    for name in DRIVER_CLASSES:
        total = sum(r["area_ha"] for r in rows if r["driver"] == name)
        assert total == pytest.approx(summary["drivers"][name]["area_ha"])
    jambi_2017 = features[(features["province"] == "Jambi") & (features["loss_year"] == 2017)]
    (row,) = [r for r in rows if r["province"] == "Jambi" and r["year"] == 2017]
    assert row["area_ha"] == pytest.approx(jambi_2017["area_ha"].sum())
    assert row["n_events"] == 1


def test_tiles_time_and_extra_are_plain_json(summary):
    assert summary["schema"] == SUMMARY_SCHEMA
    assert summary["tiles"] == {"done": 12, "skipped": 3, "failed": 1, "total": 16}
    assert summary["seconds"] == 3725.5
    assert summary["extra"] == {"run_id": "abc", "n": 7, "out": "/maps/riau.gpkg"}
    assert type(summary["extra"]["n"]) is int



def test_missing_areas_are_measured_in_the_equal_area_crs(features):
    expected = summarise_run(features, 1, 0, 0, 1.0)
    partial = features.copy()
    partial.loc[[0, 3], "area_ha"] = np.nan
    assert summarise_run(partial, 1, 0, 0, 1.0) == expected
    assert summarise_run(features.drop(columns="area_ha"), 1, 0, 0, 1.0) == expected


def test_empty_run_summarises_to_zeros(features):
    summary = summarise_run(features.iloc[:0], 0, 0, 0, 0.0)
    assert summary["events"] == {"total": 0, "mapped": 0, "no_imagery": 0}
    assert summary["by_province_year"] == []
    assert all(r["area_ha"] == 0.0 for r in summary["drivers"].values())
    assert "Area by province and year" not in render_summary_markdown(summary)


@pytest.mark.parametrize(
    ("args", "message"),
    [((-1, 0, 0, 1.0), "tiles_done"), ((0, 1.5, 0, 1.0), "tiles_skipped"),
     ((0, 0, 0, float("nan")), "seconds")],
)
def test_bad_counts_are_rejected(features, args, message):
    with pytest.raises(ValueError, match=message):
        summarise_run(features, *args)


def test_unserialisable_extra_is_rejected_with_a_hint(features):
    with pytest.raises(TypeError, match="not JSON"):
        summarise_run(features, 1, 0, 0, 1.0, {"model": object()})


def test_markdown_has_headline_driver_and_province_year_tables(summary):
    text = render_summary_markdown({**summary, "extra": {"note": "a|b"}})
    lines = text.splitlines()
    assert lines[0].startswith("### ")
    assert "| Tiles | 12 done, 3 skipped (reused), 1 failed |" in lines
    assert "| Time | 1 h 02 min |" in lines
    assert "| note | a\\|b |" in lines  # a pipe would break the table
    plantation = summary["drivers"]["Plantation"]
    assert (f"| Plantation | 3 | {plantation['area_ha']:,.1f} "
            f"| {100 * plantation['share']:.1f} % |") in lines
    header = "| Province | Year | " + " | ".join(DRIVER_CLASSES) + " | Total |"
    start = lines.index(header)
    body = lines[start + 2 : start + 6]
    assert [line.split(" | ")[:2] for line in body] == [
        ["| Jambi", "2017"], ["| Jambi", "2018"], ["| Riau", "2017"], ["| Riau", "2018"]]
    riau_2018 = [r for r in summary["by_province_year"]
                 if r["province"] == "Riau" and r["year"] == 2018]
    assert body[3].endswith(f"| {sum(r['area_ha'] for r in riau_2018):,.1f} |")
    # Every table row has as many cells as its header.
    assert all(line.count("|") == header.count("|") for line in body)
