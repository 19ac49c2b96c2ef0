"""The demo recipe on the demo world, and how its models' predictions are scored.

Shared by the accuracy tests (the pipeline's own chips, and the same chips through the
release's layout: ``import-forestnet`` -> ``train`` -> ``map``, each stage through the
functions its flow runs), the release round-trip test and ``bench/bench_release_chain.py``
(that chain through the CLI).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point

from flows.config.schema import PipelineConfig, load_config
from forestnet_model.bundle import load_bundle
from forestnet_model.data import event_scalars
from forestnet_model.predict import predict_events
from forestnet_model.specs import ModelSpec, TrainSpec
from forestnet_model.train import train_model
from pipeline.core.drivers import DRIVER_CLASSES
from pipeline.imagery.views import ChipSpec
from pipeline.sample_world import WorldSpec, generate_world
from pipeline.training_set.batches import import_release_batch, plan_batches
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store, open_chips
from pipeline.training_set.events import write_events
from pipeline.training_set.release_import import imported_store_attrs, plan_release
from pipeline.training_set.release_writer import write_release
from tests.tiny_config import write_demo_config
from tests.world_chips import world_chip_store

#: Tiles prepared and predicted together by ``map_in_process``, as a map task takes them.
MAP_BATCH = 4


def demo_recipe(config: Path) -> tuple[PipelineConfig, ModelSpec, TrainSpec]:
    """The config, and its model and training specs on the CPU without progress bars."""
    cfg = load_config(config)
    return cfg, cfg.model, cfg.train.model_copy(update={"device": "cpu", "progress": "off"})


def own_chips(folder: Path) -> dict:
    """The demo world, chipped as ``forestnet demo`` chips it (scenes in the config's
    scene store)."""
    world = generate_world(folder / "world", WorldSpec.demo()).parent
    config = write_demo_config(folder, world)
    cfg = load_config(config)
    chips = world_chip_store(world, folder / "own", cfg.aux.bands, cfg.aux.features,
                             cfg.chips.spec(), workers=2, scene_store=cfg.scene_store)
    return {"world": world, "config": config, "cfg": cfg, "chips": chips}


def train_recipe(config: Path, chips: Path, out: Path, threads: int | None = None,
                 seed: int | None = None) -> Path:
    """The config's recipe trained on ``chips`` (on ``threads`` CPU threads, with ``seed``
    instead of the config's): its bundle."""
    _, model, train = demo_recipe(config)
    if threads:
        train = train.model_copy(update={"num_threads": threads})
    if seed is not None:
        train = train.model_copy(update={"seed": seed})
    return train_model(chips, out, model, train)


def train_and_map(config: Path, chips: Path, folder: Path) -> tuple[Path, list[Path]]:
    """The config's recipe trained on ``chips`` on one thread (``folder/model``), and the
    config's map job with that bundle (``folder/map``): the bundle and the driver maps."""
    bundle = train_recipe(config, chips, folder / "model", 1)
    return bundle, map_in_process(load_config(config), bundle, folder / "map")


def own_chips_and_model(folder: Path) -> dict:
    """:func:`own_chips`, and the demo recipe trained on them."""
    own = own_chips(folder)
    return {**own, "bundle": train_recipe(own["config"], own["chips"], folder / "own" / "model")}


def import_in_process(release: Path, out: Path, spec: ChipSpec, bands: tuple[str, ...],
                      features: tuple[str, ...], batch_size: int = 64) -> Path:
    """``import-forestnet``'s functions one after the other (plan, batches, finalise),
    without a cluster or a Prefect run: the release's chip store."""
    events, problems = plan_release(str(release), spec)
    events_path = write_events(events, out.with_name(f"{out.stem}.events.parquet"))
    init_chip_store(out, events, spec, bands, features, imported_store_attrs(str(release)))
    batches = plan_batches(len(events), batch_size)
    for start, stop in batches:
        import_release_batch(str(release), events_path, start, stop, out, spec, bands, features)
    excluded = dict(p.split(": ", 1) for p in problems)
    return finalize_chip_store(out, batches, extra_attrs={"excluded_examples": excluded})


