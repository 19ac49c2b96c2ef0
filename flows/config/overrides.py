"""Command-line and deployment overrides of a loaded config, validated like the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.config.schema import (
    ConfigError,
    LandsatStacConfig,
    PipelineConfig,
    format_validation_error,
    require_file,
)


def with_cluster_address(config: PipelineConfig, address: str | None) -> PipelineConfig:
    """Attach to the cluster at ``address`` instead of the configured one (when given)."""
    if not address:
        return config
    # model_copy skips validation: ClusterConfig's rule "an address always wins" covers it.
    cluster = config.cluster.model_copy(update={"address": address})
    return config.model_copy(update={"cluster": cluster})


def with_mapping(config: PipelineConfig, update: dict[str, Any],
                 source: str = "map options") -> PipelineConfig:
    """``config`` with mapping fields replaced; a bad value is one line naming ``source``."""
    if not update:
        return config
    try:
        mapping = type(config.mapping).model_validate({**config.mapping.model_dump(), **update})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None
    return config.model_copy(update={"mapping": mapping})


def with_stac_search(config: PipelineConfig, url: str | None, collections: list[str] | None,
                     bbox: str | None, dates: str | None, max_cloud: float | None
                     ) -> PipelineConfig:
    """``inputs.landsat_stac`` with the ``forestnet ingest``/``plan`` options given over
    the config's own; a bad value is one line naming the option."""
    box = None
    if bbox:
        try:
            box = tuple(float(v) for v in bbox.split(","))
        except ValueError:
            raise ConfigError(f"--bbox {bbox!r}: expected W,S,E,N in degrees") from None
    given = {k: v for k, v in {"url": url, "collections": collections, "bbox": box,
                               "datetime": dates, "max_cloud": max_cloud}.items()
             if v is not None and v != []}
    if not given:
        return config
    current = config.inputs.landsat_stac
    try:
        stac = LandsatStacConfig.model_validate(
            {**(current.model_dump() if current is not None else {}), **given})
    except ValidationError as exc:
        raise ConfigError(f"STAC search options: {format_validation_error(exc)}") from None
    inputs = config.inputs.model_copy(update={"landsat_stac": stac})
    return config.model_copy(update={"inputs": inputs})


def with_job_area(config: PipelineConfig, provinces: list[str] | None, aoi: Path | None,
                  years: tuple[int, int] | None = None) -> PipelineConfig:
    """The job's provinces, area of interest or loss years from command-line options."""
    update: dict[str, Any] = {}
    if provinces:
        update["provinces"] = provinces
    if aoi is not None:
        update["aoi"] = require_file(aoi, "--aoi", "map").resolve()
    if years is not None:
        update["years"] = years
    return with_mapping(config, update)
