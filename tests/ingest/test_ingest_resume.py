"""Idempotent, resumable ingest: skip whole scenes, redo half-written ones, survive SIGKILL.

The rerun after the kill goes through the flow's steps in process (``ingest_like_the_flow``);
``test_ingest_cli.py`` runs the same steps through the command, Prefect and Dask.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr

from pipeline.ingest import scene_store
from pipeline.ingest.catalog import read_index
from pipeline.ingest.scene_ingest import ingest_scene, ingest_source
from pipeline.ingest.scene_store import clear_killed_temporaries
from pipeline.ingest.sources import folder_source
from tests.ingest_inputs import assert_same_scene, ingest_like_the_flow, products

ROOT = Path(__file__).resolve().parents[2]

#: Ingests the products one by one and stalls inside the second scene's temporary group,
#: after its pixels are written and before it is marked complete and renamed into place.
STALLING_INGEST = """
import sys, time
from pathlib import Path
import pipeline.ingest.scene_store as scene_store
from pipeline.ingest.scene_ingest import ingest_scene

real_write, calls = scene_store.write_pixels, []

def stalling_write(*args, **kwargs):
    out = real_write(*args, **kwargs)
    calls.append(1)
    if len(calls) == 2:
        print("STALLED", flush=True)
        time.sleep(600)
    return out

scene_store.write_pixels = stalling_write
for product in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    print(ingest_scene(product, Path(sys.argv[2])).status, flush=True)
"""


def _temporaries(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def clean(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("clean") / "scenes.zarr"
    for product in products(tiny_world):
        assert ingest_scene(product, store).status == "ingested"
    return store


def test_resume_after_sigkill(tiny_world: Path, clean: Path, tmp_path: Path) -> None:
    landsat, store = tiny_world.parent / "landsat", tmp_path / "scenes.zarr"
    script = tmp_path / "stalling_ingest.py"
    script.write_text(STALLING_INGEST)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(landsat), str(store)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["ingested", "STALLED"], lines
        half = _temporaries(store)
        assert len(half) == 1 and f".{products(tiny_world)[1].name}.tmp-{proc.pid}-" in half[0]
        assert (store / half[0] / "multispectral").is_dir()  # written, not yet complete
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    first, second, third = products(tiny_world)
    # Readers go by the index; the store itself holds the done scene and the killed one's
    # temporary (hidden name, no completion mark).
    assert sorted(zarr.open_group(str(store), mode="r").group_keys()) == [*half, first.name]
    assert "forestnet_complete" not in zarr.open_group(str(store / half[0]), mode="r").attrs

    # Rerun: the finished scene is whole, so it is skipped; the killed one is redone.
    rows = {r["scene_id"]: r for r in ingest_like_the_flow([landsat], store)}
    assert [rows[p.name]["status"] for p in (first, second, third)] == [
        "skipped", "ingested", "ingested"]
    assert _temporaries(store) == []
    for product in (first, second, third):
        assert_same_scene(clean, store, product.name)
    index = read_index(store).set_index("scene_id")
    assert index.loc[first.name, "status"] == "skipped"
    assert list(index.loc[[second.name, third.name], "status"]) == ["ingested", "ingested"]
    assert index["clear_fraction"].between(0, 1).all()


@pytest.fixture()
def one_scene(tiny_world: Path, clean: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A store holding the first tiny scene, copied from the clean run."""
    product = products(tiny_world)[0]
    store = tmp_path / "scenes.zarr"
    store.mkdir()
    shutil.copy(clean / "zarr.json", store / "zarr.json")
    shutil.copytree(clean / product.name, store / product.name)
    return product, store


def _ingest(product: Path, store: Path, index_status: str | None = None) -> str:
    return ingest_source(folder_source(product), store, index_status=index_status).status


def test_whole_scene_is_skipped_only_with_a_good_index_status(
    one_scene: tuple[Path, Path],
) -> None:
    product, store = one_scene
    assert _ingest(product, store) == "skipped"  # no index row: the content decides
    assert _ingest(product, store, "ingested") == "skipped"
    assert _ingest(product, store, "skipped") == "skipped"
    assert _ingest(product, store, "failed") == "ingested"  # the index says otherwise: redo


def test_group_missing_a_chunk_is_redone(
    one_scene: tuple[Path, Path], clean: Path
) -> None:
    product, store = one_scene
    chunk = next((store / product.name / "multispectral" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    assert _ingest(product, store) == "ingested"
    assert_same_scene(clean, store, product.name)


def test_group_of_an_older_layout_is_redone(one_scene: tuple[Path, Path]) -> None:
    product, store = one_scene
    group = zarr.open_group(str(store / product.name), mode="a")
    group.attrs["forestnet_format"] = 1
    assert _ingest(product, store) == "ingested"
    assert _ingest(product, store) == "skipped"


def test_group_of_the_chunk_file_layout_is_kept(
    tiny_world: Path, clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stores ingested before row shards (format 2: one file per chunk) read the same:
    # a rerun keeps their groups rather than rewriting a whole province's scenes.
    product, store = products(tiny_world)[0], tmp_path / "scenes.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(scene_store, "STORE_FORMAT", 2)
        patch.setattr(scene_store, "row_shards", lambda shape, chunks: None)
        assert _ingest(product, store) == "ingested"
    array = zarr.open_array(str(store / product.name / "multispectral"), mode="r")
    assert array.shards is None and array.nchunks > len(array.shape)
    assert zarr.open_group(str(store / product.name)).attrs["forestnet_format"] == 2
    assert _ingest(product, store) == "skipped"
    assert_same_scene(clean, store, product.name, ignore_attrs=("forestnet_format",))


def test_killed_writers_temporaries_go_live_ones_stay(tmp_path: Path) -> None:
    scene = "LC08_L1TP_118062_20170612_20200922_02_T1"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".{scene}.tmp-{dead.pid}-aaaa0000",
            "alive": f".{scene}.tmp-{alive.pid}-bbbb0000",
            "alive-but-old": f".{scene}.tmp-{alive.pid}-cccc0000",
            "other-scene": f".LC08_L1TP_118062_20180718_20201102_02_T1.tmp-{dead.pid}-dddd0000",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
        old = time.time() - 7 * 3600
        os.utime(tmp_path / names["alive-but-old"], (old, old))
        assert clear_killed_temporaries(tmp_path, scene) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [names["alive"], names["other-scene"]])
    finally:
        alive.kill()
        alive.wait()
