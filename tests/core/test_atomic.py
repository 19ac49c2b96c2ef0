"""Tests for atomic outputs: a crash leaves the old output or the new one, never a mix."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.core.atomic import atomic_output, clean_stale_temporaries, temp_sibling


class Boom(RuntimeError):
    pass


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_temp_sibling_is_hidden_unique_and_next_to_final(tmp_path: Path) -> None:
    final = tmp_path / "index.parquet"
    a, b = temp_sibling(final), temp_sibling(final)
    assert a != b
    assert a.parent == b.parent == tmp_path
    assert a.name.startswith(".index.parquet.tmp-")


def test_file_success_creates_output(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.txt"  # the parent is created on demand
    with atomic_output(final) as tmp:
        assert tmp != final and tmp.parent == final.parent
        tmp.write_text("new")
        assert not final.exists()  # nothing visible until the block succeeds
    assert final.read_text() == "new"
    assert _temporaries(final.parent) == []


def test_file_success_replaces_existing(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    final.write_text("old")
    with atomic_output(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"
    assert final.read_text() == "new"
    assert _temporaries(tmp_path) == []


def test_file_failure_keeps_old_output_and_removes_temporary(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(Boom), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise Boom("killed mid-write")
    assert final.read_text() == "old"
    assert _temporaries(tmp_path) == []


def test_failure_without_previous_output_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_nothing_written_is_an_error(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(FileNotFoundError, match="out.txt"), atomic_output(final):
        pass
    assert final.read_text() == "old"


def test_directory_success_creates_output(tmp_path: Path) -> None:
    final = tmp_path / "store.zarr"
    with atomic_output(final) as tmp:
        (tmp / "a").mkdir(parents=True)
        (tmp / "a" / "chunk").write_text("1")
        (tmp / "zarr.json").write_text("{}")
    assert _tree(final) == {"a/chunk": "1", "zarr.json": "{}"}
    assert _temporaries(tmp_path) == []


def test_directory_replaces_existing_non_empty_directory(tmp_path: Path) -> None:
    final = tmp_path / "store.zarr"
    (final / "old_group").mkdir(parents=True)
    (final / "old_group" / "chunk").write_text("old")
    (final / "zarr.json").write_text("old")
    with atomic_output(final) as tmp:
        (tmp / "new_group").mkdir(parents=True)
        (tmp / "new_group" / "chunk").write_text("new")
        (tmp / "zarr.json").write_text("new")
    # The new tree replaces the old one entirely: no stale files survive the swap.
    assert _tree(final) == {"new_group/chunk": "new", "zarr.json": "new"}
    assert _temporaries(tmp_path) == []


def test_directory_failure_keeps_old_directory(tmp_path: Path) -> None:
    final = tmp_path / "store.zarr"
    final.mkdir()
    (final / "zarr.json").write_text("old")
    with pytest.raises(Boom), atomic_output(final) as tmp:
        (tmp / "sub").mkdir(parents=True)
        (tmp / "sub" / "chunk").write_text("half")
        raise Boom()
    assert _tree(final) == {"zarr.json": "old"}
    assert _temporaries(tmp_path) == []


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_clean_stale_temporaries(tmp_path: Path) -> None:
    stale_file = temp_sibling(tmp_path / "index.parquet")
    stale_file.write_text("half")
    stale_dir = temp_sibling(tmp_path / "scene")
    (stale_dir / "multispectral").mkdir(parents=True)
    (stale_dir / "multispectral" / "chunk").write_text("half")
    keep = [tmp_path / "scene", tmp_path / ".hidden", tmp_path / "notes.tmp-1", tmp_path / "a.txt"]
    keep[0].mkdir()
    for path in keep[1:]:
        path.write_text("keep")

    # Fresh temporaries may belong to a run in progress: they stay.
    assert clean_stale_temporaries(tmp_path) == 0
    assert stale_file.exists() and stale_dir.exists()
    old = time.time() - 7 * 3600
    for path in (stale_file, stale_dir):
        os.utime(path, (old, old))
    assert clean_stale_temporaries(tmp_path) == 2
    assert not stale_file.exists() and not stale_dir.exists()
    assert all(path.exists() for path in keep)
    assert clean_stale_temporaries(tmp_path, min_age_s=0) == 0


def test_clean_stale_temporaries_missing_folder(tmp_path: Path) -> None:
    assert clean_stale_temporaries(tmp_path / "absent") == 0


def test_temporaries_of_a_dead_writer_go_at_once(tmp_path: Path) -> None:
    """Killed writers' leftovers (here: a dead pid on this host) go without waiting for
    them to age; a live writer's, and one from another host, stay until they are old."""
    import subprocess
    import sys

    from pipeline.core.atomic import _host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _host_tag()
    names = {
        "dead": f".index.parquet.tmp-{dead.pid}-{host}-aaaa0000",
        "dead-old-format": f".index.parquet.tmp-{dead.pid}-bbbb0000",
        "dead-other-host": f".index.parquet.tmp-{dead.pid}-elsewhere-cccc0000",
        "mine": temp_sibling(tmp_path / "index.parquet").name,
    }
    for name in names.values():
        (tmp_path / name).write_text("half")
    assert clean_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["dead-other-host"], names["mine"]])
