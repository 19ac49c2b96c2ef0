"""A least-recently-used cache bounded in bytes, for decoded arrays kept between reads.

Chip building keeps decoded scene chunks (neighbouring events share them) and the training
loader keeps decoded events (every epoch reads them again); both are bounded by memory,
not by a count, because their items differ in size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np


def nbytes_of(value: Any) -> int:
    """Bytes held by an array (or any value with ``nbytes``), or by the arrays of a tuple
    (``None`` members hold none)."""
    if isinstance(value, np.ndarray) or hasattr(value, "nbytes"):
        return value.nbytes
    return sum(v.nbytes for v in value if v is not None)


class ByteBoundedLRU:
    """Values by key; the least recently used go first once ``max_bytes`` is passed.

    Thread-safe: Dask workers read scenes from several threads at once. A value larger
    than the whole budget is served but not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> Any:
        """Keep ``value`` under ``key`` (a key already held keeps its value); return it."""
        size = nbytes_of(value)
        with self._lock:
            if key in self._items or size > self.max_bytes:
                return value
            while self.nbytes + size > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self.nbytes -= nbytes_of(old)
            self._items[key] = value
            self.nbytes += size
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)
