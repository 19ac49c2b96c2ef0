"""One writer per output folder: a second run writing the same outputs is refused.

The lock is an advisory ``flock`` on a file in the folder. The kernel drops it when the
holding process dies, so a killed run never leaves a stale lock behind; the file itself
stays and only says who held it last.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.errors import ForestNetError


class OutputLockedError(ForestNetError, RuntimeError):
    """Another run holds the folder; the message names the folder and the holder."""


@contextmanager
def output_lock(folder: Path, verb: str) -> Iterator[Path]:
    """Hold ``<folder>/.forestnet-<verb>.lock`` for the duration, or refuse at once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".forestnet-{verb}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(path)
            raise OutputLockedError(
                f"{folder}: another `forestnet {verb}` run is writing here ({holder}); "
                "wait for it to finish or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(UTC).isoformat()}).encode())
        yield path
    finally:
        os.close(fd)  # closing releases the flock


def _read_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
