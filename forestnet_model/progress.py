"""What a training run reports: a per-epoch progress bar and the metrics files.

The bar only draws on a terminal and never inside a Dask worker, where it would fill the
worker logs with redraws. Metrics go to ``metrics.jsonl`` (one record per epoch), and
optionally to ``metrics.csv`` and TensorBoard (only when tensorboard is installed).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


def in_dask_worker() -> bool:
    """True inside a Dask worker task."""
    try:
        from distributed import get_worker
    except ImportError:
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def progress_enabled(setting: str) -> bool:
    """``on``/``off`` as given; ``auto``: a terminal on stderr and not a Dask worker."""
    if setting != "auto":
        return setting == "on"
    return sys.stderr.isatty() and not in_dask_worker()


class EpochBar(AbstractContextManager):
    """A rich progress bar over one epoch's batches, showing the running loss."""

    def __init__(self, epoch: int, total: int, enabled: bool) -> None:
        self.enabled, self._progress, self._task = enabled, None, None
        if not enabled:
            return
        from pipeline.core.progress_bar import progress_bar

        self._progress = progress_bar(f"epoch {epoch}", extra=("loss {task.fields[loss]}",),
                                      remaining=True)
        self._task = self._progress.add_task("train", total=total, loss="-")

    def __enter__(self) -> EpochBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def advance(self, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.4f}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()


class MetricsLog:
    """Epoch records in ``metrics.jsonl`` (+ optional CSV and TensorBoard)."""

    def __init__(self, out_dir: Path, csv_too: bool = False, tensorboard: bool = False) -> None:
        self.jsonl = Path(out_dir) / "metrics.jsonl"
        self.csv = Path(out_dir) / "metrics.csv" if csv_too else None
        self._writer = _tensorboard_writer(Path(out_dir) / "tensorboard") if tensorboard else None

    def records(self) -> list[dict]:
        """Complete records on disk (a line cut short by a kill is dropped)."""
        if not self.jsonl.exists():
            return []
        out = []
        for line in self.jsonl.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def resume(self, next_epoch: int) -> None:
        """Keep only the records of epochs before ``next_epoch``: a run killed after writing
        an epoch's metrics but before its checkpoint redoes that epoch without a duplicate."""
        kept = [r for r in self.records() if r.get("epoch", -1) < next_epoch]
        if self.jsonl.exists():
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))
        if self.csv is not None:
            self.csv.unlink(missing_ok=True)
            for record in kept:
                self._append_csv(record)

    def write(self, record: dict) -> None:
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.csv is not None:
            self._append_csv(record)
        if self._writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    self._writer.add_scalar(key, value, record["epoch"])
            self._writer.flush()

    def _append_csv(self, record: dict) -> None:
        new = not self.csv.exists()
        with self.csv.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow(record)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package, an optional extra
        log.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(folder))
