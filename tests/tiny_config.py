"""A tiny end-to-end configuration over the tiny sample world, for flow tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import geopandas as gpd

    from flows.config.schema import PipelineConfig


def write_tiny_config(folder: Path, world: Path, **overrides: dict) -> Path:
    """Write a config whose inputs point into ``world`` and whose outputs go to ``folder``."""
    sections = {
        "workdir": str(folder / "work"),
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "3GiB"},
        "sample_world": {"preset": "tiny", "seed": 42, "out": str(world)},
        "inputs": {
            "landsat": [str(world / "landsat")],
            "events_csv_dir": str(world / "events"),
            "lossyear": str(world / "gfc" / "lossyear.tif"),
            "treecover": str(world / "gfc" / "treecover2000.tif"),
            "dem": str(world / "aux" / "srtm_dem.tif"),
            "roads": str(world / "aux" / "roads.gpkg"),
            "settlements": str(world / "aux" / "settlements.gpkg"),
            "peat": str(world / "aux" / "peat.gpkg"),
            "climate": str(world / "aux" / "climate.tif"),
            "landcover": str(world / "aux" / "landcover.tif"),
        },
        "chips": {"batch_size": 4, "max_single_views": 2},
        "train": {"epochs": 1, "batch_size": 4, "crop": 64, "num_threads": 2},
        "mapping": {"provinces": ["Kalimantan Tengah"], "years": [2013, 2016], "tiles_per_task": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            sections[key] = {**sections.get(key, {}), **value}
        else:
            sections[key] = value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def config_events(config: PipelineConfig) -> tuple[gpd.GeoDataFrame, list[str]]:
    """The labelled events a config's training set would start from (and the problems)."""
    from pipeline.training_set.event_sources import make_events

    return make_events(config.events, config.inputs.lossyear, config.inputs.events_csv_dir)


def write_demo_config(folder: Path, world: Path) -> Path:
    """``configs/demo.yaml`` (its world, recipe and mapping job) with the sample world at
    ``world`` and the outputs under ``folder``."""
    demo = (Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text()
    text = demo.replace("outputs/demo/sample-world", str(world))
    path = folder / "config.yaml"
    path.write_text(text.replace("outputs/demo", str(folder / "work")))
    return path
