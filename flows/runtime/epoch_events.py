"""Epoch records from a training task on a Dask worker to the flow process that waits on it.

Transport: Dask's worker->client events. The worker task publishes each record with
``Worker.log_event`` on one fixed topic; the flow's client subscribes to that topic
(``Client.subscribe_topic``) and keeps only the records tagged with its own feed id.

Why events rather than a ``distributed.Queue`` or ``Variable``:

- Publishing is fire-and-forget on the worker's existing stream to the scheduler: training
  never waits on the flow, and needs no client of its own inside the worker.
- Events travel on the same ordered streams as the task's own result, so every record a
  task published has reached the flow by the time its future is done: draining after
  ``future.done()`` loses none.
- Nothing is left to clean up but the subscription: the scheduler keeps a topic's events
  in a bounded deque, and one fixed topic (not one per run) keeps that bound for every run
  a long-lived cluster serves. A per-run queue holds its items on the scheduler until
  someone closes it, which a killed flow never does.
- The flow waits on the future itself, never on the feed: a task that fails, or a worker
  that dies (Dask reschedules it, then raises ``KilledWorker``), ends the wait as promptly
  as a plain ``future.result()`` would.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

from distributed import Client, Future, get_worker

log = logging.getLogger(__name__)

#: The one topic every training task publishes its epoch records on.
TOPIC = "forestnet-training-epochs"


def epoch_sender(feed_id: str) -> Callable[[dict], None] | None:
    """In a Dask worker task: a callback that publishes each record to the feed ``feed_id``.

    None outside a worker (a direct call has nobody to report to).
    """
    try:
        worker = get_worker()
    except ValueError:
        return None

    def send(record: dict) -> None:
        try:
            worker.log_event(TOPIC, {"feed": feed_id, "record": _plain(record)})
        except Exception:  # progress is a courtesy: it must never stop a training run
            log.warning("epoch %s not reported to the flow", record.get("epoch"), exc_info=True)

    return send


def _plain(record: dict) -> dict:
    """Numpy scalars as Python numbers: events must be msgpack-serialisable."""
    return {key: value.item() if hasattr(value, "item") else value
            for key, value in record.items()}


class EpochFeed:
    """The flow side of one training task's records: collected by the client's event
    handler (on the client's own thread), handed over in the thread that waits."""

    def __init__(self) -> None:
        self.id = uuid4().hex
        self._records: queue.SimpleQueue[dict] = queue.SimpleQueue()

    def receive(self, event: tuple[float, Any]) -> None:
        """``Client.subscribe_topic`` handler: keep this feed's records, skip other runs'."""
        _, msg = event
        if isinstance(msg, dict) and msg.get("feed") == self.id:
            self._records.put(msg["record"])

    def wait(self, future: Future, on_record: Callable[[dict], None],
             poll_s: float = 0.5) -> Any:
        """``future``'s result (or its error), calling ``on_record`` in this thread for
        each record as it arrives, and for those that arrived with the result."""
        while not future.done():
            try:
                record = self._records.get(timeout=poll_s)
            except queue.Empty:
                continue
            on_record(record)
        self._drain(on_record)
        return future.result()

    def _drain(self, on_record: Callable[[dict], None]) -> None:
        while True:
            try:
                record = self._records.get_nowait()
            except queue.Empty:
                return
            on_record(record)


@contextmanager
def epoch_feed(client: Client) -> Iterator[EpochFeed]:
    """A feed subscribed on ``client`` for as long as the block runs.

    Subscribe before submitting the task: the scheduler forwards only the events it
    receives while the client is subscribed (both messages share one ordered stream).
    """
    feed = EpochFeed()
    client.subscribe_topic(TOPIC, feed.receive)
    try:
        yield feed
    finally:
        try:
            client.unsubscribe_topic(TOPIC)
        except Exception:  # a lost scheduler: nothing left to unsubscribe from
            log.debug("unsubscribing from %s failed", TOPIC, exc_info=True)
