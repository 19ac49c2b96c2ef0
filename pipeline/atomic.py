"""Atomic outputs: write to a temporary sibling, then rename into place.

A crash leaves either the old output or the new one, never a half-written file or store.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_sibling(final: Path) -> Path:
    """A unique temporary name next to ``final`` (same filesystem, so rename is atomic)."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final`` atomically.

    Works for files and for directories (Zarr stores, model bundles). On error the
    temporary output is removed and ``final`` is left untouched.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {final}: folder {parent} is not writable")
    tmp = temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary output for {final}")
        if tmp.is_dir() and final.is_dir():
            # os.replace cannot overwrite a non-empty directory: move the old one aside
            # first, so that the swap is two renames and the old copy is never half-deleted.
            old = temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def clean_stale_temporaries(folder: Path, min_age_s: float = 6 * 3600) -> int:
    """Remove temporaries left by killed runs in ``folder``; return how many were removed.

    Only temporaries untouched for ``min_age_s`` go, so a run writing into the same
    folder right now keeps its own.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - min_age_s
    stale = [
        p for p in folder.iterdir()
        if p.name.startswith(".") and ".tmp-" in p.name and p.lstat().st_mtime <= cutoff
    ]
    for path in stale:
        _remove(path)
    return len(stale)
