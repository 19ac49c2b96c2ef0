"""R2 (run loss) for `forestnet ingest` and `forestnet build-training-set`: the whole
command SIGKILLed part way (the CLI, its Prefect server and its Dask workers: one process
group), then rerun. The rerun finishes, reuses the work finished before the kill, and
leaves outputs identical to a clean run's, each scene or event once.

Reuse is judged from the disk, not only from what the rerun says: a reused scene group or
chip batch keeps its files (same inode, same mtime), since a rewrite goes through a new
temporary file or group. `test_map_faults.py` does the same for `forestnet map`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import xarray as xr

from pipeline.ingest.catalog import INDEX_NAME, read_index
from pipeline.ingest.scene_store import COMPLETE_ATTR
from pipeline.training_set.batches import build_chip_batch, plan_batches
from pipeline.training_set.chip_store import (
    finalize_chip_store,
    init_chip_store,
    open_chips,
    partial_path,
    progress_dir,
)
from pipeline.training_set.events import read_events, write_events
from tests.ingest_inputs import (
    assert_same_scene,
    derived_product,
    ingest_like_the_flow,
    products,
)
from tests.map_job import forestnet
from tests.tiny_config import write_tiny_config

# Every CLI run here talks to the session's Prefect server, not a temporary API.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cli_on_shared_prefect")]

#: One single-threaded worker: the run advances scene by scene (batch by batch), so a
#: kill lands between finished and unfinished work.
ONE_WORKER = {"n_workers": 1, "threads_per_worker": 1}
#: Copies of each of the tiny world's 3 scenes, under new product ids: 15 scenes.
COPIES = 5
#: Finished units to wait for before the kill.
KILL_AFTER = 3

Stamps = dict[str, tuple[int, int]]


def start_cli(log: Path, *args: str) -> subprocess.Popen:
    """`forestnet ARGS` in a new session (its own process group), output to ``log``.

    A file, not a pipe: nobody reads the output while it runs, and a full pipe would
    stall the run.
    """
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.cli.app", *args], stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_when(run: subprocess.Popen, log: Path, ready: Callable[[], bool],
              timeout: float = 300) -> None:
    """Poll the disk until ``ready()``, then SIGKILL the run's whole process group."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert run.poll() is None, f"the run ended before the kill:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no progress:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # the CLI, its Prefect server, its workers
        run.wait()
    assert_group_gone(run.pid)


def assert_group_gone(pgid: int, timeout: float = 30) -> None:
    """No live process is left in the group: the kill took the Dask workers too."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    left.append(proc.pid)
        if not left:
            return
        assert time.monotonic() < deadline, f"processes of the killed run still alive: {left}"
        time.sleep(0.2)


def file_stamps(paths: list[Path], root: Path) -> Stamps:
    """(inode, mtime) of each file: a rewritten file (temporary + rename) changes both."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in paths if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# -- ingest ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def landsat(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 15 products: the tiny world's 3 scenes, 5 times under new product ids."""
    out = tmp_path_factory.mktemp("run_loss_landsat")
    for copy in range(COPIES):
        for product in products(tiny_world):
            derived_product(product, out, copy=copy)
    return out


@pytest.fixture(scope="module")
def clean_scenes(landsat: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean run's scene store: the flow's steps, in process (no kill to survive)."""
    store = tmp_path_factory.mktemp("clean_scenes") / "scenes.zarr"
    rows = ingest_like_the_flow([landsat], store)
    assert {r["status"] for r in rows} == {"ingested"}, [r["error"] for r in rows]
    return store


def scene_groups(store: Path) -> list[str]:
    """Visible groups: a scene's group gets its name only once it is complete."""
    return sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))


def complete_scenes(store: Path) -> list[str]:
    """Scene groups whose ``zarr.json`` holds the completion marker (cheap enough to poll)."""
    if not store.is_dir():
        return []
    done = []
    for name in scene_groups(store):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            meta = json.loads((store / name / "zarr.json").read_text())
            if meta.get("attributes", {}).get(COMPLETE_ATTR):
                done.append(name)
    return done