def release_of(own: dict, folder: Path) -> Path:
    """The own chips written as the published release and imported again: a user's
    training set, in the release's layout and 8-bit display scaling."""
    cfg = own["cfg"]
    release = write_release(open_chips(own["chips"]), folder / "release")
    return import_in_process(release, folder / "chips.zarr", cfg.chips.spec(), cfg.aux.bands,
                             cfg.aux.features)


def held_out(chips_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the usable test events and their true class indices."""
    chips = open_chips(chips_path)
    rows = np.flatnonzero((chips["split"].values == "test") & (chips["chip_ok"].values == 1))
    truth = np.array([list(DRIVER_CLASSES).index(str(m))
                      for m in chips["merged_label"].values[rows]])
    return rows, truth


def bundle_predictions(bundle: Path, chips_path: Path, rows: np.ndarray) -> np.ndarray:
    """Classes that ``predict_events`` (evaluation's entry) gives the events' composites."""
    _, meta = load_bundle(bundle)
    chips = open_chips(chips_path)
    images = chips["image"].isel(event=rows, view=0).sel(band=list(meta.model.in_bands)).values
    scalars = event_scalars(chips, rows, meta.model.fusion_features)
    probs, _ = predict_events(bundle, images, chips["loss_mask"].values[rows], device="cpu",
                              scalars=scalars)
    return probs.argmax(1)


def mapped_classes(maps: list[gpd.GeoDataFrame], chips_path: Path, rows: np.ndarray
                   ) -> np.ndarray:
    """The mapped class at each event's anchor (-1 where no mapped event holds it)."""
    chips = open_chips(chips_path)
    mapped = pd.concat(maps, ignore_index=True)
    found = []
    for lon, lat in zip(chips["lon"].values[rows], chips["lat"].values[rows], strict=True):
        hit = mapped[mapped.contains(Point(float(lon), float(lat)))]
        found.append(list(DRIVER_CLASSES).index(hit["driver"].iloc[0]) if len(hit) else -1)
    return np.array(found)


def map_in_process(cfg: PipelineConfig, bundle: Path, folder: Path) -> list[Path]:
    """The config's map job with ``bundle``, through the functions the map flow submits
    to Dask (plan, prepare, infer, publish), here one after the other: the driver maps'
    GeoPackages, without a cluster or a Prefect run."""
    from flows.config.mapping_job import chosen_provinces
    from forestnet_model.bundle_meta import read_bundle_meta
    from pipeline.core.tile_lattice import MapTile
    from pipeline.export.driver_maps import MapOutputs, layer_provenance, publish_driver_maps
    from pipeline.mapping import tile_plan
    from pipeline.mapping.fusion_inputs import scalar_names
    from pipeline.mapping.inference import infer_tiles
    from pipeline.mapping.parts import part_path
    from pipeline.mapping.tile_inputs import prepare_tiles

    meta, m = read_bundle_meta(bundle), cfg.mapping
    provinces, years = chosen_provinces(cfg), m.year_list()
    area = tile_plan.mapping_area(m.aoi, provinces)
    tiles, _ = tile_plan.tiles_with_loss(cfg.inputs.lossyear, area, years)
    parts = {t: part_path(folder / "parts", MapTile.from_id(t)) for t in tiles["tile_id"]}
    ids = list(parts)
    for start in range(0, len(ids), MAP_BATCH):
        batch = ids[start:start + MAP_BATCH]
        inputs = prepare_tiles(batch, cfg.inputs.lossyear, years, cfg.scene_store,
                               cfg.chips.spec(), meta.model.in_bands, meta.model.aux_bands,
                               cfg.inputs.aux_sources(), scalar_names(meta.model.fusion_features),
                               meta.model.event_context)
        infer_tiles(inputs, bundle, {t: str(parts[t]) for t in batch}, m.infer_batch_size,
                    device="cpu")
    written = publish_driver_maps(
        [p for p in parts.values() if p.exists()], bundle, provinces, None, False,
        folder / "maps", layer_provenance("accuracy", meta.model_id, cfg.model_dump_json(),
                         cfg.inputs.lossyear),
        MapOutputs(m.years, m.min_event_pixels), folder / "events.parquet")
    return [Path(p) for p in written["geopackages"]]
