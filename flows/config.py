"""Typed pipeline configuration (YAML validated by pydantic; unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from forestnet_model.model import ModelSpec
from forestnet_model.train import TrainSpec


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClusterConfig(_Strict):
    address: str | None = Field(None, description="existing Dask scheduler; None: LocalCluster")
    n_workers: int = Field(2, ge=1, description="LocalCluster worker processes")
    threads_per_worker: int = Field(1, ge=1, description="threads per LocalCluster worker")
    memory_limit: str = Field("6GiB", description="memory limit per LocalCluster worker")
    gpu: Literal["auto", "off"] = Field(
        "auto", description="auto: give LocalCluster workers GPU resources when CUDA is visible"
    )


class SampleWorldConfig(_Strict):
    preset: Literal["demo", "tiny"] = Field("demo", description="size of the generated world")
    seed: int = Field(42, description="random seed; the world is deterministic from it")
    out: Path = Field(Path("outputs/demo/sample-world"), description="where the world is written")


class InputsConfig(_Strict):
    """Input files. Relative paths are relative to the current directory."""

    landsat: list[Path] = Field(
        default_factory=list, description="product folders, or folders holding them"
    )
    events_csv_dir: Path | None = Field(
        None, description="folder with ForestNet train/val/test CSVs"
    )
    lossyear: Path | None = Field(None, description="GFC lossyear GeoTIFF")
    treecover: Path | None = Field(None, description="GFC treecover2000 GeoTIFF")
    dem: Path | None = Field(None, description="SRTM-style DEM GeoTIFF")
    roads: Path | None = Field(None, description="road lines (GPKG/GeoParquet/Shapefile)")
    settlements: Path | None = Field(None, description="settlement points")
    peat: Path | None = Field(None, description="peat polygons")
    climate: Path | None = Field(None, description="climate GeoTIFF (precipitation, temperature)")


class ChipsConfig(_Strict):
    size: int = Field(332, ge=64, description="chip edge in pixels")
    resolution: float = Field(15.0, gt=0, description="chip pixel size in metres")
    max_single_views: int = Field(4, ge=0, description="single scenes kept per event for SDA")
    max_view_cloud: float = Field(0.5, ge=0, le=1, description="cloud filter for a view")
    batch_size: int = Field(8, ge=1, description="events per coarse task")


class MappingConfig(_Strict):
    provinces: list[str] = Field(
        default_factory=lambda: ["Kalimantan Tengah"],
        description="province names (case-insensitive)",
    )
    years: tuple[int, int] = Field((2013, 2016), description="first and last loss year")
    batch_size: int = Field(16, ge=1, description="events per coarse task")
    min_event_pixels: int = Field(6, ge=1, description="smaller GFC loss components are ignored")

    @field_validator("years")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] > v[1] or v[0] < 2001:
            raise ValueError(f"years {v} must be (first, last) with 2001 <= first <= last")
        return v


class PipelineConfig(_Strict):
    workdir: Path = Field(Path("outputs/demo"), description="stores, bundles and maps go here")
    scenes: Path | None = Field(None, description="scene store (default <workdir>/scenes.zarr)")
    cluster: ClusterConfig = ClusterConfig()
    sample_world: SampleWorldConfig = SampleWorldConfig()
    inputs: InputsConfig = InputsConfig()
    chips: ChipsConfig = ChipsConfig()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    mapping: MappingConfig = MappingConfig()

    @property
    def scene_store(self) -> Path:
        return self.scenes if self.scenes is not None else self.workdir / "scenes.zarr"

    @property
    def events_path(self) -> Path:
        return self.workdir / "events.parquet"

    @property
    def chips_path(self) -> Path:
        return self.workdir / "chips.zarr"

    @property
    def model_dir(self) -> Path:
        return self.workdir / "model"

    @property
    def bundle_path(self) -> Path:
        return self.model_dir / "bundle"

    @property
    def maps_dir(self) -> Path:
        return self.workdir / "maps"


def load_config(path: Path | None) -> PipelineConfig:
    """Load and validate a YAML config; errors name the file and the offending keys."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line: each bad key with its reason."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']}")
    return "; ".join(parts)


def require_file(value: Path | None, key: str) -> Path:
    """An input that must exist: a one-line error names the key and the path."""
    if value is None:
        raise ConfigError(f"inputs.{key} is not set")
    if not Path(value).exists():
        raise ConfigError(f"inputs.{key}: file not found: {value}")
    return Path(value)


def preflight(config: PipelineConfig, verb: str) -> None:
    """Check a verb's inputs before any flow starts, so that errors are one line."""
    inputs = config.inputs
    if verb == "map":
        from pipeline.provinces import select_provinces

        select_provinces(config.mapping.provinces)
    if verb == "ingest":
        if not inputs.landsat:
            raise ConfigError("inputs.landsat is empty: name product folders or pass SOURCES")
        for i, path in enumerate(inputs.landsat):
            require_file(path, f"landsat[{i}]")
    if verb in ("build-training-set", "map"):
        require_file(inputs.lossyear, "lossyear")
        if not (config.scene_store / "index.parquet").exists():
            raise ConfigError(f"{config.scene_store}: no scene index; run `forestnet ingest` first")
    if verb == "build-training-set":
        require_file(inputs.events_csv_dir, "events_csv_dir")
    if verb == "train" and not (config.chips_path / "zarr.json").exists():
        raise ConfigError(f"{config.chips_path}: no chip store; run `forestnet build-training-set`")
    if verb == "map" and not (config.bundle_path / "bundle.json").exists():
        raise ConfigError(f"{config.bundle_path}: no model bundle; run `forestnet train` first")
    for key in ("treecover", "dem", "roads", "settlements", "peat", "climate"):
        value = getattr(inputs, key)
        if value is not None and verb != "demo":
            require_file(value, key)
