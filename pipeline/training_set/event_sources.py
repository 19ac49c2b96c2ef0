"""Where a training set's events come from (ForestNet CSVs, every GFC loss event, or a
vector file) and how they are split: the spec the config embeds, and the one function
that turns it into labelled events."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import geopandas as gpd
import rasterio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.training_set.event_vectors import events_from_vector
from pipeline.training_set.events import (
    EventInputError,
    events_from_forestnet_csvs,
    loss_regions,
)
from pipeline.training_set.splits import assign_splits


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VectorEventsSpec(_Spec):
    path: Path | None = Field(None, description="GPKG, GeoParquet or Shapefile of event polygons")
    layer: str | None = Field(None, description="layer name (GPKG); None: the first layer")
    year_column: str = Field("loss_year", description="column holding the loss year")
    label_column: str | None = Field(None, description="column with the fine ForestNet label")
    split_column: str | None = Field(None, description="column with train/val/test")


class SplitSpec(_Spec):
    method: Literal["auto", "published", "spatial"] = Field(
        "auto", description="published: the source's split; spatial: blocked random split; "
        "auto: published when every event has one, else spatial"
    )
    block_km: float = Field(10.0, gt=0, description="block edge of the spatial split (km)")
    seed: int = Field(0, description="random seed of the spatial split")
    fractions: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="train/val/test shares of the spatial split"
    )

    @field_validator("fractions")
    @classmethod
    def _shares(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"fractions {v} must be non-negative and sum to 1")
        return v


class EventSourceSpec(_Spec):
    source: Literal["forestnet_csv", "gfc", "vector"] = Field(
        "forestnet_csv", description="forestnet_csv: inputs.events_csv_dir + lossyear; gfc: "
        "every loss event of inputs.lossyear; vector: polygons of events.vector.path"
    )
    min_pixels: int = Field(6, ge=1, description="smaller GFC loss components are speckle")
    min_event_ha: float = Field(0.0, ge=0, description="smaller events are dropped (hectares, "
                                "equal-area CRS)")
    group_by_tile: bool = Field(False, description="one event per 0.045 degree (~5 km) tile and "
                                "year, as ForestNet grouped loss; else one per connected region")
    search_m: float = Field(2500.0, gt=0, description="forestnet_csv: search radius for loss")
    years: tuple[int, int] = Field((2001, 2016), description="gfc: first and last loss year")
    bounds: tuple[float, float, float, float] | None = Field(
        None, description="gfc: lon/lat window (west, south, east, north); None: whole raster"
    )
    vector: VectorEventsSpec = VectorEventsSpec()
    split: SplitSpec = SplitSpec()


def make_events(spec: EventSourceSpec, lossyear: Path | None, events_csv_dir: Path | None
                ) -> tuple[gpd.GeoDataFrame, list[str]]:
    """Events from ``spec``'s source, with splits; and the problems met on the way.

    Finding no usable event is an error naming the source: a training set of nothing
    should stop here, not at training time.
    """
    group = "tile" if spec.group_by_tile else "component"
    problems: list[str] = []
    if spec.source == "vector":
        v = spec.vector
        events, problems = events_from_vector(Path(v.path), v.year_column, v.label_column,
                                              v.split_column, v.layer, spec.min_event_ha)
        where = v.path
    elif spec.source == "gfc":
        lossyear = _required(lossyear, "inputs.lossyear")
        bounds = spec.bounds
        if bounds is None:
            with rasterio.open(lossyear) as src:
                bounds = tuple(src.bounds)
        first, last = spec.years
        events = loss_regions(lossyear, bounds, range(first, last + 1), spec.min_pixels,
                              spec.min_event_ha, group)
        where = lossyear
    else:
        csv_dir = _required(events_csv_dir, "inputs.events_csv_dir")
        csvs = {name: csv_dir / f"{name}.csv" for name in ("train", "val", "test")
                if (csv_dir / f"{name}.csv").exists()}
        if not csvs:
            raise EventInputError(f"{csv_dir}: no train.csv, val.csv or test.csv")
        events, problems = events_from_forestnet_csvs(
            csvs, _required(lossyear, "inputs.lossyear"), spec.search_m, spec.min_pixels,
            spec.min_event_ha, group)
        where = csv_dir
    if events.empty:
        shown = "; ".join(problems[:3]) or "nothing matched"
        raise EventInputError(f"{where}: no usable {spec.source} events ({len(problems)} "
                              f"refused: {shown})")
    split = spec.split
    return assign_splits(events, split.method, split.block_km, split.seed,
                         split.fractions), problems


def _required(path: Path | None, key: str) -> Path:
    if path is None:
        raise EventInputError(f"{key} is not set")
    return Path(path)
