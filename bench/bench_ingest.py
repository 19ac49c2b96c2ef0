"""Benchmark scene ingest: input MB/s against a plain rasterio read of the same files.

    .venv/bin/python bench/bench_ingest.py [--preset tiny|demo] [--tile N] [--copies K]
                                           [--workers W] [--out DIR]

Prints one JSON document. Input MB is the sum of the band files' sizes on disk (the
GeoTIFFs the ingest reads: B1-B8 and QA_PIXEL). The baseline reads each of them whole
(``src.read(1)``) in this process, one after another; the ingest reads, validates and
writes the Zarr store (Blosc LZ4, one shard file per row of chunks) and the index row.
Both run on a warm page cache, so the ratio compares across machines.

The ingest is timed three ways: fanned out to a Dask LocalCluster of W single-threaded
worker processes, one task per scene, as the flow does (workers started and warmed first;
Prefect's own start-up is not counted); in this process, scene after scene
(``ingest_source``) with its default threads per scene; and in this process on one
thread. The baseline reads on one thread; the parallel ratios also compare with the
same reads on W threads, so the figures on many cores compare like with like too (as
does the one-thread one).

Timings come in rounds (``--repeat``): each round runs both baselines and the three
ingests back to back, and each ratio is reported as the median over rounds, with its
range. Peak memory (RSS of this process and its children) is measured in separate runs,
for 2 scenes and for all of them, so sampling it costs the timed runs nothing.

``--tile N`` makes each sample scene N x N times larger (tiled copies of its rasters, MTL
sizes updated), to see the ratio at real scene sizes (a Landsat scene is ~7,800 pixels
a side; the demo's are 800). ``--copies K`` ingests K copies of every scene (each under
its own product id), so the memory peak is seen over more scenes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numcodecs.blosc
import psutil
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peak_memory import PeakMemory  # noqa: E402
from pipeline.ingest import scene_store  # noqa: E402
from pipeline.ingest.scene_ingest import ingest_row, ingest_source  # noqa: E402
from pipeline.ingest.sources import folder_source  # noqa: E402
from pipeline.sample_world import WorldSpec, generate_world  # noqa: E402
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


def ingest_in_process(products: list[Path], store: Path, keep: bool = False) -> float:
    """Seconds to ingest ``products`` in this process, scene after scene, into a new store
    (removed after, unless ``keep``)."""
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    for product in products:
        assert ingest_source(folder_source(product), store).status == "ingested"
    seconds = time.perf_counter() - start
    if not keep:
        shutil.rmtree(store, ignore_errors=True)
    return seconds


def ingest_on_cluster(client, products: list[Path], store: Path, keep: bool = False) -> float:
    """Seconds to ingest ``products`` as the flow does: one task per scene on ``client``."""
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    futures = [client.submit(ingest_row, folder_source(p), str(store), pure=False)
               for p in products]
    rows = client.gather(futures)
    seconds = time.perf_counter() - start
    assert all(r["status"] == "ingested" for r in rows), [r["error"] for r in rows]
    if not keep:
        shutil.rmtree(store, ignore_errors=True)
    return seconds


def peak_rss_mb(ingest, products: list[Path], children: bool) -> float:
    """Peak RSS while ``ingest(products)`` runs: of this process and its children (the
    cluster's workers), or of this process alone.

    Apart from the timed runs: sampling the process tree every 20 ms costs ~1 ms each
    time, a few percent of a core that the timed runs should not lose.
    """
    with PeakMemory(children=children) as mem:
        ingest(products)
    return round(mem.peak / 2**20)


def store_mb(store: Path) -> float:
    """Size on disk of a store, in MiB."""
    return round(sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20, 1)


def _warm_worker() -> None:
    import pipeline.ingest.scene_ingest  # noqa: F401  (imports are paid before the clock starts)


@contextmanager
def one_thread_per_scene():
    """The ingest on one thread: one band at a time, Blosc without its own threads (it
    starts them when called from the main thread, as here; in a worker it doesn't)."""
    threads = scene_store.scene_threads
    scene_store.scene_threads = lambda: 1
    numcodecs.blosc.use_threads = False
    try:
        yield
    finally:
        scene_store.scene_threads = threads
        numcodecs.blosc.use_threads = None


def ratios(baseline: list[float], ingest: list[float]) -> dict:
    """Per-round ratios of baseline seconds over ingest seconds: median and range."""
    values = [b / i for b, i in zip(baseline, ingest, strict=True)]
    return {"median": round(statistics.median(values), 3),
            "range": [round(min(values), 3), round(max(values), 3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "demo"], default="demo")
    parser.add_argument("--tile", type=int, default=1, help="scale each scene N x N")
    parser.add_argument("--copies", type=int, default=1, help="ingest K copies of each scene")
    parser.add_argument("--workers", type=int, default=psutil.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of timings")
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
    ingest_in_process(products[:1], folder / "warm.zarr")

    from distributed import Client, LocalCluster

    from flows.runtime.cluster import tune_workers

    seconds: dict[str, list[float]] = {k: [] for k in (
        "raw", "raw_parallel", "in_process", "in_process_1_thread", "cluster")}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="4GiB") as cluster, \
            Client(cluster) as client:
        tune_workers(client)  # as the flow's clusters do
        client.run(_warm_worker)
        ingest_on_cluster(client, products[:args.workers], folder / "warm.zarr")
        # Each round times the baselines and every ingest back to back, so a ratio pairs
        # runs made under the same conditions (a shared VM's speed drifts over minutes).
        for _ in range(args.repeat):
            seconds["raw"].append(raw_read_seconds(files))
            seconds["raw_parallel"].append(raw_read_seconds(files, args.workers))
            seconds["in_process"].append(ingest_in_process(products, folder / "local.zarr"))
            with one_thread_per_scene():
                seconds["in_process_1_thread"].append(
                    ingest_in_process(products, folder / "local1.zarr"))
            seconds["cluster"].append(
                ingest_on_cluster(client, products, folder / "cluster.zarr"))
        ingest_on_cluster(client, products, folder / "cluster.zarr", keep=True)
        memory = {
            "dask_cluster": {
                f"{n}_scenes": peak_rss_mb(
                    lambda ps: ingest_on_cluster(client, ps, folder / "mem.zarr"),
                    products[:n], children=True) for n in (2, len(products))},
            "in_process": {
                f"{n}_scenes": peak_rss_mb(
                    lambda ps: ingest_in_process(ps, folder / "mem.zarr"),
                    products[:n], children=False) for n in (2, len(products))},
        }

    with rasterio.open(next(f for f in files if f.name.endswith("_B4.TIF"))) as src:
        shape = src.shape
    def figures(name: str, parallel: bool) -> dict:
        out = {"mb_per_s": round(mb / statistics.median(seconds[name]), 1),
               "ratio_vs_raw_read": ratios(seconds["raw"], seconds[name])}
        if parallel:
            out["ratio_vs_parallel_raw_read"] = ratios(seconds["raw_parallel"], seconds[name])
        return out

    report = {
        "preset": args.preset,
        "scenes": len(products),
        "scene_shape_30m": list(shape),
        "input_mb": round(mb, 1),
        "machine": {"cpus": psutil.cpu_count(), "workers": args.workers,
                    "load_avg_1min": round(psutil.getloadavg()[0], 2)},
        "rounds": args.repeat,
        "raw_read_mb_per_s": round(mb / statistics.median(seconds["raw"]), 1),
        "raw_read_parallel_mb_per_s": round(mb / statistics.median(seconds["raw_parallel"]), 1),
        "ingest_dask_cluster": {"workers": args.workers, "threads_per_worker": 1,
                                **figures("cluster", parallel=True)},
        "ingest_in_process": {"threads_per_scene": scene_store.scene_threads(),
                              **figures("in_process", parallel=True)},
        "ingest_in_process_1_thread": {"threads_per_scene": 1,
                                       **figures("in_process_1_thread", parallel=False)},
        "peak_rss_mb": memory,
        "baseline": "rasterio src.read(1) of every band file, one thread",
        "parallel_baseline": f"the same reads on {args.workers} threads",
        "store_mb": store_mb(folder / "cluster.zarr"),
        "goal_ratio": 0.8,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
