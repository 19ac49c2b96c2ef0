"""Build a chip store from a generated sample world without Prefect or Dask.

The same steps as ``forestnet demo`` up to ``chips.zarr`` (ingest, ForestNet-CSV events,
chips + aux), run in this process (or a small process pool); used by the model tests and
by ``bench/bench_train.py``. Each step is skipped when its output already exists.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pipeline.imagery.views import ChipSpec
from pipeline.ingest.catalog import scene_row, write_index
from pipeline.ingest.scene_ingest import ingest_scene
from pipeline.training_set.auxiliary import AuxSources
from pipeline.training_set.batches import build_chip_batch, plan_batches
from pipeline.training_set.chip_store import finalize_chip_store, init_chip_store
from pipeline.training_set.events import events_from_forestnet_csvs, write_events


def world_sources(world: Path) -> AuxSources:
    """Every auxiliary source the sample world writes, land cover included."""
    aux = world / "aux"
    return AuxSources(
        dem=aux / "srtm_dem.tif", treecover=world / "gfc" / "treecover2000.tif",
        roads=aux / "roads.gpkg", settlements=aux / "settlements.gpkg", peat=aux / "peat.gpkg",
        climate=aux / "climate.tif", landcover=aux / "landcover.tif",
    )


def ingest_world(world: Path, store: Path) -> Path:
    """Ingest every scene of the world into ``store`` and write its index."""
    if (store / "index.parquet").exists():
        return store
    rows = []
    for product in sorted((world / "landsat").iterdir()):
        result = ingest_scene(product, store)
        rows.append(scene_row(store, result.scene_id, result.status, result.source))
    write_index(store, rows)
    return store


def world_chip_store(
    world: Path, folder: Path, aux_bands: tuple[str, ...] = (),
    features: tuple[str, ...] = (), spec: ChipSpec | None = None, workers: int = 1,
    scene_store: Path | None = None,
) -> Path:
    """``folder/chips.zarr`` for the world's labelled events (built once, then reused)."""
    folder = Path(folder)
    final = folder / "chips.zarr"
    if (final / "zarr.json").exists():
        return final
    store = ingest_world(world, scene_store or folder / "scenes.zarr")
    csvs = {s: world / "events" / f"{s}.csv" for s in ("train", "val", "test")}
    events, problems = events_from_forestnet_csvs(csvs, world / "gfc" / "lossyear.tif")
    if problems:
        raise RuntimeError(f"{world}: events without loss: {problems[:3]}")
    events_path = write_events(events, folder / "events.parquet")
    spec = spec or ChipSpec()
    init_chip_store(final, events, spec, aux_bands, features)
    batches = plan_batches(len(events), 4)
    args = [(events_path, a, b, store, final, spec, world_sources(world), aux_bands, features,
             folder / "composites.zarr")
            for a, b in batches]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(build_chip_batch, *zip(*args, strict=True)))
    else:
        for a in args:
            build_chip_batch(*a)
    return finalize_chip_store(final, batches)