def test_r2_a_killed_ingest_resumes_reusing_finished_scenes(
    tiny_world: Path, landsat: Path, clean_scenes: Path, tmp_path: Path, shared_cluster: str,
) -> None:
    config = write_tiny_config(tmp_path, tiny_world.parent, cluster=ONE_WORKER,
                               inputs={"landsat": [str(landsat)]})
    store = tmp_path / "work" / "scenes.zarr"
    scene_ids = sorted(p.name for p in landsat.iterdir())
    log = tmp_path / "killed.log"
    run = start_cli(log, "ingest", "--config", str(config))
    kill_when(run, log, lambda: len(complete_scenes(store)) >= KILL_AFTER)

    done = complete_scenes(store)
    assert len(done) < len(scene_ids), "the kill came after the last scene: nothing to test"
    before = {s: file_stamps(sorted((store / s).rglob("*")), store) for s in done}
    # The index is written every FLUSH_EVERY_S: a kill before the first write leaves no
    # rows, and then the groups themselves must tell the rerun what is finished.
    rows_at_kill = len(read_index(store)) if (store / INDEX_NAME).exists() else 0

    # The rerun attaches to the session's cluster: a resumed run need not be on the
    # cluster that was killed.
    again = forestnet("ingest", "--config", str(config), "--dask-address", shared_cluster)
    assert again.returncode == 0, again.stderr[-4000:]
    index = read_index(store)
    status = dict(zip(index["scene_id"], index["status"], strict=True))
    assert sorted(index["scene_id"]) == scene_ids  # one row per scene: none twice, none lost
    assert set(status.values()) <= {"ingested", "skipped"}, index[["scene_id", "error"]]
    skipped = sorted(s for s, v in status.items() if v == "skipped")
    assert set(skipped) <= set(done), "the rerun skipped scenes the killed run never finished"
    summary = f"({len(scene_ids) - len(skipped)} ingested, {len(skipped)} skipped, 0 failed)"
    assert summary in again.stdout, again.stdout

    reused = [s for s in done if status[s] == "skipped"
              and file_stamps(sorted((store / s).rglob("*")), store) == before[s]]
    reuse = len(reused) / len(done)
    print(f"R2 ingest: {len(reused)} of {len(done)} scenes finished before the kill were "
          f"reused ({reuse:.0%}); {len(scene_ids)} scenes, {rows_at_kill} index rows at the "
          f"kill")
    assert reuse >= 0.9

    assert temporaries(store) == []
    assert scene_groups(store) == scene_groups(clean_scenes) == scene_ids
    for scene_id in scene_ids:
        assert_same_scene(clean_scenes, store, scene_id)
    clean_index = read_index(clean_scenes)
    columns = [c for c in index.columns if c not in ("status", "footprint")]
    assert index[columns].equals(clean_index[columns])
    assert list(index["footprint"].to_wkb()) == list(clean_index["footprint"].to_wkb())


# -- build-training-set ------------------------------------------------------------------


def chips_config(folder: Path, world: Path, scenes: Path) -> Path:
    """One event per batch, one worker: a batch marker every fraction of a second."""
    return write_tiny_config(folder, world, scenes=str(scenes), cluster=ONE_WORKER,
                             chips={"batch_size": 1})


