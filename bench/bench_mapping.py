"""Benchmark tile mapping: the real flow against a bare model forward, at several job sizes.

    .venv/bin/python bench/bench_mapping.py [--preset demo|large|national]
                                            [--sizes 4,16,64,256] [--repeats 2] [--out DIR]

Setup (not timed): a sample world (``demo``: 24 km, 24 tiles with 2013-2016 loss;
``large``: 44 km, 216 events, 80 tiles; ``national``: 84 km, 790 events, for jobs of
256 tiles), its scenes ingested, an untrained
EfficientNet-B2 FPN bundle, and the tiles with loss planned in the flow's order. A job of
N tiles is an AOI GeoPackage covering exactly the first N (``mapping.aoi``).

- **Fixed costs**, reported apart: the ephemeral Prefect API's start, with the model's
  load on the workers running meanwhile as ``forestnet map`` starts it, and what is left
  of that load after the API is up.
- **P6/P7.** ``mapping_flow`` per size (best of ``--repeats``) on one 2-worker
  LocalCluster (1 thread each; batching as the config defaults), after a warm-up (model
  loaded on every worker, one cold 2-tile run). Each run starts from no map parts and no
  composite store, on a LocalCluster of its own with the model loaded (untimed), as a
  `forestnet map` command starts its own cluster. Goals: from 16
  tiles up, seconds per tile within 15% of the largest job's; peak worker RSS within 10%
  across sizes.
  Seconds per tile = (predict-tiles + write-geopackages task runs, from the Prefect API) /
  N; the Prefect API start is reported apart. The Dask task stream gives each task's
  compute time and the workers' busy fraction; worker RSS is polled every 50 ms (P7).
- **P4.** The largest job's tiles are prepared once here with ``prepare_tiles``
  (instrumented per step: the CPU-half breakdown). The network's forward alone (as the
  flow runs it: ``cached_forward``, ``mapping.cpu_runtime``) is then timed over
  those input tensors, in batches of ``mapping.infer_batch_size``: on the same two Dask
  workers at once, after the jobs (each its half, at the workers' 1 thread: the headline
  baseline), here
  at 1 thread, and here at 2 threads (first 16 tiles; OpenMP stalls on a busy machine).
  ``infer_tiles`` also runs here at 1 thread to split the model half.

Prints one JSON document; ratios compare numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.forward_baselines import (  # noqa: E402
    forward_on_workers,
    forward_seconds,
    infer_here,
    model_batches,
)
from bench.mapping_probes import (  # noqa: E402
    WorkerMemory,
    dask_time,
    instrumented,
    task_seconds,
)
from pipeline.sample_world import WorldSpec, generate_world  # noqa: E402
from tests.world_chips import ingest_world  # noqa: E402

GOAL_RATIO = 0.7
GOAL_SPREAD = 0.15
GOAL_RSS = 0.10
YEARS = (2013, 2016)
PRESETS = {"demo": WorldSpec.demo(), "large": replace(WorldSpec.demo(), size_km=44.0,
                                                      n_events=216),
           # About 280 tiles with loss at the large preset's event density: P6/P7 at 256.
           "national": replace(WorldSpec.demo(), size_km=84.0, n_events=790)}
#: Plausible surface-reflectance statistics (red, green, blue, nir, swir1, swir2), the
#: chips' default radiometry; untrained weights.
NORMALISATION = {"mean": [0.03, 0.05, 0.025, 0.3, 0.15, 0.07], "std": [0.03] * 6}


@dataclass
class Job:
    folder: Path
    world: Path
    config: object  # PipelineConfig
    tiles: pd.DataFrame  # planned tiles with loss, in the flow's order


def prepare_job(folder: Path, preset: str) -> Job:
    """World, scene store, untrained EfficientNet-B2 bundle and planned tiles (not timed)."""
    from flows.config.schema import load_config
    from tests.tiny_config import write_tiny_config

    world = folder / "world"
    generate_world(world, PRESETS[preset])
    path = write_tiny_config(
        folder, world,
        cluster={"n_workers": 2, "threads_per_worker": 1, "memory_limit": "6GiB"},
        mapping={"years": list(YEARS), "tiles_per_task": 8, "max_in_flight": 8,
                 "infer_batch_size": 4, "out": str(folder / "maps")})
    config = load_config(path)
    ingest_world(world, config.scene_store)
    from forestnet_model.bundle import is_complete

    if not is_complete(config.bundle_path):
        from forestnet_model.bundle import save_bundle
        from forestnet_model.model import build_model
        from forestnet_model.specs import ModelSpec

        torch.manual_seed(0)
        spec = ModelSpec(encoder="efficientnet-b2")
        save_bundle(build_model(spec).eval(), {"model": spec, "normalisation": NORMALISATION,
                                               "radiometry": "surface"}, config.bundle_path)
    return Job(folder, world, config, plan_all_tiles(config.inputs.lossyear))


def plan_all_tiles(lossyear: Path) -> pd.DataFrame:
    """Tiles with loss of ``YEARS`` over the whole raster, sorted as plan-tiles sorts them."""
    import rasterio

    from pipeline.mapping.loss_pieces import plan_blocks, tiles_in_block
    from pipeline.mapping.tile_plan import merge_block_tiles

    with rasterio.open(lossyear) as src:
        b = src.bounds
    years = range(YEARS[0], YEARS[1] + 1)
    return merge_block_tiles([tiles_in_block(lossyear, blk, years, None)
                              for blk in plan_blocks(lossyear, (b.left, b.bottom, b.right, b.top))])


def write_aoi(tile_ids: list[str], path: Path) -> Path:
    """A GeoPackage whose area is exactly the union of these tiles' cores."""
    import geopandas as gpd
    import shapely

    from pipeline.core.tile_lattice import MapTile

    frames = []
    for tile_id in tile_ids:
        tile = MapTile.from_id(tile_id)
        core = gpd.GeoSeries([shapely.box(*tile.bounds())], crs=tile.crs.to_wkt())
        frames.append(core.segmentize(50.0).to_crs("EPSG:4326"))
    area = shapely.union_all(pd.concat(frames).to_numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(geometry=[area], crs="EPSG:4326").to_file(path)
    return path


def run_flow(job: Job, client, tile_ids: list[str], name: str, pids: dict) -> dict:
    """One mapping job over an AOI of exactly ``tile_ids``, from no map parts."""
    from flows.mapping import mapping_flow
    from pipeline.imagery.composite_store import clear_caches

    cfg = job.config
    for sub in ("map-parts", "map-runs", "composites.zarr"):
        shutil.rmtree(cfg.workdir / sub, ignore_errors=True)
    # Every job starts cold: no composite kept, no decoded chunk or cell on the workers.
    client.run(clear_caches)
    aoi = write_aoi(tile_ids, job.folder / "aoi" / f"{name}.gpkg")
    config = cfg.model_copy(update={"mapping": cfg.mapping.model_copy(update={"aoi": aoi})})
    with WorkerMemory(pids) as mem, contextlib.redirect_stdout(sys.stderr):
        epoch, start = time.time(), time.perf_counter()
        state = mapping_flow(config, client.scheduler.address, return_state=True)
        wall = time.perf_counter() - start
    result = state.result()
    tasks = task_seconds(state.state_details.flow_run_id)
    dask = dask_time(client.get_task_stream(start=epoch), len(tile_ids))
    tally = result["tiles"]
    if tally["done"] != len(tile_ids) or tally["failed"]:
        raise RuntimeError(f"{name}: expected {len(tile_ids)} tiles done, got {tally}")
    predict, write = tasks.get("predict-tiles", np.nan), tasks.get("write-geopackages", np.nan)
    n = len(tile_ids)
    return {"tiles": n, "events": result["summary"]["events"]["total"],
            "flow_call_s": round(wall, 2), "flow_reported_s": round(result["seconds"], 2),
            "plan_s": round(tasks.get("plan-tiles", np.nan), 2), "predict_s": round(predict, 2),
            "write_s": round(write, 2), "predict_write_s": round(predict + write, 2),
            "seconds_per_tile": round((predict + write) / n, 3),
            "tiles_per_s": round(n / (predict + write), 3), "dask": dask,
            "workers_busy_fraction_in_predict": round(
                sum(dask["compute_s"].values()) / (predict * len(pids)), 3),
            "memory": mem.report()}


def prepare_here(config, tile_ids: list[str], totals: dict) -> tuple[list, float]:
    """``prepare_tiles`` in this process, as the flow's CPU task calls it; (inputs, seconds)."""
    from forestnet_model.bundle import read_bundle_meta
    from pipeline.mapping.tile_inputs import prepare_tiles

    meta = read_bundle_meta(config.bundle_path)
    years = list(range(YEARS[0], YEARS[1] + 1))
    start = time.perf_counter()
    with instrumented(totals):
        inputs = prepare_tiles(tile_ids, config.inputs.lossyear, years, config.scene_store,
                               config.chips.spec(), meta.model.in_bands, meta.model.aux_bands,
                               config.inputs.aux_sources(),
                               event_context=meta.model.event_context)
    seconds = time.perf_counter() - start
    bad = [t.tile_id for t in inputs if t.error]
    if bad:
        raise RuntimeError(f"prepare_tiles failed for {bad}: {inputs[0].error}")
    return inputs, seconds


def noop_flow() -> None:
    from prefect import flow

    @flow(name="bench-prefect-start")
    def start() -> int:
        return 1

    start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--sizes", default="4,16,64,256",
                        help="job sizes in tiles; capped at the tiles with loss")
    parser.add_argument("--repeats", type=int, default=2, help="flow runs per size (best)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="forestnet-bench-mapping-"))
    folder.mkdir(parents=True, exist_ok=True)
    setup_start = time.perf_counter()
    job = prepare_job(folder, args.preset)
    setup_s = time.perf_counter() - setup_start
    all_ids = job.tiles["tile_id"].tolist()
    sizes = sorted({min(int(s), len(all_ids)) for s in args.sizes.split(",")})
    cfg = job.config
    bundle = str(Path(cfg.bundle_path).resolve())
    n_workers, per_worker = cfg.cluster.n_workers, cfg.cluster.threads_per_worker
    runtime = cfg.mapping.cpu_runtime

    from flows.runtime.cluster import dask_client
    from flows.runtime.model_preload import load_model, preload_model

    report: dict = {"preset": args.preset, "tiles_with_loss": len(all_ids),
                    "loss_pixels_per_tile_mean": round(float(job.tiles["n_loss"].mean()), 1),
                    "setup_s_not_timed": round(setup_s, 1),
                    "machine": {"cpus": psutil.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
                    "cluster": {"n_workers": n_workers, "threads_per_worker": per_worker,
                                **{k: getattr(cfg.mapping, k) for k in (
                                    "tiles_per_task", "max_in_flight", "infer_batch_size")}}}
    runs: dict[str, dict] = {}
    with dask_client(cfg.cluster, echo=lambda m: print(m, file=sys.stderr)) as client:
        client.get_task_stream(count=1)  # installs the scheduler's task-stream plugin
        pids = client.run(os.getpid)
        # The command's fixed costs, as `forestnet map` has them: the model's load starts
        # on the workers (preload_model) while the ephemeral Prefect API starts.
        start = time.perf_counter()
        preload_model(client, cfg.bundle_path, runtime)
        with contextlib.redirect_stdout(sys.stderr):
            noop_flow()
        api_s = time.perf_counter() - start
        client.run(load_model, bundle, runtime)  # waits for what is left of the load
        fixed_s = time.perf_counter() - start
        start = time.perf_counter()
        client.run(load_model, bundle, runtime)  # a cached model: the bare call
        report["fixed_costs_s"] = {
            "prefect_api_start": round(api_s, 2),
            "model_load_left_after_api_start": round(fixed_s - api_s
                                                     - (time.perf_counter() - start), 2),
            "total": round(fixed_s, 2),
            "note": "reported apart from the per-tile figures; the model load overlaps the "
                    "API start (flows/runtime/model_preload.py)"}
        report["worker_torch_threads"] = sorted(set(client.run(torch.get_num_threads).values()))
        cold = run_flow(job, client, all_ids[:2], "cold-2", pids)
        report["cold_flow_2_tiles"] = {k: cold[k] for k in ("flow_call_s", "predict_write_s")}
        # P4's tensors: the largest job's tiles, prepared once here (instrumented).
        big = all_ids[:sizes[-1]]
        totals: dict[str, float] = defaultdict(float)
        inputs, prepare_s = prepare_here(cfg, big, totals)
        batches = model_batches(cfg, inputs, cfg.mapping.infer_batch_size)
        for n in sizes:  # best of --repeats: other processes on the machine come and go
            tries = []
            for _ in range(max(1, args.repeats)):
                # Each job on a cluster of its own, as `forestnet map` starts one: what one
                # job of n tiles holds (P7), not what earlier jobs left in the caches.
                with dask_client(cfg.cluster, echo=lambda m: print(m, file=sys.stderr)) as own:
                    own.get_task_stream(count=1)
                    own.run(load_model, bundle, runtime)  # loaded before timing
                    tries.append(run_flow(job, own, all_ids[:n], f"tiles-{n}",
                                          own.run(os.getpid)))
            runs[str(n)] = min(tries, key=lambda r: r["seconds_per_tile"])
            runs[str(n)]["all_seconds_per_tile"] = [r["seconds_per_tile"] for r in tries]
            print(f"size {n}: {runs[str(n)]['all_seconds_per_tile']} s/tile", file=sys.stderr)
        # The baseline after the jobs: scattered inputs would otherwise sit in the workers
        # the largest job is measured on.
        base_rates = [sizes[-1] / forward_on_workers(client, bundle, batches, per_worker,
                                                     runtime)
                      for _ in range(max(1, args.repeats))]
        pair_ratios = [t / b for t, b in zip(
            [1 / s for s in runs[str(sizes[-1])]["all_seconds_per_tile"]], base_rates,
            strict=True)]
    t0, t1 = forward_seconds(bundle, batches, per_worker, runtime)
    here_s = t1 - t0
    few = batches[:max(1, 16 // cfg.mapping.infer_batch_size)]
    t0, t1 = forward_seconds(bundle, few, n_workers * per_worker, runtime)
    few_rate = sum(len(x) for x in few) / (t1 - t0)
    infer_s = infer_here(cfg, inputs, totals, per_worker)
    n = len(big)
    flow_rate = runs[str(sizes[-1])]["tiles_per_s"]
    on_workers_rate = max(base_rates)
    report["P4_throughput"] = {
        "tiles": n, "model_inputs": sum(len(t.samples) for t in inputs),
        "flow_tiles_per_s": flow_rate,
        "forward_on_workers_tiles_per_s": round(on_workers_rate, 3),
        "ratio_flow_over_forward_on_workers": round(flow_rate / on_workers_rate, 3),
        "ratio_each_pair": [round(r, 3) for r in pair_ratios],
        "forward_on_workers_each_tiles_per_s": [round(r, 3) for r in base_rates],
        f"forward_here_{per_worker}_thread_tiles_per_s": round(n / here_s, 3),
        f"ratio_flow_over_{n_workers}x_forward_here": round(flow_rate / (n_workers * n / here_s),
                                                             3),
        f"forward_here_{n_workers * per_worker}_threads_tiles_per_s_first_16": round(few_rate, 3),
        f"ratio_flow_over_forward_here_{n_workers * per_worker}_threads": round(
            flow_rate / few_rate, 3),
        "ceiling_forward_over_prepare_plus_infer": round(
            totals["infer.forward"] / (prepare_s + infer_s), 3),
        "goal": GOAL_RATIO, "meets_goal": flow_rate / on_workers_rate >= GOAL_RATIO,
        "note": "headline: best flow / best forward alone (the flow's cached_forward and "
                "CPU runtime) on the same 2 worker processes "
                "at their thread count (each measured right before a flow run); the ceiling is "
                "what a flow without orchestration cost could reach given prepare here",
    }
    big_run = runs[str(sizes[-1])]
    worker_s = big_run["predict_s"] * n_workers / n
    report["breakdown_per_tile_s"] = {
        "note": f"prepare_tiles and infer_tiles run here one after the other at "
                f"{per_worker} torch thread(s); flow_* from the largest job's Prefect task runs "
                "and Dask task stream",
        "prepare_tiles": round(prepare_s / n, 3),
        "infer_tiles": round(infer_s / n, 3),
        "steps": {k: round(v / n, 3) for k, v in sorted(totals.items()) if k[0] != "#"},
        "calls_per_tile": {k[1:]: round(v / n, 2) for k, v in sorted(totals.items())
                           if k[0] == "#"},
        "flow_worker_s_per_tile_in_predict": round(worker_s, 3),
        "flow_compute_s_per_tile_by_task": big_run["dask"]["compute_s_per_tile"],
        "flow_workers_busy_fraction": big_run["workers_busy_fraction_in_predict"],
        "flow_plan_s": big_run["plan_s"], "flow_write_geopackages_s": big_run["write_s"],
        "flow_call_minus_tasks_s": round(big_run["flow_call_s"] - big_run["plan_s"]
                                         - big_run["predict_write_s"], 2),
    }
    per_tile = {int(k): r["seconds_per_tile"] for k, r in runs.items()}
    largest = per_tile[sizes[-1]]
    # From 16 tiles up, each size against the largest job's figure (goal +/- 15%).
    off = {n: round(v / largest - 1, 3) for n, v in per_tile.items() if n >= 16}
    report["P6_per_tile_s"] = {
        "seconds_per_tile": per_tile, "relative_to_largest_from_16_up": off,
        "goal": GOAL_SPREAD, "meets_goal": all(abs(v) <= GOAL_SPREAD for v in off.values()),
        "runs": runs}
    rss = {int(k): r["memory"]["max_worker_peak_rss_mb"] for k, r in runs.items()}
    rss_spread = (max(rss.values()) - min(rss.values())) / min(rss.values())
    report["P7_peak_worker_rss_mb"] = {
        "by_size": rss, "spread_max_over_min": round(rss_spread, 3), "goal": GOAL_RSS,
        "meets_goal": rss_spread <= GOAL_RSS}
    report["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))




if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
