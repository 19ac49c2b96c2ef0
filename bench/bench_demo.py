"""Benchmark the demo's stages: wall time and peak memory per stage, plus baseline ratios.

    uv run python bench/bench_demo.py [--preset tiny|demo] [--out DIR]

Prints one JSON document. Every speed figure is a ratio against a baseline measured in
the same run on the same machine, so numbers from different machines compare:
- ingest: pipeline ingest throughput / bare rasterio read of the same GeoTIFFs;
- map: mapping throughput (events/s, chips built from the Zarr store, model, GeoPackage)
  / bare model-forward throughput on ready tensors of the same shape.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peak_memory import PeakMemory  # noqa: E402
from flows.config.schema import load_config  # noqa: E402
from flows.demo import world_spec  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from flows.mapping import mapping_flow  # noqa: E402
from flows.runtime.cluster import dask_client  # noqa: E402
from flows.train import train_flow  # noqa: E402
from flows.training_set import training_set_flow  # noqa: E402
from pipeline.sample_world import generate_world  # noqa: E402
from tests.tiny_config import write_tiny_config  # noqa: E402


def timed(fn, *args) -> tuple[object, dict]:
    with PeakMemory() as mem:
        start = time.perf_counter()
        result = fn(*args)
        seconds = time.perf_counter() - start
    return result, {"seconds": round(seconds, 2), "peak_rss_mb": round(mem.peak / 2**20)}


def raw_read_seconds(landsat: Path) -> tuple[float, int]:
    """Baseline: read every band GeoTIFF whole with rasterio (no Zarr, no Dask)."""
    files = sorted(landsat.glob("*/*.TIF"))
    start = time.perf_counter()
    nbytes = 0
    for path in files:
        with rasterio.open(path) as src:
            nbytes += src.read(1).nbytes
    return time.perf_counter() - start, nbytes


def forward_chips_per_second(bundle: Path, n: int = 16, batch: int = 8) -> float:
    """Baseline: bare model forward on ready tensors shaped like mapping inputs."""
    from forestnet_model.predict import cached_bundle

    model, meta = cached_bundle(str(bundle.resolve()), "cpu")
    x = torch.randn(batch, meta.model.in_channels, 352, 352)
    with torch.inference_mode():
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(n // batch):
            model(x)
    return n / (time.perf_counter() - start)


def _noop_flow() -> None:
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    warm_up()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=["tiny", "demo"], default="tiny")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="forestnet-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    world = folder / "world"
    overrides = {"sample_world": {"preset": args.preset}}
    if args.preset == "demo":
        overrides["train"] = {"epochs": 2, "batch_size": 8, "crop": 64}
        overrides["mapping"] = {"batch_size": 16}
    config = load_config(write_tiny_config(folder, world, **overrides))
    torch.set_num_threads(2)

    stages: dict[str, dict] = {}
    # The first flow call starts Prefect's temporary API: time it apart from the stages.
    _, stages["prefect_api_start"] = timed(_noop_flow)
    _, stages["sample_data"] = timed(generate_world, world, world_spec(config))
    with dask_client(config.cluster, echo=lambda m: print(m, file=sys.stderr)) as client:
        address = client.scheduler.address
        _, stages["ingest"] = timed(ingest_flow, config, address)
        _, stages["build_training_set"] = timed(training_set_flow, config, address)
        _, stages["train"] = timed(train_flow, config, address)
        result, stages["map"] = timed(mapping_flow, config, address)

    import geopandas as gpd

    n_events = sum(len(gpd.read_file(p, layer="forest_loss_drivers"))
                   for p in result["geopackages"])
    raw_s, nbytes = raw_read_seconds(world / "landsat")
    forward = forward_chips_per_second(config.bundle_path)
    map_rate = n_events / stages["map"]["seconds"]
    report = {
        "preset": args.preset,
        "machine": {"cpus": psutil.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "stages": stages,
        "ratios": {
            "ingest_throughput_over_raw_read": round(raw_s / stages["ingest"]["seconds"], 4),
            "map_events_per_s_over_forward_chips_per_s": round(map_rate / forward, 4),
        },
        "baselines": {"raw_read_mb_per_s": round(nbytes / 2**20 / raw_s, 1),
                      "forward_chips_per_s": round(forward, 2),
                      "map_events_per_s": round(map_rate, 2), "events_mapped": n_events},
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 2),
        "note": "peak_rss_mb sums the flow process, the Prefect API and the Dask workers",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
