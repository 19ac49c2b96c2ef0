"""A config's STAC search: the API, the job's area and dates, how to reach the assets."""

from __future__ import annotations

import math

from flows.config.schema import ConfigError, PipelineConfig
from pipeline.ingest.stac_search import StacSearch
from pipeline.mapping.tile_plan import job_area

#: The scene store's pixel size: parts of products are counted in these pixels.
SCENE_PIXEL_M = 30.0


def search_dates(config: PipelineConfig) -> str:
    """``inputs.landsat_stac.datetime``, else the mapping years widened by the chips'
    ``years_window`` on both sides (the scenes a chip may draw from)."""
    stac = config.inputs.landsat_stac
    if stac is not None and stac.datetime:
        return stac.datetime
    first, last = config.mapping.years
    window = config.chips.years_window
    return f"{first - window}-01-01/{last + window}-12-31"


def chip_margin(config: PipelineConfig) -> int:
    """One chip, in scene pixels: an event at the area's edge still gets its whole chip."""
    return math.ceil(config.chips.size * config.chips.resolution / SCENE_PIXEL_M)


def stac_search_for(config: PipelineConfig) -> StacSearch:
    """The search ``inputs.landsat_stac`` describes, over the job's area."""
    stac = config.inputs.landsat_stac
    if stac is None:
        raise ConfigError("inputs.landsat_stac is not set: name a STAC API (--stac-api)")
    area = job_area(config.mapping.provinces, config.mapping.aoi, stac.bbox)
    return StacSearch(stac.url, tuple(stac.collections), area, search_dates(config),
                      stac.max_cloud, stac.signing, stac.requester_pays, stac.page_size)
