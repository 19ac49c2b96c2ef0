"""``run.json``: what produced an output folder (config, code, inputs, model, times, counts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from flows.config.schema import PipelineConfig
from pipeline.core.atomic import atomic_output
from pipeline.core.json_ready import json_ready
from pipeline.ingest.catalog import ingested_scene_ids

RUN_RECORD = "run.json"


def run_record(config: PipelineConfig, verb: str, started: datetime, counts: dict[str, Any],
               from_scenes: bool = True, **extra: Any) -> dict[str, Any]:
    """Provenance of one run of ``verb``; ``extra`` adds verb-specific fields.

    ``from_scenes`` False for outputs not made from the scene store (a release import).
    """
    from forestnet_model.bundle_meta import git_sha, package_versions

    return {
        "verb": verb,
        "started": started.isoformat(),
        "ended": datetime.now(UTC).isoformat(),
        "git_sha": git_sha(),
        "package_versions": package_versions(),
        "seeds": {"sample_world": config.sample_world.seed, "split": config.events.split.seed,
                  "train": config.train.seed},
        "input_scene_ids": ingested_scene_ids(config.scene_store) if from_scenes else [],
        "bundle": bundle_id(config.bundle_path),
        "counts": counts,
        "config": json.loads(config.model_dump_json()),
        **extra,
    }


def write_run_record(record: dict[str, Any], folder: Path) -> Path:
    """Write ``<folder>/run.json`` atomically (the latest run into that folder)."""
    path = Path(folder) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        # Strict JSON (NaN metrics as null), so every JSON reader takes it.
        Path(tmp).write_text(json.dumps(json_ready(record), indent=2, sort_keys=True,
                                        default=str, allow_nan=False))
    return path


def bundle_id(bundle: Path) -> str:
    """The bundle's model_id (a hash of its weights), '' when there is none."""
    manifest = Path(bundle) / "bundle.json"
    if not manifest.exists():
        return ""
    return str(json.loads(manifest.read_text()).get("model_id", ""))


def chip_band_stats(chips_path: Path) -> dict[str, dict[str, float]]:
    """The store's band statistics in the release's display units, for its ``run.json``;
    each band far off the release's is logged as a warning."""
    from pipeline.training_set.band_stats import band_warnings, display_band_stats
    from pipeline.training_set.chip_store import open_chips

    stats = display_band_stats(open_chips(chips_path))
    for line in band_warnings(stats):
        get_run_logger().warning("%s: %s", chips_path, line)
    return stats
