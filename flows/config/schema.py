"""Typed pipeline configuration (YAML validated by pydantic; unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows.config.cluster import ClusterConfig
from forestnet_model.specs import ModelSpec, TrainSpec
from pipeline.core.errors import ForestNetError
from pipeline.imagery.views import ChipSpec
from pipeline.training_set.auxiliary import AUX_BANDS, AUX_SCALARS, AuxSources, check_aux_names
from pipeline.training_set.event_sources import EventSourceSpec


class ConfigError(ForestNetError, ValueError):
    """A configuration problem, reported as one line naming the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SampleWorldConfig(_Strict):
    preset: Literal["demo", "tiny"] = Field("demo", description="size of the generated world")
    seed: int = Field(42, description="random seed; the world is deterministic from it")
    out: Path = Field(Path("outputs/demo/sample-world"), description="where the world is written")


class LandsatStacConfig(_Strict):
    """Where to search Landsat products (``forestnet ingest --stac-api`` sets it too)."""

    url: str = Field(description="STAC API root, e.g. https://earth-search.aws.element84.com/v1")
    collections: list[str] = Field(min_length=1, description="e.g. landsat-c2-l2; with "
                                   "Level-1 (B8 pan) and Level-2 for surface reflectance")
    max_cloud: float | None = Field(None, ge=0, le=100, description="scene cloud cover, %")
    signing: Literal["none", "planetary-computer"] = Field(
        "none", description="planetary-computer: sign asset URLs (and re-sign on expiry)")
    requester_pays: bool = Field(False, description="s3 assets in a requester-pays bucket "
                                 "(USGS's usgs-landsat)")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="W, S, E, N in degrees; default: the mapping area (provinces or aoi)")
    datetime: str | None = Field(None, description="START/END; default: the mapping years "
                                 "plus and minus chips.years_window")
    page_size: int = Field(100, ge=1, le=10_000, description="items per page of results")


class InputsConfig(AuxSources):
    """Input files: the scenes, the events, the lossyear and the auxiliary sources (the
    pipeline's ``AuxSources`` keys). Relative paths are relative to the current directory."""

    landsat: list[Path | str] = Field(
        default_factory=list,
        description="product folders (or folders holding them), USGS .tar bundles, STAC Item "
        "JSON files; URLs (https://, s3://) stay strings",
    )
    landsat_stac: LandsatStacConfig | None = Field(
        None, description="search a STAC API and stream the products' assets")
    events_csv_dir: Path | None = Field(
        None, description="folder with ForestNet train/val/test CSVs"
    )
    lossyear: Path | None = Field(None, description="GFC lossyear GeoTIFF")

    def aux_sources(self) -> AuxSources:
        """The auxiliary sources alone, as the chip and map stages take them."""
        return AuxSources(**{name: getattr(self, name) for name in AuxSources.names()})

    @field_validator("landsat", mode="before")
    @classmethod
    def _paths_unless_urls(cls, value: object) -> object:
        # A Path would fold "https://host" into "https:/host": keep URLs as strings.
        if isinstance(value, list):
            return [v if isinstance(v, str) and "://" in v else Path(v) for v in value]
        return value


class ChipsConfig(ChipSpec):
    """The pipeline's ``ChipSpec``, and how many events each coarse task builds."""

    batch_size: int = Field(8, ge=1, description="events per coarse task")

    def spec(self) -> ChipSpec:
        """The chip spec alone, as the chip and map stages take it."""
        return ChipSpec(**self.model_dump(exclude={"batch_size"}))


