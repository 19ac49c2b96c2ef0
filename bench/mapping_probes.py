"""Probes of the mapping bench: worker memory, Prefect task and Dask task-stream times,
and per-step timings of the map's CPU and model halves (``bench/bench_mapping.py``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict

import psutil

from bench.peak_memory import PeakMemory


class WorkerMemory:
    """Per-process peak RSS of the Dask workers (and the process tree), sampled in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.procs = {addr: psutil.Process(pid) for addr, pid in pids.items()}
        self.interval, self._stop = interval, threading.Event()
        self.peak = dict.fromkeys(self.procs, 0)
        self.start = {a: p.memory_info().rss for a, p in self.procs.items()}

    def __enter__(self) -> WorkerMemory:
        self._tree = PeakMemory().__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for addr, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[addr] = max(self.peak[addr], proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tree.__exit__(*exc)

    def report(self) -> dict:
        mb = lambda b: round(b / 2**20)  # noqa: E731
        return {"worker_peak_rss_mb": {a.rsplit(":", 1)[-1]: mb(v) for a, v in self.peak.items()},
                "worker_start_rss_mb": {a.rsplit(":", 1)[-1]: mb(v)
                                        for a, v in self.start.items()},
                "max_worker_peak_rss_mb": mb(max(self.peak.values())),
                "process_tree_peak_rss_mb": mb(self._tree.peak)}


def task_seconds(flow_run_id) -> dict[str, float]:
    """Wall seconds of each task run of a flow run, by task name, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as api:
        runs = api.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[flow_run_id])))
    out: dict[str, float] = defaultdict(float)
    for run in runs:
        if run.start_time and run.end_time:
            out[run.name.rsplit("-", 1)[0]] += (run.end_time - run.start_time).total_seconds()
    return dict(out)


def dask_time(stream: list[dict], n: int) -> dict:
    """Worker seconds per task function (compute, and transfers) from the task stream."""
    from dask.utils import key_split

    compute: dict[str, float] = defaultdict(float)
    transfer = 0.0
    for record in stream:
        for span in record.get("startstops", ()):
            seconds = span["stop"] - span["start"]
            if span["action"] == "compute":
                compute[key_split(record["key"])] += seconds
            elif span["action"] == "transfer":
                transfer += seconds
    return {"compute_s": {k: round(v, 2) for k, v in sorted(compute.items())},
            "compute_s_per_tile": {k: round(v / n, 3) for k, v in sorted(compute.items())},
            "transfer_s": round(transfer, 2)}


@contextlib.contextmanager
def instrumented(totals: dict[str, float]):
    """Time the steps of ``prepare_tiles`` / ``infer_tiles`` by wrapping the module globals
    they call (restored on exit); ``totals`` sums seconds per step and calls per ``#step``."""
    import pipeline.imagery.composite_cells as cc
    import pipeline.imagery.composite_store as cs
    import pipeline.imagery.views as ch
    import pipeline.mapping.inference as mb
    import pipeline.mapping.loss_pieces as lp
    import pipeline.mapping.tile_inputs as ti

    targets = [(ti, "tile_pieces", "prepare.pieces"), (lp, "tile_indices", "pieces.tile_indices"),
               (lp, "province_raster", "pieces.province_raster"),
               (lp, "label_polygons", "pieces.polygonize"),
               (ti, "grid_composite", "prepare.composite"),
               (cs, "cell_candidates", "composite.candidates"),
               (cs, "build_cell", "composite.build_cell"),
               (cs, "write_cell", "composite.write_cell"), (cs, "read_cell", "composite.read_cell"),
               (cc, "qa_overview", "build_cell.qa_overview"),
               (cc, "scene_on_grid", "scene_views.scene_on_grid"),
               (cc, "composite", "build_cell.median"),
               (ch, "read_window", "scene_views.read"), (ch, "array_to_grid", "scene_views.warp"),
               (ch, "sfim", "scene_views.pansharpen"),
               (ti, "piece_labels", "prepare.piece_labels"),
               (ti, "piece_scalars", "prepare.piece_scalars"),
               (mb, "region_means", "infer.region_means"), (mb, "tile_part", "infer.tile_part")]
    # The pipeline changes under us: time the steps that the current code has.
    targets = [t for t in targets if hasattr(t[0], t[1])]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in targets]

    def wrap(fn, key):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[key] += time.perf_counter() - start
                totals[f"#{key}"] += 1  # calls
        return timed

    for (mod, attr, key), (_, _, fn) in zip(targets, saved, strict=True):
        setattr(mod, attr, wrap(fn, key))
    try:
        yield
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
