"""Peak resident memory of a benchmark: this process plus its children (Dask workers)."""

from __future__ import annotations

import threading
import time

import psutil


class PeakMemory:
    """Context manager sampling the RSS of the process tree (or of this process alone,
    ``children=False``: child processes idle meanwhile are not counted); ``peak`` is in bytes."""

    def __init__(self, interval: float = 0.02, children: bool = True) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.children = children

    def rss(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True) if self.children else ():
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
