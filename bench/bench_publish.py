"""Benchmark the streamed map publish: a national map of millions of events, bounded memory.

    .venv/bin/python bench/bench_publish.py [--pieces 2000000] [--tiles 20000]
        [--small-pieces 200000] [--small-tiles 2000] [--repeats 1] [--parts DIR] [--out DIR]

Setup (not timed): synthetic map parts (``tests/synthetic_parts.py``: GeoParquet parts in
the ``part_path`` layout, five provinces over UTM zones 47-50, two across a zone border;
seams crossed by pairs, multi-tile chains and zone-border events) and an untrained
resnet18 bundle without a fusion head (a publish runs only its head: the softmax of the
merged logits). ``--parts DIR`` keeps the parts there and reuses them on the next run.

Each case runs in a fresh subprocess that first loads the model stack (as a map worker
has after ``predict-tiles``), so its peak RSS (``PeakMemory``, that process alone) is its
own, whatever ran before:

- ``national`` (``mapping.all``): ``publish_driver_maps(national=True)``: a GeoPackage and
  a PNG per province, ``indonesia.gpkg`` and its PNG, ``events.parquet``.
- ``provinces``: ``publish_driver_maps(national=False)``: the province GeoPackages, their
  PNGs and ``events.parquet``.
- ``bare`` (the baseline, its own subprocess): the driver layer of every GeoPackage the
  case wrote, read back (not timed) and written again with one ``pyogrio.write_dataframe``
  per file (R-tree on): the least any publish of the same files has to write.

With ``--repeats N`` each publish and bare write runs N times, alternating (on a shared
machine the load drifts): the best wall time of each, the highest peak RSS.

Goals: peak RSS <= 4 GB in every case, the large size's within +-25 % of the small's
(flat), and publish wall time <= 2x its bare write. Prints one JSON document, with the
publish's time and the peak RSS so far after each of its steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROVINCES = ["Riau", "Jambi", "Kalimantan Barat", "Kalimantan Tengah", "Kalimantan Timur"]
GOAL_PEAK_BYTES = 4 * 1024 ** 3
GOAL_FLAT = 0.25
GOAL_RATIO = 2.0
MODES = ("national", "provinces")


def parts_for(folder: Path, tiles: int, pieces: int) -> tuple[Path, dict]:
    """Synthetic parts of ``tiles`` tiles and ``pieces`` pieces under ``folder`` (reused
    when a previous run left the same ones there)."""
    from tests.synthetic_parts import write_synthetic_parts

    where = folder / f"parts-{tiles}-{pieces}"
    marker = where / "synthetic.json"
    if marker.exists():
        return where, json.loads(marker.read_text())
    shutil.rmtree(where, ignore_errors=True)
    started = time.perf_counter()
    made = write_synthetic_parts(where, tiles, pieces)
    info = {"tiles": made.n_tiles, "pieces": made.n_pieces, "provinces": made.provinces,
            "generate_s": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info))
    return where, info


def child(args: list[str]) -> dict:
    """Run one case in a fresh interpreter; its JSON answer."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"bench child {args[:2]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Phases:
    """Seconds spent in (and the highest RSS seen during) each step of a publish, by
    wrapping the steps ``driver_maps`` calls; a generator step counts its ``next`` calls."""

    def __init__(self, memory) -> None:
        self.memory, self.seconds, self.peaks = memory, {}, {}

    def wrap(self, owner, name: str, phase: str, generator: bool = False) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            started, result = time.perf_counter(), real(*args, **kwargs)
            self._add(phase, started)
            return result

        def timed_iter(*args, **kwargs):
            items = real(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    self._add(phase, started)
                    return
                self._add(phase, started)
                yield item

        setattr(owner, name, timed_iter if generator else timed)

    def _add(self, phase: str, started: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started
        self.peaks[phase] = max(self.peaks.get(phase, 0), self.memory.peak, self.memory.rss())

    def report(self) -> dict:
        return {phase: {"s": round(self.seconds[phase], 1),
                        "peak_rss_so_far_mb": self.peaks[phase] >> 20} for phase in self.seconds}


def run_publish(parts: Path, bundle: Path, out: Path, mode: str) -> dict:
    """Child: one publish, timed, with its peak RSS and a breakdown by step."""
    from bench.peak_memory import PeakMemory
    from forestnet_model.predict import cached_bundle
    from pipeline.export import driver_maps
    from pipeline.export.event_spill import EventSpill

    cached_bundle(str(bundle.resolve()), "cpu")  # the worker's model, loaded before
    paths = sorted(parts.rglob("*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    memory = PeakMemory(children=False)
    before = memory.rss()
    phases = Phases(memory)
    phases.wrap(driver_maps, "part_index", "index parts")
    phases.wrap(driver_maps, "province_event_batches", "read, merge, drivers", generator=True)
    phases.wrap(EventSpill, "add", "spill")
    phases.wrap(driver_maps, "_write_one", "geopackages")
    phases.wrap(driver_maps, "write_side_outputs", "png")
    phases.wrap(EventSpill, "write_events", "events.parquet")
    with memory:
        started = time.perf_counter()
        written = driver_maps.publish_driver_maps(
            paths, bundle, PROVINCES, None, mode == "national", out,
            {"run_id": "bench", "model_id": "untrained"}, driver_maps.MapOutputs((2015, 2020)),
            out / "events.parquet")
        wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "peak_rss_bytes": memory.peak,
            "rss_before_bytes": before, "phases": phases.report(),
            "geopackages": written["geopackages"],
            "events": _event_counts(out / "events.parquet")}


def _event_counts(path: Path) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["n_pieces", "driver_code"])
    pieces = table.column("n_pieces").to_numpy()
    return {"total": table.num_rows, "merged": int((pieces > 1).sum()),
            "pieces_in_merged": int(pieces[pieces > 1].sum()),
            "most_pieces": int(pieces.max()) if len(pieces) else 0,
            "no_imagery": int((table.column("driver_code").to_numpy() == 0).sum())}


def run_bare(gpkgs: list[Path], out: Path) -> dict:
    """Child: the baseline, one bare ``write_dataframe`` per GeoPackage."""
    import pyogrio

    from bench.peak_memory import PeakMemory
    from pipeline.export.geopackage import DRIVER_MAP_LAYER

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wall, features, memory = 0.0, 0, PeakMemory(children=False)
    with memory:
        for gpkg in gpkgs:
            frame = pyogrio.read_dataframe(gpkg, layer=DRIVER_MAP_LAYER)  # not timed
            started = time.perf_counter()
            pyogrio.write_dataframe(frame, out / gpkg.name, layer=DRIVER_MAP_LAYER,
                                    driver="GPKG", geometry_type="MultiPolygon",
                                    layer_options={"SPATIAL_INDEX": "YES"})
            wall += time.perf_counter() - started
            features += len(frame)
            del frame
    return {"wall_s": round(wall, 2), "features": features, "files": len(gpkgs),
            "peak_rss_bytes": memory.peak}


def bench_size(folder: Path, parts: Path, bundle: Path, repeats: int) -> dict:
    out = {}
    for mode in MODES:
        maps, bare_dir = folder / f"maps-{parts.name}-{mode}", folder / f"bare-{parts.name}-{mode}"
        runs, bares = [], []
        for _ in range(repeats):
            runs.append(child(["publish", str(parts), str(bundle), str(maps), mode]))
            bares.append(child(["bare", str(bare_dir), *runs[-1]["geopackages"]]))
        published = min(runs, key=lambda r: r["wall_s"])
        published.pop("geopackages")
        published["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
        published["wall_s_each"] = [r["wall_s"] for r in runs]
        bare = min(bares, key=lambda r: r["wall_s"])
        bare["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in bares)
        bare["wall_s_each"] = [r["wall_s"] for r in bares]
        published["bare_write"] = bare
        published["ratio_to_bare"] = round(published["wall_s"] / max(bare["wall_s"], 1e-9), 2)
        out[mode] = published
        shutil.rmtree(maps, ignore_errors=True)
        shutil.rmtree(bare_dir, ignore_errors=True)
    return out


def _batch_pieces() -> int:
    from pipeline.mapping.seam_stream import BATCH_PIECES

    return BATCH_PIECES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=2_000_000)
    parser.add_argument("--tiles", type=int, default=20_000)
    parser.add_argument("--small-pieces", type=int, default=200_000)
    parser.add_argument("--small-tiles", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each case (best wall time, highest peak RSS)")
    parser.add_argument("--parts", type=Path, default=None,
                        help="folder to keep (and reuse) the synthetic parts in")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: temp)")
    args = parser.parse_args()

    from tests.map_job import untrained_bundle

    folder = Path(args.out or tempfile.mkdtemp(prefix="bench-publish-"))
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "bundle"
    if not bundle.exists():
        untrained_bundle(bundle)  # resnet18, no fusion head
    sizes = {}
    for tiles, pieces in ((args.small_tiles, args.small_pieces), (args.tiles, args.pieces)):
        parts, info = parts_for(args.parts or folder, tiles, pieces)
        sizes[str(pieces)] = {"parts": info, **bench_size(folder, parts, bundle, args.repeats)}
    small, large = sizes[str(args.small_pieces)], sizes[str(args.pieces)]
    flat = {mode: round(large[mode]["peak_rss_bytes"] / small[mode]["peak_rss_bytes"] - 1, 3)
            for mode in MODES}
    meets = {
        "peak_rss": all(s[m]["peak_rss_bytes"] <= GOAL_PEAK_BYTES
                        for s in sizes.values() for m in MODES),
        "flat": all(abs(v) <= GOAL_FLAT for v in flat.values()),
        "wall": all(s[m]["ratio_to_bare"] <= GOAL_RATIO for s in sizes.values() for m in MODES),
    }
    print(json.dumps({
        "bench": "publish", "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "batch_pieces": _batch_pieces(), "repeats": args.repeats,
        "sizes": sizes, "peak_rss_growth_small_to_large": flat,
        "goal": {"peak_rss_bytes_max": GOAL_PEAK_BYTES, "peak_rss_flat_within": GOAL_FLAT,
                 "wall_to_bare_write_max": GOAL_RATIO},
        "meets_goal": {**meets, "all": all(meets.values())},
    }, indent=2))
    if args.out is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "publish":
            answer = run_publish(Path(rest[0]), Path(rest[1]), Path(rest[2]), rest[3])
        else:
            answer = run_bare([Path(p) for p in rest[1:]], Path(rest[0]))
        print(json.dumps(answer))
    else:
        main()
