"""Process-level memory tuning for array-heavy work (torch, warps, composites) in Dask workers."""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import lru_cache

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@lru_cache(maxsize=1)
def tune_malloc_for_tensors() -> bool:
    """Keep glibc from mmap/munmap-ing every large tensor buffer (Linux only).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that
    variable also freezes glibc's mmap threshold at 128 KiB, so each activation buffer is
    a fresh mmap and page-faults on first touch. Raising both thresholds restores the
    plain-process speed (bench/bench_worker_malloc.py). ``flows.runtime.cluster`` calls
    this once in every worker, through a worker plugin.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 256 * 2**20) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 512 * 2**20) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    if not ok:
        log.debug("mallopt refused the thresholds; keeping glibc defaults")
    return ok
