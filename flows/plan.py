"""`forestnet plan`: what a map job over an area and years would do, before it does anything.

The products a search (or the local inputs) holds, per path/row and year; the bytes their
ingest would read; the tiles with loss; and the CPU core-hours and GPU-minutes that the
rates in ``configs/throughput.yaml`` (each measured by a bench) make of them. Nothing is
written: no store, no Prefect run, no cluster.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml
from odc.geo.geom import Geometry

from flows.config.mapping_job import chosen_provinces
from flows.config.schema import ConfigError, PipelineConfig, require_file
from flows.config.stac_job import chip_margin, search_dates, stac_search_for
from pipeline.core.tile_lattice import MapTile
from pipeline.imagery.composite_cells import lattice_cells
from pipeline.imagery.composite_store import CompositeSource, composites_needed
from pipeline.ingest.catalog import read_index
from pipeline.ingest.product_bytes import product_bytes
from pipeline.ingest.sources import read_source_metadata, resolve_sources
from pipeline.ingest.stac_search import acquisition, search_products
from pipeline.mapping import tile_plan
from pipeline.mapping.loss_pieces import years_of_mask

RATES = Path(__file__).resolve().parents[1] / "configs" / "throughput.yaml"


def plan_job(config: PipelineConfig, rates_path: Path = RATES) -> dict:
    """The plan as a JSON-ready dict (see the module docstring)."""
    lossyear = require_file(config.inputs.lossyear, "lossyear")
    area = None
    if config.inputs.landsat_stac is not None:
        search = stac_search_for(config)
        sources, area = search_products(search).sources, search.area
        ids = [s.name for s in sources]
    elif config.inputs.landsat:
        sources = resolve_sources(list(config.inputs.landsat))
        ids = [read_source_metadata(s).product_id for s in sources]
    else:
        raise ConfigError("nothing to plan: set inputs.landsat or search a STAC API")
    margin = chip_margin(config)
    part = None if area is None else Geometry(area, "EPSG:4326")
    to_read, full = map(sum, zip(*(product_bytes(s, part, margin) for s in sources),
                                 strict=True)) if sources else (0, 0)
    acquisitions = [acquisition({"id": i}) for i in ids]
    per_path_row = Counter((f"{path}/{row}", date[:4]) for path, row, date in acquisitions)
    job_area = tile_plan.mapping_area(config.mapping.aoi, chosen_provinces(config))
    years = config.mapping.year_list()
    tiles, _ = tile_plan.tiles_with_loss(lossyear, job_area, years)
    composites = composite_plan(config, list(zip(tiles["tile_id"], tiles["loss_years"],
                                                 strict=True)), years)
    rates = yaml.safe_load(rates_path.read_text())
    # Composites kept in the store cost nothing; before ingest, count one per lattice cell
    # under the tiles (a tile's 3 x 3 neighbourhood shares cells with its neighbours).
    to_build = composites["to_build"]
    if to_build is None:
        to_build = len({c for t in tiles["tile_id"]
                        for c in lattice_cells(MapTile.from_id(t).geobox())})
    cpu_s = (to_read / 1e6 * rates["ingest_core_s_per_mb"]["value"]
             + len(tiles) * rates["map_core_s_per_tile"]["value"]
             + to_build * rates["map_core_s_per_composite_cell"]["value"])
    return {
        "area": {"provinces": chosen_provinces(config), "aoi": str(config.mapping.aoi or ""),
                 "bbox": list(area.bounds) if area is not None else None},
        "loss_years": [years[0], years[-1]],
        "scene_dates": search_dates(config),
        "products": {"count": len(ids),
                     "per_path_row_year": {f"{pr} {y}": n
                                           for (pr, y), n in sorted(per_path_row.items())}},
        "bytes": {"to_read": int(to_read), "full": int(full)},
        "tiles_with_loss": {"count": len(tiles), "ids": list(tiles["tile_id"])},
        "composites": composites,
        "estimate": {"cpu_core_hours": cpu_s / 3600,
                     "gpu_minutes": len(tiles) / rates["gpu_tiles_per_s"]["value"] / 60},
        "rates": rates,
    }


def composite_plan(config: PipelineConfig, tiles: list[tuple[str, int]], years: list[int]
                   ) -> dict:
    """Cell composites the map job would build and reuse (``composite_store``): known
    once the scenes are in the store's index; before ingest, every one is to build."""
    store = config.composite_store
    if not (config.scene_store / "index.parquet").exists():
        return {"to_build": None, "reused": 0, "store": str(store),
                "note": "scenes not ingested yet: every composite will be built"}
    source = CompositeSource(config.scene_store, read_index(config.scene_store),
                             config.chips.spec(), store)
    to_build, reused = composites_needed(
        [(MapTile.from_id(t).geobox(), [y for y in years_of_mask(mask) if y in years])
         for t, mask in tiles], source)
    return {"to_build": to_build, "reused": reused, "store": str(store)}


def plan_text(plan: dict) -> str:
    """The plan as a user reads it in a terminal."""
    products, size = plan["products"], plan["bytes"]
    share = f" ({size['to_read'] / size['full']:.0%})" if size["full"] else ""
    lines = [f"loss years {plan['loss_years'][0]}-{plan['loss_years'][1]}; scenes "
             f"{plan['scene_dates']}; area {', '.join(plan['area']['provinces'])}"
             + (f" / bbox {plan['area']['bbox']}" if plan["area"]["bbox"] else ""),
             f"products: {products['count']}"]
    lines += [f"  {key}: {n}" for key, n in products["per_path_row_year"].items()]
    lines += [f"bytes to read: {size['to_read'] / 1e6:.1f} MB of {size['full'] / 1e6:.1f} MB"
              f"{share}",
              f"tiles with loss: {plan['tiles_with_loss']['count']}",
              _composites_line(plan["composites"]),
              f"estimate: {plan['estimate']['cpu_core_hours']:.3g} CPU core-hours, "
              f"{plan['estimate']['gpu_minutes']:.3g} GPU-minutes, from:"]
    lines += [f"  {name} = {rate['value']} ({rate['source']})"
              for name, rate in plan["rates"].items()]
    return "\n".join(lines)


def _composites_line(composites: dict) -> str:
    if composites["to_build"] is None:
        return f"composites: {composites['note']} ({composites['store']})"
    return (f"composites: {composites['to_build']} to build, {composites['reused']} reused "
            f"from {composites['store']}")
