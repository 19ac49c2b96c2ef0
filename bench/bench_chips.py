"""Benchmark chip building against a plain windowed rasterio read of the same windows.

    .venv/bin/python bench/bench_chips.py [--preset tiny|demo] [--repeats 3] [--out DIR]

Both sides run in this process, on the same sample world, one after the other:
- chips: ``build_event_chip`` for every labelled event (scene-store reads, warp to the
  15 m UTM chip grid, QA mask, pan-sharpening, the median composite and the SDA views);
- baseline: for the same events and the same candidate scenes, ``rasterio`` reads of the
  window under the chip from each source GeoTIFF the chip uses (the Level-2 SR_B2-SR_B7
  and QA_PIXEL, and the Level-1 B8 pan of the same acquisition).

Three pairings, each best of ``--repeats`` passes over every event:
- ``cold``: each pass starts with cold decoded-pixel caches on both sides: the baseline
  opens every file afresh at the start of the pass (GDAL's block cache belongs to the
  open dataset) and keeps it open for the pass; the chip builder's chunk cache is
  emptied. Both still reuse what the pass itself decoded (neighbouring events share
  scenes). This is the province-scale case: a run over thousands of scenes reads each
  window a few times, never from a warm cache of the whole world. The headline ratio.
- ``warm``: files kept open across passes and the chunk cache kept: after the first
  pass both sides copy already decoded pixels (the whole demo world fits in the caches).
- ``reopen``: the baseline opens each file for each read (the simplest plain read).
Prints one JSON document: events/s of each, the ratios (goal >= 0.5) and the peak
resident memory of this process and its children. Both sides run on one thread.
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
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peak_memory import PeakMemory  # noqa: E402
from pipeline.core.radiometry import RADIOMETRY_LEVELS  # noqa: E402
from pipeline.imagery import composite_store  # noqa: E402
from pipeline.imagery.composite_store import CompositeSource  # noqa: E402
from pipeline.imagery.event_chips import build_event_chip  # noqa: E402
from pipeline.imagery.scene_windows import CACHE  # noqa: E402
from pipeline.imagery.views import ChipSpec, chip_geobox  # noqa: E402
from pipeline.ingest.catalog import pan_partners, query_scenes, read_index  # noqa: E402
from pipeline.sample_world import WorldSpec, generate_world  # noqa: E402
from pipeline.training_set.events import events_from_forestnet_csvs  # noqa: E402
from tests.world_chips import ingest_world  # noqa: E402

#: The source files a chip reads: the 30 m bands it keeps, the pan band and the QA band.
#: The files of each product level a chip reads (the pan comes from the Level-1 product).
BAND_FILES = {"L2": ("SR_B4", "SR_B3", "SR_B2", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL"),
              "L1": ("B4", "B3", "B2", "B5", "B6", "B7", "B8", "QA_PIXEL")}
GOAL = 0.5


def prepare(folder: Path, preset: str) -> tuple[Path, Path, object]:
    """Generate the world and ingest its scenes (not timed)."""
    world = folder / "world"
    generate_world(world, WorldSpec.tiny() if preset == "tiny" else WorldSpec.demo())
    store = ingest_world(world, folder / "scenes.zarr")
    csvs = {s: world / "events" / f"{s}.csv" for s in ("train", "val", "test")}
    events, problems = events_from_forestnet_csvs(csvs, world / "gfc" / "lossyear.tif")
    assert not problems, problems
    return world, store, events


def plan_reads(world: Path, events, index, spec: ChipSpec) -> list[list[tuple[Path, tuple]]]:
    """Per event: (file, bounds in the file's CRS) for every file a chip of ``spec``'s
    radiometry reads of every candidate scene: surface reflectance reads the Level-2
    bands and QA and the Level-1 pan of the same acquisition; toa the Level-1 files."""
    level = RADIOMETRY_LEVELS[spec.radiometry]
    plans = []
    for row in events.itertuples():
        geobox = chip_geobox(row.geometry, spec)
        footprint = geobox.extent.to_crs("EPSG:4326").geom
        found = query_scenes(index, footprint, _year(row.loss_year, -spec.years_window),
                             _year(row.loss_year, spec.years_window, end=True))
        scenes = found[found["level"].str.startswith(level)]
        pans = pan_partners(index, scenes)
        reads = []
        for scene_id in scenes["scene_id"]:
            files = [(scene_id, band) for band in BAND_FILES[level]]
            if scene_id in pans:
                files.append((pans[scene_id], "B8"))
            for product, band in files:
                path = world / "landsat" / product / f"{product}_{band}.TIF"
                reads.append((path, geobox.crs.to_wkt(), tuple(geobox.boundingbox)))
        plans.append(reads)
    return plans


def _year(year: int, offset: int, end: bool = False):
    import pandas as pd

    return pd.Timestamp(year=int(year) + offset, month=12 if end else 1, day=31 if end else 1)


def baseline_pass(plans: list, handles: dict | None) -> int:
    """Plain windowed reads of every planned window; returns bytes read.

    ``handles`` keeps files open between reads; None opens each file for each read.
    """
    nbytes = 0
    for reads in plans:
        for path, crs, bounds in reads:
            if handles is None:
                with rasterio.open(path) as src:
                    nbytes += _read(src, crs, bounds)
                continue
            src = handles.get(path) or handles.setdefault(path, rasterio.open(path))
            nbytes += _read(src, crs, bounds)
    return nbytes


def _read(src, crs: str, bounds: tuple) -> int:
    left, bottom, right, top = transform_bounds(crs, src.crs, *bounds)
    window = from_bounds(left, bottom, right, top, src.transform)
    window = window.round_offsets().round_lengths()
    return src.read(1, window=window, boundless=False).nbytes


def chips_pass(events, store: Path, index, spec: ChipSpec) -> int:
    ok = 0
    composite_store._CACHE.clear()  # no composite kept: every pass builds its cells
    source = CompositeSource(store, index, spec)
    for row in events.itertuples():
        chip = build_event_chip(row.geometry, int(row.loss_year), source)
        ok += chip.status == "ok"
    return ok


def cold_baseline_pass(plans: list) -> int:
    """``baseline_pass`` with every file opened afresh for this pass (cold block cache)."""
    handles: dict = {}
    try:
        return baseline_pass(plans, handles)
    finally:
        for src in handles.values():
            src.close()


def cold_chips_pass(events, store: Path, index, spec: ChipSpec) -> int:
    """``chips_pass`` starting from an empty decoded-chunk cache."""
    CACHE.clear()
    return chips_pass(events, store, index, spec)


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=["tiny", "demo"], default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="forestnet-bench-chips-"))
    folder.mkdir(parents=True, exist_ok=True)
    world, store, events = prepare(folder, args.preset)
    index = read_index(store)
    spec = ChipSpec()
    plans = plan_reads(world, events, index, spec)
    n = len(events)
    handles: dict = {}
    with PeakMemory() as mem:
        # Warm-up: the first pass opens files and fills the OS page cache for both sides.
        baseline_pass(plans[:1], handles)
        chips_pass(events.iloc[:1], store, index, spec)
        cold_chips_s, ok = best_of(args.repeats, cold_chips_pass, events, store, index, spec)
        cold_base_s, _ = best_of(args.repeats, cold_baseline_pass, plans)
        chips_s, _ = best_of(args.repeats, chips_pass, events, store, index, spec)
        base_s, nbytes = best_of(args.repeats, baseline_pass, plans, handles)
        reopen_s, _ = best_of(args.repeats, baseline_pass, plans, None)
    for src in handles.values():
        src.close()

    def rate(seconds: float) -> float:
        return round(n / seconds, 2)

    report = {
        "preset": args.preset,
        "events": n,
        "events_ok": int(ok),
        "scene_reads_per_event": round(float(np.mean([len(p) for p in plans])), 1),
        "cpus": psutil.cpu_count(),
        "load_avg_1min": round(psutil.getloadavg()[0], 2),
        "baseline_mb_read_per_pass": round(nbytes / 2**20, 1),
        "cold": {"chips_events_per_s": rate(cold_chips_s),
                 "baseline_events_per_s": rate(cold_base_s),
                 "ratio": round(cold_base_s / cold_chips_s, 3)},
        "warm": {"chips_events_per_s": rate(chips_s), "baseline_events_per_s": rate(base_s),
                 "ratio": round(base_s / chips_s, 3)},
        "reopen": {"chips_events_per_s": rate(chips_s),
                   "baseline_events_per_s": rate(reopen_s),
                   "ratio": round(reopen_s / chips_s, 3)},
        "goal": GOAL,
        "meets_goal_cold": cold_base_s / cold_chips_s >= GOAL,
        "peak_rss_mb": round(mem.peak / 2**20),
        "scene_chunk_cache_mb": round(CACHE.nbytes / 2**20, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
