"""Benchmark scene ingest: input MB/s against a plain rasterio read of the same files.

    .venv/bin/python bench/bench_ingest.py [--preset tiny|demo] [--tile N] [--copies K]
                                           [--workers W] [--out DIR]

Prints one JSON document. Input MB is the sum of the band files' sizes on disk (the
GeoTIFFs the ingest reads: B1-B8 and QA_PIXEL). The baseline reads each of them whole
(``src.read(1)``) in this process, one after another; the ingest reads, validates and
writes the Zarr store (zstd, chunk-aligned) and the index row. Both run in the same
process on a warm page cache, so the ratio compares across machines.

The ingest is timed three ways: in this process, scene after scene (``ingest_source``),
once with its default threads per scene (every CPU: one band file read while another is
compressed) and once single-threaded; and fanned out to a Dask LocalCluster of W
single-threaded worker processes, one task per scene, as the flow does (workers started
and warmed first; Prefect's own start-up is not counted). The baseline reads on one
thread; the parallel ratios also compare with the same reads on W threads, so the figures
on many cores compare like with like too (as does the single-threaded one). Peak memory (RSS
of this process and its children, sampled every 10 ms) is measured for 2 scenes and for
all of them.

``--tile N`` makes each sample scene N x N times larger (tiled copies of its rasters, MTL
sizes updated), to see the ratio at real scene sizes (a Landsat scene is ~7,800 pixels
a side; the demo's are 800). ``--copies K`` ingests K copies of every scene (each under
its own product id), so the memory peak is seen over more scenes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs.blosc
import psutil
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peak_memory import PeakMemory  # noqa: E402
from pipeline import scene_store  # noqa: E402
from pipeline.ingest import ingest_row, ingest_source  # noqa: E402
from pipeline.sample_world import WorldSpec, generate_world  # noqa: E402
from pipeline.sources import folder_source  # noqa: E402
from tests.ingest_inputs import derived_product  # noqa: E402

BAND_SUFFIXES = tuple(f"_B{b}.TIF" for b in range(1, 9)) + ("_QA_PIXEL.TIF",)


def band_files(products: list[Path]) -> list[Path]:
    return sorted(p for d in products for p in d.iterdir() if p.name.endswith(BAND_SUFFIXES))


def _read_whole(path: Path) -> None:
    with rasterio.open(path) as src:
        src.read(1)


def raw_read_seconds(files: list[Path], threads: int = 1) -> float:
    """Baseline: read every band GeoTIFF whole with rasterio (no Zarr, no Dask), on
    ``threads`` threads (GDAL decodes without the GIL, so threads use every core)."""
    start = time.perf_counter()
    if threads == 1:
        for path in files:
            _read_whole(path)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(_read_whole, files))
    return time.perf_counter() - start


def ingest_in_process(products: list[Path], store: Path) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    with PeakMemory() as mem:
        start = time.perf_counter()
        for product in products:
            assert ingest_source(folder_source(product), store).status == "ingested"
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": mem.peak / 2**20}


def ingest_on_cluster(client, products: list[Path], store: Path) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    with PeakMemory() as mem:
        start = time.perf_counter()
        futures = [client.submit(ingest_row, folder_source(p), str(store), pure=False)
                   for p in products]
        rows = client.gather(futures)
        seconds = time.perf_counter() - start
    assert all(r["status"] == "ingested" for r in rows), [r["error"] for r in rows]
    return {"seconds": seconds, "peak_rss_mb": mem.peak / 2**20}


def _warm_worker() -> None:
    import pipeline.ingest  # noqa: F401  (imports are paid before the clock starts)


def best(runs: list[dict]) -> dict:
    """Fastest run; the highest memory peak of all runs."""
    fastest = min(runs, key=lambda r: r["seconds"])
    return {**fastest, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def summary(mb: float, raw_s: float, all_runs: dict, two: dict, n: int,
            raw_parallel_s: float | None = None) -> dict:
    parallel = ({} if raw_parallel_s is None else
                {"ratio_vs_parallel_raw_read": round(raw_parallel_s / all_runs["seconds"], 3)})
    return {
        "mb_per_s": round(mb / all_runs["seconds"], 1),
        "ratio_vs_raw_read": round(raw_s / all_runs["seconds"], 3),
        **parallel,
        "peak_rss_mb": {"2_scenes": round(two["peak_rss_mb"]),
                        f"{n}_scenes": round(all_runs["peak_rss_mb"])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "demo"], default="demo")
    parser.add_argument("--tile", type=int, default=1, help="scale each scene N x N")
    parser.add_argument("--copies", type=int, default=1, help="ingest K copies of each scene")
    parser.add_argument("--workers", type=int, default=psutil.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="forestnet-bench-ingest-"))
    spec = WorldSpec.tiny() if args.preset == "tiny" else WorldSpec.demo()
    world = generate_world(folder / f"world-{args.preset}", spec).parent
    originals = sorted(p for p in (world / "landsat").iterdir() if p.is_dir())
    products = originals
    if args.tile > 1 or args.copies > 1:
        scenes = folder / f"scenes-t{args.tile}-c{args.copies}"
        shutil.rmtree(scenes, ignore_errors=True)
        products = [derived_product(p, scenes, args.tile, c)
                    for c in range(args.copies) for p in originals]
    files = band_files(products)
    mb = sum(f.stat().st_size for f in files) / 2**20
    raw_read_seconds(files)  # warm the page cache and GDAL
    raw_s = min(raw_read_seconds(files) for _ in range(args.repeat))
    raw_parallel_s = min(raw_read_seconds(files, args.workers) for _ in range(args.repeat))

    ingest_in_process(products[:1], folder / "warm.zarr")
    local = best([ingest_in_process(products, folder / "local.zarr") for _ in range(args.repeat)])
    local_two = ingest_in_process(products[:2], folder / "local2.zarr")
    threads = scene_store.scene_threads()
    # The same code on one thread: one band at a time, and Blosc without its own threads
    # (it starts them when called from the main thread, as here; in a worker it doesn't).
    scene_store.scene_threads = lambda: 1
    numcodecs.blosc.use_threads = False
    single = best([ingest_in_process(products, folder / "local1.zarr")
                   for _ in range(args.repeat)])
    single_two = ingest_in_process(products[:2], folder / "local1-2.zarr")
    numcodecs.blosc.use_threads = None

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="4GiB") as cluster, \
            Client(cluster) as client:
        client.run(_warm_worker)
        ingest_on_cluster(client, products[:args.workers], folder / "warm.zarr")
        two = ingest_on_cluster(client, products[:2], folder / "cluster2.zarr")
        full = best([ingest_on_cluster(client, products, folder / "cluster.zarr")
                     for _ in range(args.repeat)])

    with rasterio.open(next(f for f in files if f.name.endswith("_B4.TIF"))) as src:
        shape = src.shape
    report = {
        "preset": args.preset,
        "scenes": len(products),
        "scene_shape_30m": list(shape),
        "input_mb": round(mb, 1),
        "machine": {"cpus": psutil.cpu_count(), "workers": args.workers,
                    "load_avg_1min": round(psutil.getloadavg()[0], 2)},
        "raw_read_mb_per_s": round(mb / raw_s, 1),
        "raw_read_parallel_mb_per_s": round(mb / raw_parallel_s, 1),
        "ingest_in_process": {"threads_per_scene": threads,
                              **summary(mb, raw_s, local, local_two, len(products),
                                        raw_parallel_s)},
        "ingest_in_process_1_thread": {"threads_per_scene": 1,
                                       **summary(mb, raw_s, single, single_two, len(products))},
        "ingest_dask_cluster": {"workers": args.workers, "threads_per_worker": 1,
                                **summary(mb, raw_s, full, two, len(products),
                                          raw_parallel_s)},
        "baseline": "rasterio src.read(1) of every band file, one thread",
        "parallel_baseline": f"the same reads on {args.workers} threads",
        "store_mb": round(sum(f.stat().st_size for f in (folder / "cluster.zarr").rglob("*")
                              if f.is_file()) / 2**20, 1),
        "goal_ratio": 0.8,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
