"""Bounded submission: at most N coarse tasks in flight, so a national run never builds a
Dask graph of 100k tasks and the scheduler's memory stays flat."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from distributed import Client, Future, as_completed


def run_in_waves(
    client: Client,
    items: Iterable[Any],
    submit: Callable[[Any], Future],
    max_in_flight: int,
    on_result: Callable[[Any, Any], None],
    on_error: Callable[[Any, BaseException], None],
    advance: Callable[[], None] = lambda: None,
) -> None:
    """Submit ``submit(item)`` for each item, keeping at most ``max_in_flight`` running.

    Results go to ``on_result(item, result)`` in completion order; a task that raised goes
    to ``on_error(item, exception)`` and the rest carry on.
    """
    pending = iter(items)
    owner: dict[str, Any] = {}
    running = as_completed(loop=client.loop)

    def top_up() -> None:
        while running.count() < max_in_flight:
            item = next(pending, _DONE)
            if item is _DONE:
                return
            future = submit(item)
            owner[future.key] = item
            running.add(future)

    top_up()
    for future in running:
        item = owner.pop(future.key)
        try:
            result = future.result()
        except Exception as exc:  # a failed batch is recorded, the run goes on
            on_error(item, exc)
        else:
            on_result(item, result)
        future.release()
        advance()
        top_up()


_DONE = object()
