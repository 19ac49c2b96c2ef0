"""Demo flow: the whole chain on the generated sample world, ending in a GeoPackage."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.config.input_checks import require_writable
from flows.config.schema import PipelineConfig
from flows.ingest import ingest_flow
from flows.mapping import mapping_flow
from flows.train import train_flow
from flows.training_set import training_set_flow
from pipeline.sample_world import WorldSpec, generate_world


def world_spec(config: PipelineConfig) -> WorldSpec:
    base = WorldSpec.tiny() if config.sample_world.preset == "tiny" else WorldSpec.demo()
    from dataclasses import replace

    return replace(base, seed=config.sample_world.seed)


def check_inputs(config: PipelineConfig) -> None:
    """The demo makes its own inputs: only its work folder must be writable."""
    require_writable(config.workdir, "workdir")


@task(name="sample-world")
def sample_world(config: PipelineConfig) -> str:
    """Generate (or reuse) the deterministic sample world."""
    return str(generate_world(Path(config.sample_world.out), world_spec(config)))


@flow(name="demo", log_prints=True)
def demo_flow(config: PipelineConfig, client_address: str) -> dict:
    """sample world -> ingest -> training set -> train -> map."""
    logger = get_run_logger()
    manifest = sample_world(config)
    logger.info("sample world: %s", manifest)
    ingest = ingest_flow(config, client_address)
    chips = training_set_flow(config, client_address)
    model = train_flow(config, client_address)
    maps = mapping_flow(config, client_address)
    return {"manifest": manifest, "ingest": ingest, "chips": chips, "model": model, **maps}
