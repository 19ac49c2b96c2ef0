"""What a map job's config decides beyond its fields: the provinces, the run id, the
parts folder, and the inputs it must have before it starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flows.config.input_checks import (
    check_lossyear_file,
    check_map_bundle,
    require_aux_files,
    require_model_sources,
    require_scene_index,
    require_writable,
)
from flows.config.schema import ConfigError, PipelineConfig, require_file
from forestnet_model.bundle_meta import BundleMeta, is_complete, read_bundle_meta
from pipeline.core.provinces import province_names, select_provinces
from pipeline.core.radiometry import RADIOMETRY_LEVELS, require_same
from pipeline.ingest.catalog import ingested_scene_ids, read_index
from pipeline.mapping.area_of_interest import read_aoi
from pipeline.mapping.parts import file_version, parts_key
from pipeline.training_set.auxiliary import AuxSources


def chosen_provinces(config: PipelineConfig) -> list[str]:
    """Every province with ``mapping.all``, else the named ones (validated)."""
    if config.mapping.all:
        return province_names()
    return sorted(select_provinces(config.mapping.provinces)["province"])


def run_id_for(config: PipelineConfig, model_id: str) -> str:
    """Deterministic run id: the same job (config + model) resumes into the same folder."""
    key = json.dumps({"mapping": config.mapping.model_dump(), "chips": config.chips.model_dump(),
                      "model": model_id}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def parts_dir_for(config: PipelineConfig, meta: BundleMeta) -> Path:
    """The parts folder of this (years, model, inputs, settings) combination."""
    # Aux files shape the parts only when the model reads aux bands or scalars.
    aux_keys = AuxSources.names() if meta.model.aux_bands or meta.model.fusion_features else ()
    inputs = {"lossyear": file_version(config.inputs.lossyear),
              # The scenes themselves, not the index file: ingest rewrites it on every run.
              "scenes": hashlib.sha256(",".join(ingested_scene_ids(config.scene_store)).encode())
              .hexdigest(),
              **{k: file_version(getattr(config.inputs, k)) for k in aux_keys}}
    settings = {"chips": config.chips.model_dump(mode="json"), "aux": list(meta.model.aux_bands),
                "scalars": list(meta.model.fusion_features)}
    key = parts_key(config.mapping.years, meta.model_id, inputs, settings)
    return config.workdir / "map-parts" / key


def check_inputs(config: PipelineConfig) -> None:
    """Everything `forestnet map` reads, checked before it starts: one line per problem."""
    mapping = config.mapping
    if mapping.aoi is not None:
        require_file(mapping.aoi, "aoi", "mapping")
    elif not mapping.all:
        select_provinces(mapping.provinces)
    require_file(config.inputs.lossyear, "lossyear")
    require_scene_index(config)
    if not is_complete(config.bundle_path):
        raise ConfigError(f"{config.bundle_path}: no model bundle; run `forestnet train` first")
    require_aux_files(config)
    # Then the checks that open files or probe folders.
    require_writable(config.workdir, "workdir")
    if mapping.out is not None:
        require_writable(mapping.out, "mapping.out")
    check_lossyear_file(config.inputs.lossyear)
    if mapping.aoi is not None:
        read_aoi(mapping.aoi)
    check_map_bundle(config.bundle_path)
    require_model_sources(config, config.bundle_path)
    check_map_radiometry(config)


def check_map_radiometry(config: PipelineConfig) -> None:
    """The bundle was trained on chips of the configured radiometry, and the scene store
    holds scenes of it: a model never meets numbers of another kind."""
    bundle = read_bundle_meta(config.bundle_path)
    require_same(config.chips.radiometry, "chips.radiometry in the config", bundle.radiometry,
                 f"the model bundle {config.bundle_path}")
    level = RADIOMETRY_LEVELS[bundle.radiometry]
    levels = sorted(set(read_index(config.scene_store)["level"].dropna().astype(str)))
    if not any(lv.startswith(level) for lv in levels):
        have = "toa" if level == "L2" else "surface"
        require_same(have, f"every scene in {config.scene_store} ({', '.join(levels)})",
                     bundle.radiometry, f"the model bundle {config.bundle_path}")
