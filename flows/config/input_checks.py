"""The input checks the flows share, so that bad input is one line before any flow starts.

Each flow's ``check_inputs(config)`` composes these: cheap ones (a file is there, a store
is complete) first, then those that open files (lossyear type, event CSV labels, the
model bundle) or probe output folders. Errors are the types the CLI reports as one line
with exit code 2.
"""

from __future__ import annotations

import os
from pathlib import Path

from flows.config.schema import ConfigError, PipelineConfig, require_file

CSV_SPLITS = ("train", "val", "test")


def require_writable(path: Path, key: str) -> None:
    """An output location whose nearest existing part is a writable folder."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: cannot write {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write {path}: folder {probe} is not writable")


def check_lossyear_file(path: Path) -> None:
    """The lossyear raster opens and is GFC's: uint8 with a CRS."""
    import rasterio

    from pipeline.training_set.events import EventInputError, check_lossyear

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise EventInputError(f"{path}: cannot open lossyear raster ({exc})") from None
    with src:
        check_lossyear(src, Path(path))


def check_event_csvs(csv_dir: Path) -> None:
    """The ForestNet CSVs are readable, have the release's columns and known labels."""
    from pipeline.training_set.events import read_forestnet_csvs

    csvs = {s: Path(csv_dir) / f"{s}.csv" for s in CSV_SPLITS
            if (Path(csv_dir) / f"{s}.csv").exists()}
    if not csvs:
        raise ConfigError(f"inputs.events_csv_dir: {csv_dir} holds no train.csv, val.csv or "
                          "test.csv")
    read_forestnet_csvs(csvs)


def check_map_bundle(path: Path) -> None:
    """The bundle asks for bands the map can make and its weights fit its own spec."""
    from forestnet_model.bundle_meta import MANIFEST, BundleError, read_bundle_meta, saved_together
    from pipeline.imagery.views import CHIP_BANDS
    from pipeline.training_set.auxiliary import AUX_BAND_REGISTRY, AUX_FEATURE_REGISTRY

    meta = read_bundle_meta(path)
    spec = meta.model
    for key, names, valid in (("in_bands", spec.in_bands, CHIP_BANDS),
                              ("aux_bands", spec.aux_bands, tuple(AUX_BAND_REGISTRY)),
                              ("fusion_features", spec.fusion_features,
                               tuple(AUX_FEATURE_REGISTRY))):
        unknown = [b for b in names if b not in valid]
        if unknown:
            raise BundleError(f"{Path(path) / MANIFEST}: model.{key} {unknown} are not inputs "
                              f"the map can make; valid: {', '.join(valid)}")
    if not saved_together(path, meta):
        # Weights that do not fit the spec: BundleError naming the file. Only a bundle
        # changed since it was saved (or an older one) needs torch to tell.
        from forestnet_model.bundle import load_bundle

        load_bundle(path)


def require_model_sources(config: PipelineConfig, bundle: Path) -> None:
    """Every aux band and fusion feature of the bundle has its source in ``inputs``: a
    missing one would reach the model as the training mean on every event, silently."""
    from forestnet_model.bundle_meta import read_bundle_meta
    from pipeline.training_set.auxiliary import source_keys

    spec = read_bundle_meta(bundle).model
    needs = source_keys(spec.aux_bands, spec.fusion_features)
    unset = {name: key for name, key in needs.items() if getattr(config.inputs, key) is None}
    if unset:
        keys = ", ".join(f"inputs.{k}" for k in dict.fromkeys(unset.values()))
        raise ConfigError(f"the model bundle {bundle} reads {sorted(unset)} but their sources "
                          f"are not configured; set {keys} in the config")


def require_scene_index(config: PipelineConfig) -> None:
    """The scene store has been ingested into (its index is there)."""
    from pipeline.ingest.catalog import is_complete

    if not is_complete(config.scene_store):
        raise ConfigError(f"{config.scene_store}: no scene index; run `forestnet ingest` first")


def require_aux_files(config: PipelineConfig) -> None:
    """Every configured auxiliary source exists."""
    from pipeline.training_set.auxiliary import AuxSources

    for key in AuxSources.names():
        value = getattr(config.inputs, key)
        if value is not None:
            require_file(value, key)
