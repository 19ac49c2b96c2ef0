"""The accuracy tests' model, trained in a process of its own (``python -m
tests.accuracy_job FOLDER``): the demo world chipped as ``forestnet demo`` chips it, and
the demo recipe trained on it, and the demo world mapped with that model.
``FOLDER/done.json`` names the outputs once finished.

The suite starts it at collection, niced, and runs the accuracy tests last: the training
uses the cores the other tests leave idle (waiting on servers and subprocesses) instead
of adding its own minutes to the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DONE = "done.json"
#: Where conftest keeps the job: (process, folder).
ACCURACY_JOB = pytest.StashKey[tuple[subprocess.Popen, Path]]()
ACCURACY_TESTS = "tests/model/test_accuracy.py"


def main(folder: Path) -> None:
    from tests.release_chain import map_in_process, own_chips_and_model

    made = own_chips_and_model(folder)
    maps = map_in_process(made["cfg"], made["bundle"], folder / "own-map")
    tmp = folder / f".{DONE}.tmp"
    tmp.write_text(json.dumps({**{k: str(made[k]) for k in ("world", "config", "chips",
                                                          "bundle")},
                               "maps": [str(p) for p in maps]}))
    os.replace(tmp, folder / DONE)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
