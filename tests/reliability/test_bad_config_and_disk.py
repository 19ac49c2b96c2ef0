"""R3, bad-input catalogue (3 of 3): model, config and disk.

Catalogue (case: expected behaviour -> test):

- bundle whose weights do not fit its in_bands, whose normalisation does not, or which
  asks for a band chips do not have: `map` exits 2 with one line naming weights.safetensors
  or bundle.json and the reason; nothing written
  -> test_map_refuses_a_bundle_that_does_not_fit
- config with unknown keys or wrong types (or not YAML, or not a mapping): exit 2, one line
  naming the file and the key -> test_bad_config_is_one_line_naming_the_key,
  test_config_that_is_not_yaml_or_not_a_mapping; the line quotes paths verbatim
  -> test_error_line_keeps_brackets_verbatim
- output path under a file (a real unwritable path: root ignores permission bits): exit 2
  before anything runs, naming the key, the path and the file in the way; that file
  unchanged -> test_output_under_a_file_is_refused
- read-only output folder (simulated: ``os.access`` patched): the CLI refuses it naming the
  folder (exit 2) -> test_read_only_output_folder_is_refused; an atomic write raises
  PermissionError naming it and keeps the old output
  -> test_atomic_write_to_a_read_only_folder_keeps_the_old_output
- disk full while writing the GeoPackage (simulated: ENOSPC once the driver layer is in the
  temp file): the OSError propagates, naming the file; the old map is byte-identical, no
  temporaries -> test_disk_full_mid_geopackage_keeps_the_old_map
- disk full while writing a Parquet output (simulated: a torn file, then ENOSPC): the OSError
  propagates; events.parquet absent (first run) or unchanged, no temporaries
  -> test_disk_full_mid_parquet_leaves_nothing_half_written
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from typer.testing import CliRunner

from flows.cli.app import app
from forestnet_model.bundle import MANIFEST, WEIGHTS
from pipeline.core.atomic import atomic_output
from pipeline.export.geopackage import write_driver_geopackage
from pipeline.training_set.events import write_events
from tests.mapped_features import make_features, utm_squares
from tests.reliability.bad_input_helpers import (
    listing,
    map_ready,
    one_line_error,
    save_random_bundle,
    temporaries,
)
from tests.tiny_config import write_tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def _four_bands(model: dict, norm: dict) -> None:
    model["in_bands"] = ["red", "green", "blue", "nir"]
    norm["mean"], norm["std"] = norm["mean"][:4], norm["std"][:4]


@pytest.mark.parametrize(("edit", "named", "reason"), [
    (_four_bands, WEIGHTS, "weights do not match the bundle's model"),
    (lambda model, norm: model.update(in_bands=["red", "green", "blue", "nir"]), MANIFEST,
     "normalisation.mean needs 4 values"),
    (lambda model, norm: model.update(in_bands=["red", "green", "blue", "nir", "swir1",
                                                "thermal"]), MANIFEST, "['thermal']"),
], ids=["weights", "normalisation", "band-name"])
def test_map_refuses_a_bundle_that_does_not_fit(
    tiny_world: Path, bundle: Path, tmp_path: Path, edit, named: str, reason: str
) -> None:
    config = map_ready(tmp_path, tiny_world.parent, bundle)
    folder = tmp_path / "work" / "model" / "bundle"
    meta = json.loads((folder / MANIFEST).read_text())
    edit(meta["model"], meta["normalisation"])
    (folder / MANIFEST).write_text(json.dumps(meta))
    before = listing(tmp_path)
    text = one_line_error(runner.invoke(app, ["map", "--config", str(config)]))
    assert str(folder / named) in text and reason in text
    assert listing(tmp_path) == before  # no maps, parts or run records


@pytest.mark.parametrize(("sections", "needles"), [
    ({"train": {"epoch": 3}}, ["unknown key 'train.epoch'"]),
    ({"outputs": {"dir": "x"}}, ["unknown key 'outputs'"]),
    ({"chips": {"batch_size": "many"}}, ["'chips.batch_size'", "valid integer"]),
    ({"mapping": {"years": 2015}}, ["'mapping.years'", "valid tuple"]),
    ({"events": {"source": "shapefile"}}, ["'events.source'", "'forestnet_csv'"]),
    ({"inputs": {"landsat": "scenes/"}}, ["'inputs.landsat'", "valid list"]),
    ({"train": {"crop": 100}}, ["'train.crop'", "multiple of 32"]),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, sections: dict,
                                               needles: list[str]) -> None:
    config = write_tiny_config(tmp_path, tmp_path / "world", **sections)
    for verb in ("train", "map"):
        text = one_line_error(runner.invoke(app, [verb, "--config", str(config)]))
        assert str(config) in text and all(n in text for n in needles), text
    assert not (tmp_path / "work").exists()


def test_config_that_is_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    for content, reason in [("workdir: [unclosed", "not valid YAML"),
                            ("- just\n- a list\n", "top level must be a mapping")]:
        path = tmp_path / "config.yaml"
        path.write_text(content)
        text = one_line_error(runner.invoke(app, ["build-training-set", "--config", str(path)]))
        assert str(path) in text and reason in text


def test_error_line_keeps_brackets_verbatim(tmp_path: Path) -> None:
    """Paths and keys with brackets ("[old]", "landsat[0]") are text, not console markup."""
    missing = tmp_path / "[old]" / "config.yaml"
    text = one_line_error(runner.invoke(app, ["build-training-set", "--config", str(missing)]))
    assert text == f"error: config file not found: {missing}"


# --- disk: read-only paths ----------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["map", "ingest", "build-training-set"])
def test_output_under_a_file_is_refused(tiny_world: Path, bundle: Path, tmp_path: Path,
                                        verb: str) -> None:
    blocker = tmp_path / "not-a-folder.txt"
    blocker.write_text("keep me")
    args = {"map": ["--out", str(blocker / "maps")],
            "ingest": [str(tiny_world.parent / "landsat"), "--store", str(blocker / "s.zarr")],
            "build-training-set": []}[verb]
    overrides = {"workdir": str(blocker / "work")} if verb == "build-training-set" else {}
    config = map_ready(tmp_path, tiny_world.parent, bundle)
    if overrides:  # the checks look for the index in the workdir: point `scenes` at it
        config = write_tiny_config(tmp_path, tiny_world.parent, **overrides,
                                   scenes=str(tmp_path / "work" / "scenes.zarr"))
    before = listing(tmp_path)
    text = one_line_error(runner.invoke(app, [verb, "--config", str(config), *args]))
    key = {"map": "mapping.out", "ingest": "scenes", "build-training-set": "workdir"}[verb]
    assert text.startswith(f"error: {key}: cannot write {blocker}/")
    assert f"{blocker} is a file, not a folder" in text
    assert listing(tmp_path) == before and blocker.read_text() == "keep me"


def _deny_writes_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only folder looks like to ``os.access`` (root bypasses real modes)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if (mode & os.W_OK and isinstance(path, str | os.PathLike)
                and Path(path).resolve().is_relative_to(folder.resolve())):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_read_only_output_folder_is_refused(tiny_world: Path, bundle: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    config = map_ready(tmp_path, tiny_world.parent, bundle)
    _deny_writes_under(readonly, monkeypatch)
    text = one_line_error(runner.invoke(app, ["map", "--config", str(config), "--out",
                                              str(readonly / "maps")]))
    assert f"folder {readonly} is not writable" in text and "mapping.out" in text
    assert list(readonly.iterdir()) == []


def test_atomic_write_to_a_read_only_folder_keeps_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "events.parquet"
    final.write_bytes(b"previous run")
    _deny_writes_under(tmp_path, monkeypatch)
    with pytest.raises(PermissionError) as info, atomic_output(final) as tmp:
        tmp.write_bytes(b"never")
    assert f"cannot write {final}: folder {tmp_path} is not writable" in str(info.value)
    assert final.read_bytes() == b"previous run" and temporaries(tmp_path) == []


# --- disk: full mid-write -----------------------------------------------------------------------


def _enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _features(n: int) -> gpd.GeoDataFrame:
    squares = [(600_000.0 + 500 * i, 60_000.0, 300.0) for i in range(n)]
    return make_features(utm_squares(squares), ["Plantation", "Other"] * (n // 2))


def test_disk_full_mid_geopackage_keeps_the_old_map(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "riau.gpkg"
    write_driver_geopackage(_features(2), final, metadata={"run_id": "first"})
    old = final.read_bytes()
    real = pyogrio.write_arrow  # the driver layer is streamed as Arrow batches
    calls = []

    def layer(stream, path, **kwargs):
        calls.append(kwargs.get("layer"))
        return real(stream, path, **kwargs)  # the driver layer lands in the temp file

    def full(frame, path, **kwargs):
        calls.append(kwargs.get("layer"))
        raise _enospc(path)  # then the disk fills up

    monkeypatch.setattr(pyogrio, "write_arrow", layer)
    monkeypatch.setattr(pyogrio, "write_dataframe", full)
    with pytest.raises(OSError) as info:
        write_driver_geopackage(_features(4), final, metadata={"run_id": "second"})
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    assert calls == ["forest_loss_drivers", "driver_area_by_year"]
    assert final.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["riau.gpkg"]  # no temp, no sidecar


@pytest.mark.parametrize("previous", [None, b"previous events"])
def test_disk_full_mid_parquet_leaves_nothing_half_written(
    tiny_events: gpd.GeoDataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    previous: bytes | None,
) -> None:
    final = tmp_path / "events.parquet"
    if previous is not None:
        final.write_bytes(previous)
    written = []

    def half_then_full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1" + b"\0" * 1000)  # a torn Parquet file
        written.append(Path(path))
        raise _enospc(path)

    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", half_then_full)
    with pytest.raises(OSError) as info:
        write_events(tiny_events, final)
    assert info.value.errno == errno.ENOSPC
    assert written and written[0] != final and str(written[0]) in str(info.value)
    assert (final.read_bytes() if final.exists() else None) == previous
    assert temporaries(tmp_path) == []
