"""run_in_waves on a real (in-process) Dask cluster: bounded in-flight work, per-item errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster

from flows.runtime.waves import run_in_waves


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=1, threads_per_worker=4, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


#: Tasks running at once: tasks run as threads of this process's one worker, so a module
#: global sees them all (Dask pickles task functions, so it cannot hold a lock itself).
_LOCK = threading.Lock()
_COUNT = {"now": 0, "peak": 0}


def _task(item: int) -> int:
    with _LOCK:
        _COUNT["now"] += 1
        _COUNT["peak"] = max(_COUNT["peak"], _COUNT["now"])
    time.sleep(0.02)
    with _LOCK:
        _COUNT["now"] -= 1
    if item % 5 == 3:
        raise ValueError(f"bad item {item}")
    return item * item


@pytest.mark.parametrize("max_in_flight", [1, 2, 3])
def test_in_flight_work_is_bounded_and_every_item_ends_once(client: Client,
                                                            max_in_flight: int) -> None:
    _COUNT.update(now=0, peak=0)
    submitted: list[int] = []
    results: dict[int, int] = {}
    errors: dict[int, str] = {}
    ticks: list[None] = []

    def submit(item: int):
        submitted.append(item)
        # Never more futures alive than the bound: the graph stays small.
        assert len(submitted) - len(results) - len(errors) <= max_in_flight
        return client.submit(_task, item, pure=False)

    run_in_waves(client, range(12), submit, max_in_flight,
                 on_result=lambda item, value: results.__setitem__(item, value),
                 on_error=lambda item, exc: errors.__setitem__(item, str(exc)),
                 advance=lambda: ticks.append(None))
    assert _COUNT["peak"] == max_in_flight  # bounded, and the bound is used
    assert sorted(submitted) == list(range(12))
    assert errors == {3: "bad item 3", 8: "bad item 8"}  # the others carried on
    assert results == {i: i * i for i in range(12) if i not in (3, 8)}
    assert len(ticks) == 12


def test_no_items_submit_nothing(client: Client) -> None:
    calls: list[object] = []
    run_in_waves(client, [], lambda item: calls.append(item), 2, on_result=print,
                 on_error=print)
    assert calls == []
