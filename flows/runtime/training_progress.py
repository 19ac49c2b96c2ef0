"""What the train flow shows while a model trains: one line per epoch in the flow's log,
and a Prefect progress artifact that advances with the epochs.

Training runs as one Dask task, whose own log lines stay in the worker's log; the records
reach the flow through :mod:`flows.runtime.epoch_events` and are shown here.
"""

from __future__ import annotations

import logging
import math
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

#: Stable key: the Prefect UI shows the progress of every training run under it.
PROGRESS_KEY = "train-progress"


def _number(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def epoch_line(record: dict, epochs: int, improved: bool) -> str:
    """E.g. ``epoch 3/16: loss 0.4123, val accuracy 0.875, val macro F1 0.861 (best), 12.3 s``
    (epochs counted from 1, as a reader counts them)."""
    return (f"epoch {record['epoch'] + 1}/{epochs}: loss {_number(record.get('train_loss'), 4)}, "
            f"val accuracy {_number(record.get('val_accuracy'), 3)}, "
            f"val macro F1 {_number(record.get('val_macro_f1'), 3)}"
            f"{' (best)' if improved else ''}, {_number(record.get('seconds'), 1)} s")


class EpochReport:
    """Shows each epoch record as it arrives; call :meth:`finish` when training succeeded.

    Call it in the Prefect task's own thread: the run logger and the artifact belong to
    that task run.
    """

    def __init__(self, epochs: int, logger: logging.Logger | logging.LoggerAdapter,
                 key: str = PROGRESS_KEY) -> None:
        self.epochs, self.logger, self.key = max(epochs, 1), logger, key
        self._artifact: UUID | None = None
        self._artifact_broken = False
        self._last_epoch: int | None = None

    def __call__(self, record: dict) -> None:
        # train.py's own choice of the kept model: this epoch, if it is the best one so far.
        kept = record.get("best_epoch") == record["epoch"]
        line = epoch_line(record, self.epochs, kept)
        self._last_epoch = record["epoch"]
        self.logger.info(line)
        self._progress(100.0 * (record["epoch"] + 1) / self.epochs, f"training: {line}")

    def finish(self) -> None:
        """Progress at 100: training ended, also when it stopped early."""
        if self._last_epoch is None:  # no epoch ran in this task (all done before a resume)
            return
        done = self._last_epoch + 1
        ended = ("finished" if done >= self.epochs
                 else f"stopped early after epoch {done} of {self.epochs}")
        self._progress(100.0, f"training {ended}")

    def _progress(self, percent: float, description: str) -> None:
        if self._artifact_broken:
            return
        percent = min(max(percent, 0.0), 100.0)
        try:
            if self._artifact is None:
                self._artifact = create_progress_artifact(percent, key=self.key,
                                                          description=description)
            else:
                update_progress_artifact(self._artifact, percent, description=description)
        except Exception as exc:  # the UI's view of progress must not fail a training run
            self._artifact_broken = True
            self.logger.warning("training progress artifact not updated: %s", exc)
