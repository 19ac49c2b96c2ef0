"""The byte-bounded LRU cache shared by chip building (scene chunks) and training (events)."""

from __future__ import annotations

import numpy as np

from pipeline.core.lru_cache import ByteBoundedLRU


def _array(n_bytes: int) -> np.ndarray:
    return np.zeros(n_bytes, dtype=np.uint8)


def test_least_recently_used_goes_first_past_the_budget() -> None:
    cache = ByteBoundedLRU(300)
    for key in "abc":
        cache.put(key, _array(100))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("d", _array(100))
    assert cache.get("b") is None and len(cache) == 3 and cache.nbytes == 300
    assert (cache.hits, cache.misses) == (1, 1)


def test_tuples_count_every_array_and_skip_none() -> None:
    cache = ByteBoundedLRU(1000)
    item = (_array(200), None, _array(50))
    assert cache.put("event", item) is item
    assert cache.nbytes == 250


def test_a_value_larger_than_the_budget_is_served_but_not_kept() -> None:
    cache = ByteBoundedLRU(100)
    cache.put("small", _array(60))
    big = _array(101)
    assert cache.put("big", big) is big
    assert cache.get("big") is None and cache.get("small") is not None


def test_a_held_key_keeps_its_first_value() -> None:
    cache = ByteBoundedLRU(1000)
    first = _array(10)
    cache.put("k", first)
    cache.put("k", _array(20))
    assert cache.get("k") is first and cache.nbytes == 10
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
