"""Command-line and deployment overrides of a loaded config, validated like the file."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flows.config.schema import ConfigError, PipelineConfig, format_validation_error


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