class AuxConfig(_Strict):
    bands: tuple[str, ...] = Field(AUX_BANDS, description="per-pixel aux bands stored (aux)")
    features: tuple[str, ...] = Field(AUX_SCALARS, description="aux scalars stored (aux_scalar)")

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        check_aux_names(v, ())
        return v

    @field_validator("features")
    @classmethod
    def _known_features(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        check_aux_names((), v)
        return v


class MappingConfig(_Strict):
    provinces: list[str] = Field(
        default_factory=lambda: ["Kalimantan Tengah"],
        description="province names (case-insensitive); one GeoPackage each",
    )
    all: bool = Field(False, description="every province, plus the merged indonesia.gpkg")
    aoi: Path | None = Field(None, description="vector file of an area of interest instead of "
                             "provinces; one GeoPackage named after the file")
    years: tuple[int, int] = Field((2013, 2016), description="first and last loss year")
    tiles_per_task: int = Field(8, ge=1, description="tiles per coarse Dask task")
    max_in_flight: int = Field(8, ge=1, description="coarse tasks in flight at once (waves)")
    infer_batch_size: int = Field(4, ge=1, description="tiles per model forward pass")
    cpu_runtime: Literal["auto", "eager", "onnxruntime"] = Field(
        "auto", description="how a CPU worker runs the network: onnxruntime (~1.6x eager's "
        "speed, same probabilities within 1e-3), eager PyTorch, or auto (onnxruntime where "
        "installed); CUDA always runs eager PyTorch")
    min_event_pixels: int = Field(6, ge=1, description="smaller merged GFC loss events "
                                  "(speckle) are left out")
    out: Path | None = Field(None, description="GeoPackage folder (default <workdir>/maps)")
    driver_raster: bool = Field(False, description="also write a driver COG per output")
    dominant_grid: bool = Field(False, description="also write the 1 km dominant-driver grid")

    def year_list(self) -> list[int]:
        """Every loss year mapped, first to last."""
        return list(range(self.years[0], self.years[1] + 1))

    @field_validator("years")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] > v[1] or v[0] < 2001:
            raise ValueError(f"years {v} must be (first, last) with 2001 <= first <= last")
        return v


class PipelineConfig(_Strict):
    workdir: Path = Field(Path("outputs/demo"), description="stores, bundles and maps go here")
    scenes: Path | None = Field(None, description="scene store (default <workdir>/scenes.zarr)")
    composites: Path | None = Field(
        None, description="composite store: each lattice cell's composite, built once and "
        "reused by chips and maps (default <workdir>/composites.zarr)")
    cluster: ClusterConfig = ClusterConfig()
    sample_world: SampleWorldConfig = SampleWorldConfig()
    inputs: InputsConfig = InputsConfig()
    events: EventSourceSpec = EventSourceSpec()
    chips: ChipsConfig = ChipsConfig()
    aux: AuxConfig = AuxConfig()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    mapping: MappingConfig = MappingConfig()

    @property
    def scene_store(self) -> Path:
        return self.scenes if self.scenes is not None else self.workdir / "scenes.zarr"

    @property
    def composite_store(self) -> Path:
        return self.composites if self.composites is not None else \
            self.workdir / "composites.zarr"

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
    """Load and validate a YAML config; errors name the file and the offending keys.

    ``cluster:`` may name a recipe file (``configs/clusters/*.yaml``) instead of holding
    the section itself; the recipe's ``cluster`` section is used.
    """
    if path is None:
        return PipelineConfig()
    path = Path(path)
    raw = _read_mapping(path)
    if isinstance(raw.get("cluster"), str):
        raw = {**raw, "cluster": _cluster_recipe(Path(raw["cluster"]), path)}
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def _cluster_recipe(recipe: Path, referrer: Path) -> dict:
    """The ``cluster`` section of a recipe file, validated so errors name the recipe."""
    if not recipe.is_file():
        raise ConfigError(f"{referrer}: 'cluster': recipe file not found: {recipe}")
    section = _read_mapping(recipe).get("cluster")
    if not isinstance(section, dict):
        raise ConfigError(f"{recipe}: a cluster recipe holds a top-level 'cluster:' mapping")
    try:
        ClusterConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(f"{recipe}: {format_validation_error(exc)}") from None
    return section


def format_validation_error(exc: ValidationError) -> str:
    """One line: each bad key with its reason."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']}" if key else err["msg"])
    return "; ".join(parts)


def parse_years(years: str) -> tuple[int, int]:
    """``"2015-2020"`` -> ``(2015, 2020)``; ``"2016"`` -> ``(2016, 2016)``."""
    first, _, last = years.strip().partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise ConfigError(f"years {years!r}: expected FIRST-LAST, e.g. 2013-2016") from None


def require_file(value: Path | None, key: str, section: str = "inputs") -> Path:
    """An input that must exist: a one-line error names the key and the path."""
    if value is None:
        raise ConfigError(f"{section}.{key} is not set")
    if not Path(value).exists():
        raise ConfigError(f"{section}.{key}: file not found: {value}")
    return Path(value)
