"""Tests for the YAML configuration: strict keys, one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.config.schema import ConfigError, PipelineConfig, load_config, require_file

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _write(tmp_path: Path, data: object, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_config_loads() -> None:
    raw = yaml.safe_load(DEMO.read_text())
    cfg = load_config(DEMO)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.workdir == Path(raw["workdir"])
    assert cfg.train.crop == raw["train"]["crop"]
    assert cfg.train.epochs == raw["train"]["epochs"]
    assert cfg.mapping.years == tuple(raw["mapping"]["years"])
    assert cfg.mapping.provinces == raw["mapping"]["provinces"]
    assert cfg.inputs.lossyear == Path(raw["inputs"]["lossyear"])
    assert cfg.inputs.landsat == [Path(p) for p in raw["inputs"]["landsat"]]
    assert cfg.scene_store == cfg.workdir / "scenes.zarr"


def test_no_file_gives_defaults() -> None:
    assert load_config(None) == PipelineConfig()


def test_config_is_frozen() -> None:
    cfg = load_config(DEMO)
    with pytest.raises(ValueError):
        cfg.workdir = Path("elsewhere")  # type: ignore[misc]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = _write(tmp_path, {"workdir": "out", "wrokdir_typo": "x"})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "wrokdir_typo" in message
    assert str(path) in message
    assert "\n" not in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": {"epoch": 5}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch'") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_wrong_type(tmp_path: Path) -> None:
    path = _write(tmp_path, {"cluster": {"n_workers": "many"}})
    with pytest.raises(ConfigError, match=r"cluster\.n_workers") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_out_of_range_value(tmp_path: Path) -> None:
    path = _write(tmp_path, {"chips": {"max_view_cloud": 1.5}})
    with pytest.raises(ConfigError, match=r"chips\.max_view_cloud"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, ["train", "mapping"])
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == PipelineConfig()


@pytest.mark.parametrize("crop", [100, 48, 250])
def test_crop_must_be_a_multiple_of_32(tmp_path: Path, crop: int) -> None:
    path = _write(tmp_path, {"train": {"crop": crop}})
    with pytest.raises(ConfigError, match=r"train\.crop.*multiple of 32"):
        load_config(path)


def test_crop_multiple_of_32_is_accepted(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, {"train": {"crop": 96}})).train.crop == 96


def test_years_reversed(tmp_path: Path) -> None:
    path = _write(tmp_path, {"mapping": {"years": [2016, 2013]}})
    with pytest.raises(ConfigError, match=r"mapping\.years") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_years_before_gfc(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mapping\.years"):
        load_config(_write(tmp_path, {"mapping": {"years": [1999, 2005]}}))


def test_single_year_range_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, {"mapping": {"years": [2015, 2015]}}))
    assert cfg.mapping.years == (2015, 2015)


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": {"epoch": 5, "crop": 100}})
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "train.epoch" in message and "train.crop" in message


def test_require_file_existing(tmp_path: Path) -> None:
    path = tmp_path / "lossyear.tif"
    path.write_bytes(b"x")
    assert require_file(path, "lossyear") == path
    assert require_file(str(path), "lossyear") == path  # type: ignore[arg-type]


def test_require_file_unset() -> None:
    with pytest.raises(ConfigError, match=r"inputs\.lossyear is not set"):
        require_file(None, "lossyear")


def test_require_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "dem.tif"
    with pytest.raises(ConfigError, match=r"inputs\.dem") as info:
        require_file(path, "dem")
    assert str(path) in str(info.value)


def test_events_and_aux_sections(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, {
        "events": {"source": "vector", "min_event_ha": 2.5, "group_by_tile": True,
                   "vector": {"path": "ev.gpkg", "label_column": "driver"},
                   "split": {"method": "spatial", "block_km": 20, "seed": 3}},
        "aux": {"bands": ["ndvi"], "features": ["street_dist_km"]},
    }))
    assert cfg.events.source == "vector" and cfg.events.vector.label_column == "driver"
    assert cfg.events.split.block_km == 20 and cfg.aux.bands == ("ndvi",)
    assert load_config(None).events.source == "forestnet_csv"


@pytest.mark.parametrize(("section", "needle"), [
    ({"aux": {"bands": ["elev"]}}, "aux.bands': Value error, unknown aux band ['elev']; valid:"),
    ({"aux": {"features": ["road_km"]}}, "street_dist_km"),
    ({"events": {"source": "shapefile"}}, "events.source"),
    ({"events": {"split": {"fractions": [0.5, 0.5, 0.5]}}}, "events.split.fractions"),
    ({"events": {"vector": {"colour": "x"}}}, "unknown key 'events.vector.colour'"),
])
def test_bad_events_and_aux_keys_are_named(tmp_path: Path, section: dict, needle: str) -> None:
    path = _write(tmp_path, section)
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert needle in message and str(path) in message and "\n" not in message


def test_vector_source_needs_its_file(tmp_path: Path) -> None:
    from flows.training_set import check_inputs

    (tmp_path / "scenes.zarr").mkdir()
    (tmp_path / "scenes.zarr" / "index.parquet").write_bytes(b"")
    base = {"scenes": str(tmp_path / "scenes.zarr"), "events": {"source": "vector"}}
    with pytest.raises(ConfigError, match=r"events\.vector\.path is not set"):
        check_inputs(load_config(_write(tmp_path, base)))
    base["events"]["vector"] = {"path": str(tmp_path / "none.gpkg")}
    with pytest.raises(ConfigError, match="none.gpkg"):
        check_inputs(load_config(_write(tmp_path, base)))
