"""Preflight checks that open input files, so that bad input is one line before any flow.

``flows.config.schema.preflight`` checks that files exist; these look inside them (lossyear type,
area of interest, event CSV labels, the model bundle) and check that outputs can be
written. Errors are the types the CLI reports as one line with exit code 2.
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
    from forestnet_model.bundle import MANIFEST, BundleError, load_bundle, read_bundle_meta
    from pipeline.imagery.views import CHIP_BANDS
    from pipeline.training_set.auxiliary import AUX_BAND_REGISTRY

    spec = read_bundle_meta(path).model
    for key, names, valid in (("in_bands", spec.in_bands, CHIP_BANDS),
                              ("aux_bands", spec.aux_bands, tuple(AUX_BAND_REGISTRY))):
        unknown = [b for b in names if b not in valid]
        if unknown:
            raise BundleError(f"{Path(path) / MANIFEST}: model.{key} {unknown} are not bands "
                              f"the map can make; valid: {', '.join(valid)}")
    load_bundle(path)  # weights that do not fit the spec: BundleError naming the file


def check_inputs(config: PipelineConfig, verb: str) -> None:
    """The checks of ``verb`` that read input files or probe output folders."""
    if verb in ("build-training-set", "train", "map", "demo"):
        require_writable(config.workdir, "workdir")
    if verb == "ingest":
        require_writable(config.scene_store, "scenes")
    if verb == "map" and config.mapping.out is not None:
        require_writable(config.mapping.out, "mapping.out")
    source = config.events.source
    if verb == "map" or (verb == "build-training-set" and source != "vector"):
        check_lossyear_file(config.inputs.lossyear)
    if verb == "map" and config.mapping.aoi is not None:
        from pipeline.mapping.area_of_interest import read_aoi

        read_aoi(config.mapping.aoi)
    if verb == "build-training-set" and source == "forestnet_csv":
        check_event_csvs(config.inputs.events_csv_dir)
    if verb == "map":
        check_map_bundle(config.bundle_path)


def preflight(config: PipelineConfig, verb: str) -> None:
    """Check a verb's inputs before any flow starts, so that errors are one line."""
    inputs = config.inputs
    if verb == "map" and config.mapping.aoi is None and not config.mapping.all:
        from pipeline.core.provinces import select_provinces

        select_provinces(config.mapping.provinces)
    if verb == "map" and config.mapping.aoi is not None:
        require_file(config.mapping.aoi, "aoi", "mapping")
    if verb == "ingest":
        if not inputs.landsat:
            raise ConfigError("inputs.landsat is empty: name product folders or pass SOURCES")
        for i, path in enumerate(inputs.landsat):
            if isinstance(path, Path):
                require_file(path, f"landsat[{i}]")
    source = config.events.source
    if verb == "map" or (verb == "build-training-set" and source != "vector"):
        require_file(inputs.lossyear, "lossyear")
    if verb in ("build-training-set", "map") and not (
        config.scene_store / "index.parquet"
    ).exists():
        raise ConfigError(f"{config.scene_store}: no scene index; run `forestnet ingest` first")
    if verb == "build-training-set" and source == "forestnet_csv":
        require_file(inputs.events_csv_dir, "events_csv_dir")
    if verb == "build-training-set" and source == "vector":
        path = config.events.vector.path
        if path is None:
            raise ConfigError("events.vector.path is not set (events.source is 'vector')")
        if not Path(path).exists():
            raise ConfigError(f"events.vector.path: file not found: {path}")
    if verb == "train" and not (config.chips_path / "zarr.json").exists():
        raise ConfigError(f"{config.chips_path}: no chip store; run `forestnet build-training-set`")
    if verb == "map" and not (config.bundle_path / "bundle.json").exists():
        raise ConfigError(f"{config.bundle_path}: no model bundle; run `forestnet train` first")
    for key in ("treecover", "dem", "roads", "settlements", "peat", "climate", "landcover"):
        value = getattr(inputs, key)
        if value is not None and verb in ("build-training-set", "map"):  # read there only
            require_file(value, key)
    check_inputs(config, verb)  # opens files: after the cheap checks
