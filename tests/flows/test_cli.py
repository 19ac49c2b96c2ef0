"""The CLI: verbs exist, and bad configs or inputs give one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli.app import app
from tests.reliability.bad_input_helpers import one_line_error
from tests.tiny_config import write_tiny_config

runner = CliRunner()
VERBS = (
    "demo", "sample-data", "ingest", "build-training-set", "import-forestnet", "train", "map",
    "evaluate",
)


#: The analyst's verbs: plain functions over files, no cluster.
REPORTING_VERBS = ("sample-design", "area")


def test_help_lists_every_verb() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in VERBS + REPORTING_VERBS:
        assert verb in result.output


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_takes_config_and_dask_address(verb: str) -> None:
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0
    assert "--config" in result.output and "--dask-address" in result.output


def test_unknown_key_is_named(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "world", train={"epoch": 3})
    text = one_line_error(runner.invoke(app, ["train", "--config", str(config)]))
    assert "train.epoch" in text and str(config) in text


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    text = one_line_error(runner.invoke(app, ["map", "--config", str(missing)]))
    assert str(missing) in text


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "world")
    text = one_line_error(runner.invoke(app, ["map", "--config", str(config)]))
    assert "inputs.lossyear" in text and "lossyear.tif" in text


def test_unknown_province_is_named(tmp_path: Path, tiny_world: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_world.parent)
    text = one_line_error(runner.invoke(
        app, ["map", "--config", str(config), "--province", "Kalimantan Tenga"]))
    assert "Kalimantan Tenga" in text and "Kalimantan Tengah" in text


def test_ingest_of_missing_folder_is_named(tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "world")
    text = one_line_error(runner.invoke(
        app, ["ingest", str(tmp_path / "no-such-scenes"), "--config", str(config)]))
    assert "no-such-scenes" in text


def test_sample_data_writes_the_world_through_the_cluster(tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = runner.invoke(app, ["sample-data", "--out", str(out), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert f"sample world: {out / 'manifest.json'}" in result.stdout
    assert "dashboard http://" in result.stderr
    assert sorted(p.name for p in (out / "events").glob("*.csv")) == [
        "test.csv", "train.csv", "val.csv"]
    assert len(list((out / "landsat").iterdir())) == 6  # Level-1 and Level-2 of 3 dates


def test_sample_data_refuses_an_unknown_preset(tmp_path: Path) -> None:
    text = one_line_error(runner.invoke(
        app, ["sample-data", "--out", str(tmp_path / "w"), "--preset", "huge"]))
    assert "huge" in text


def test_map_area_options_are_exclusive_and_checked(tmp_path: Path, tiny_world: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_world.parent)
    both = one_line_error(runner.invoke(
        app, ["map", "--config", str(config), "--all", "--province", "Riau"]))
    assert "--province" in both and "--all" in both
    years = one_line_error(runner.invoke(
        app, ["map", "--config", str(config), "--years", "2015to2020"]))
    assert "years" in years and "2015to2020" in years
    backwards = one_line_error(runner.invoke(
        app, ["map", "--config", str(config), "--years", "2020-2015"]))
    assert "years" in backwards
    aoi = one_line_error(runner.invoke(
        app, ["map", "--config", str(config), "--aoi", str(tmp_path / "nowhere.gpkg")]))
    assert "nowhere.gpkg" in aoi


def test_disk_full_mid_run_is_one_line_and_exit_1(capsys) -> None:
    """ENOSPC from deep inside a run (a writer on a worker) reaches the user as one line
    naming the file, not a traceback; exit 1, as the run did not finish."""
    import errno
    import os

    import typer

    from flows.cli.app import _guard

    def body() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/maps/riau.gpkg")

    with pytest.raises(typer.Exit) as info:
        _guard(body)
    assert info.value.exit_code == 1
    err = capsys.readouterr()
    line = (err.out + err.err).strip()
    assert "\n" not in line
    assert "/data/maps/riau.gpkg: No space left on device" in line and "rerun" in line


def test_other_os_errors_are_not_hidden() -> None:
    import errno

    from flows.cli.app import _guard

    def body() -> None:
        raise OSError(errno.EIO, "Input/output error", "/data/x")

    with pytest.raises(OSError, match="Input/output error"):
        _guard(body)