@pytest.fixture(scope="module")
def clean_chips(tiny_world: Path, tiny_scene_store: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean run's chip store: the flow's steps, in process (no kill to survive).

    In process rather than through the CLI: a command costs ~45 s here, mostly imports
    and Prefect's server, and the module has four to run already.
    """
    from flows.config.schema import load_config
    from tests.tiny_config import config_events

    cfg = load_config(chips_config(tmp_path_factory.mktemp("clean_chips"), tiny_world.parent,
                                   tiny_scene_store))
    # Read back, as the flow does: anchors from the in-memory geometries can differ in the
    # last bit (representative points of equal WKB, 1e-14 degrees apart).
    events = read_events(write_events(config_events(cfg)[0], cfg.events_path))
    spec, bands, features = cfg.chips.spec(), cfg.aux.bands, cfg.aux.features
    init_chip_store(cfg.chips_path, events, spec, bands, features)
    batches = plan_batches(len(events), cfg.chips.batch_size)
    for start, stop in batches:
        build_chip_batch(cfg.events_path, start, stop, cfg.scene_store, cfg.chips_path, spec,
                         cfg.inputs.aux_sources(), bands, features)
    return finalize_chip_store(cfg.chips_path, batches)


def finished_batches(final: Path) -> list[tuple[int, int]]:
    """``(start, stop)`` of every batch marker in the store's progress folder."""
    markers = progress_dir(final).glob("batch-*.json") if progress_dir(final).is_dir() else []
    return sorted(tuple(int(n) for n in m.stem.split("-")[1:]) for m in markers)


def event_chunks(store: Path, start: int, stop: int) -> list[Path]:
    """Chunk files of events ``[start, stop)``: what a batch's region write puts on disk.

    Arrays chunked one event per chunk (``c/<event>/...``); coordinates, written once by
    the template, are not a batch's.
    """
    files = []
    for meta_path in sorted(store.glob("*/zarr.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("node_type") != "array" or (meta.get("dimension_names") or [""])[0] != \
                "event" or meta["chunk_grid"]["configuration"]["chunk_shape"][0] != 1:
            continue
        for event in range(start, stop):
            chunk = meta_path.parent / "c" / str(event)
            files += [chunk] if chunk.is_file() else sorted(chunk.rglob("*"))
    return files


def assert_same_chips(chips: Path, clean: Path, events: Path) -> None:
    """Same events in the same order, each once, same splits, identical arrays."""
    a, b = open_chips(chips).load(), open_chips(clean).load()
    ids = [str(i) for i in a["event_id"].values]
    assert len(set(ids)) == len(ids) == len(read_events(events))  # none twice, none lost
    assert ids == [str(i) for i in b["event_id"].values]
    assert list(a["split"].values) == list(b["split"].values)
    assert sorted(a.data_vars) == sorted(b.data_vars)
    # images, views, loss masks, aux and every coordinate; NaN equals NaN
    xr.testing.assert_equal(a, b)
    assert a.attrs["skipped_events"] == b.attrs["skipped_events"]


def test_r2_a_killed_training_set_resumes_reusing_finished_batches(
    tiny_world: Path, tiny_scene_store: Path, clean_chips: Path, tmp_path: Path,
    shared_cluster: str,
) -> None:
    config = chips_config(tmp_path, tiny_world.parent, tiny_scene_store)
    final = tmp_path / "work" / "chips.zarr"
    n_batches = open_chips(clean_chips).sizes["event"]
    log = tmp_path / "killed.log"
    run = start_cli(log, "build-training-set", "--config", str(config))
    kill_when(run, log, lambda: len(finished_batches(final)) >= KILL_AFTER)

    done = finished_batches(final)
    assert not final.exists()
    assert len(done) < n_batches, "the kill came after the last batch: nothing to test"
    # The finished store is the partial one renamed: chunk files keep inode and mtime.
    before = {b: file_stamps(event_chunks(partial_path(final), *b), partial_path(final))
              for b in done}
    assert all(before.values()), "a finished batch with no chunk files"

    again = forestnet("build-training-set", "--config", str(config), "--dask-address",
                      shared_cluster)
    assert again.returncode == 0, again.stderr[-4000:]
    counted = re.search(r"(\d+) reused from an earlier run", again.stdout + again.stderr)
    assert counted, f"no reuse count in the output:\n{again.stderr[-3000:]}"
    reused = [b for b in done if file_stamps(event_chunks(final, *b), final) == before[b]]
    reuse = len(reused) / len(done)
    print(f"R2 build-training-set: {len(reused)} of {len(done)} chip batches finished before "
          f"the kill were reused ({reuse:.0%}); {n_batches} batches, the flow counted "
          f"{counted[1]} reused")
    assert int(counted[1]) == len(reused)  # the flow's count agrees with the disk
    assert reuse >= 0.9
    assert temporaries(final.parent) == []
    assert not partial_path(final).exists() and not progress_dir(final).exists()
    assert_same_chips(final, clean_chips, tmp_path / "work" / "events.parquet")
