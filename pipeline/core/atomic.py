"""Atomic outputs: write to a temporary sibling, then rename into place.

A crash leaves either the old output or the new one, never a half-written file or store.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _host_tag() -> str:
    # Letters and digits only: "-" separates the fields of a temporary's name.
    return "".join(c for c in socket.gethostname() if c.isalnum())[:24] or "host"


def temp_sibling(final: Path, suffix: str = "") -> Path:
    """A unique temporary name next to ``final`` (same filesystem, so rename is atomic).

    The name carries the writer's pid and host, so a later run can tell a killed writer's
    leftovers from the temporaries of a writer still at work (``writer_is_gone``).
    ``suffix`` keeps an extension that a writer needs (GDAL's GPKG driver wants ``.gpkg``).
    """
    final = Path(final)
    return final.with_name(
        f".{final.name}.tmp-{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}{suffix}")


def _writer(name: str) -> tuple[int, str | None] | None:
    """(pid, host tag) from a temporary's name; host None for names from before it was
    recorded (``.tmp-<pid>-<uuid>``); None for other names."""
    try:
        fields = name.rsplit(".tmp-", 1)[1].split("-")
        return int(fields[0]), fields[1] if len(fields) >= 3 else None
    except (IndexError, ValueError):
        return None


def writer_is_gone(name: str) -> bool:
    """True when the temporary ``name`` was made by a process of this host that is dead.

    A temporary from another host (workers on a shared file system) is never judged
    here: only its age can tell (``clean_stale_temporaries``).
    """
    writer = _writer(name)
    if writer is None or writer[0] == os.getpid():
        return False
    pid, host = writer
    if host is not None and host != _host_tag():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's live process
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``final`` atomically.

    Works for files and for directories (Zarr stores, model bundles). On error the
    temporary output is removed and ``final`` is left untouched. ``suffix`` ends the
    temporary's name (see ``temp_sibling``).
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {final}: folder {parent} is not writable")
    tmp = temp_sibling(final, suffix)
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


def clean_stale_temporaries(folder: Path, min_age_s: float = 6 * 3600,
                            pattern: str = ".*.tmp-*") -> int:
    """Remove temporaries left by killed runs in ``folder``; return how many were removed.

    A temporary goes when its writer on this host is dead, or when it is untouched for
    ``min_age_s`` (a writer elsewhere), so a run writing into the same folder right now
    keeps its own. ``pattern`` narrows the names looked at.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - min_age_s
    stale = [p for p in folder.glob(pattern)
             if writer_is_gone(p.name) or p.lstat().st_mtime <= cutoff]
    for path in stale:
        _remove(path)
    return len(stale)
