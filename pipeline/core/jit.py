"""numba's ``njit``, compiled on first call, with an on-disk cache that also works from a
read-only install.

The chip kernels take a second or so each to compile. ``cache=True`` keeps the machine
code next to the module (``__pycache__``), so later processes (every Dask worker) load
it in milliseconds instead. numba falls back to a user-wide cache folder when that one
is not writable, but raises when neither is; then a per-user folder under the temporary
directory is used, and failing that no disk cache (each process compiles) rather than
an error.

numba itself is imported on the first call, not on import: most commands never run a
kernel, and importing it slows every CLI start.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: Float division as in numpy (x / 0 is inf or NaN, no exception): without a zero check
#: per division, loops that divide still vectorise. The GIL is released, as numpy did
#: for the whole-array operations the kernels replace: workers may run several threads.
_OPTIONS = {"error_model": "numpy", "nogil": True}


def cached_njit(fn: F) -> F:
    """``numba.njit(cache=True)(fn)``, compiled (or loaded from the cache) on first call.

    The result is a plain Python function: kernels cannot call one another.
    """
    dispatcher: Callable | None = None

    @functools.wraps(fn)
    def kernel(*args):
        nonlocal dispatcher
        if dispatcher is None:
            dispatcher = _compile(fn)
        return dispatcher(*args)

    return kernel  # type: ignore[return-value]


def _compile(fn: Callable) -> Callable:
    """The numba dispatcher of ``fn``, with a cache folder wherever one can be written."""
    import numba
    from numba.core import config

    try:
        return numba.njit(cache=True, **_OPTIONS)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        pass
    if not config.CACHE_DIR and _use_temporary_cache_dir():
        try:
            return numba.njit(cache=True, **_OPTIONS)(fn)
        except RuntimeError:
            pass
    warnings.warn(f"no writable numba cache folder: {fn.__name__} compiles in every process",
                  RuntimeWarning, stacklevel=3)
    return numba.njit(**_OPTIONS)(fn)


def _use_temporary_cache_dir() -> bool:
    """Point numba at ``temporary_cache_dir``; False if there is no temporary directory."""
    from numba.core import config

    try:
        folder = temporary_cache_dir()
    except OSError:  # tempfile found no writable temporary directory
        return False
    # In the environment, not just numba's config: child processes (Dask workers) share it.
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    config.reload_config()
    return True


def temporary_cache_dir() -> Path:
    """The cache folder used when neither numba's own choices can be written."""
    # Per user: a folder another user created first would not be writable.
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"forestnet-numba-{uid}"
