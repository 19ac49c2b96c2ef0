"""``forestnet sample-design`` end to end: the sample file and its summary, and bad input
giving one line, exit code 2 and no file."""

from __future__ import annotations

from pathlib import Path

import pyogrio
from typer.testing import CliRunner

from flows.cli.app import app
from pipeline.accuracy.reference_gpkg import REFERENCE_LAYER
from tests.accuracy.test_sample_design import write_map
from tests.reliability.bad_input_helpers import one_line_error

runner = CliRunner()


def test_sample_design_writes_the_sample_and_prints_the_strata(tmp_path: Path) -> None:
    map_path = write_map(tmp_path / "riau.gpkg")
    out = tmp_path / "reference_sample.gpkg"
    result = runner.invoke(app, ["sample-design", "--map", str(map_path), "--n", "120",
                                 "--out", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert str(out) in lines[0] and "120 points in 3 strata" in lines[1]
    assert [line.split(":")[0].strip() for line in lines[2:]] == [
        "Other", "Plantation", "Smallholder agriculture"]
    assert lines[-1].endswith("ha, n = 12")
    assert len(pyogrio.read_dataframe(out, layer=REFERENCE_LAYER)) == 120


def test_map_without_events_is_one_line(tmp_path: Path) -> None:
    empty = write_map(tmp_path / "empty.gpkg", {})
    out = tmp_path / "s.gpkg"
    text = one_line_error(runner.invoke(app, ["sample-design", "--map", str(empty),
                                               "--n", "10", "--out", str(out)]))
    assert f"{empty}: the map holds no loss events; nothing to sample" in text
    assert not out.exists()


def test_fewer_points_than_strata_is_one_line(tmp_path: Path) -> None:
    map_path = write_map(tmp_path / "riau.gpkg")
    out = tmp_path / "s.gpkg"
    text = one_line_error(runner.invoke(app, ["sample-design", "--map", str(map_path),
                                               "--n", "2", "--out", str(out)]))
    assert "sample of 2" in text and "3 strata" in text
    assert not out.exists()
    text = one_line_error(runner.invoke(app, ["sample-design", "--map", str(map_path),
                                               "--n", "20", "--allocation", "neyman",
                                               "--out", str(out)]))
    assert "min50, equal, proportional" in text and not out.exists()
