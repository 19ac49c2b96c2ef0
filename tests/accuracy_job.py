"""The accuracy tests' models, trained in a process of its own (``python -m
tests.accuracy_job FOLDER``): the demo world chipped as ``forestnet demo`` chips it, the
demo recipe trained on it, and the demo world mapped with that model; and the user's
chain: the same chips written as the published release, imported, the same recipe
trained on the import, and the world mapped with that model. ``FOLDER/done.json`` names
the outputs once finished.

The suite starts it at collection, niced, and runs the accuracy tests last: the training
uses the cores the other tests leave idle (waiting on servers and subprocesses) instead
of adding its own minutes to the run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

DONE = "done.json"
#: Where conftest keeps the job: (process, folder).
ACCURACY_JOB = pytest.StashKey[tuple[subprocess.Popen, Path]]()
ACCURACY_TESTS = "tests/model/test_accuracy.py"


def main(folder: Path) -> None:
    from tests.release_chain import own_chips, release_of, train_and_map

    own = own_chips(folder)
    # Both arms at once, a thread each: on two cores that is 1.3x the throughput of one
    # after the other on two threads, and a core is given back whenever a test needs it.
    # The own arm trains while the chips go through the release's layout.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        own_arm = pool.submit(train_and_map, own["config"], own["chips"], folder / "own")
        chain_chips = release_of(own, folder / "chain")
        chain_arm = pool.submit(train_and_map, own["config"], chain_chips, folder / "chain")
        (own_bundle, maps), (chain_bundle, chain_maps) = own_arm.result(), chain_arm.result()
    tmp = folder / f".{DONE}.tmp"
    tmp.write_text(json.dumps({
        **{k: str(own[k]) for k in ("world", "config", "chips")}, "bundle": str(own_bundle),
        "maps": [str(p) for p in maps],
        "chain": {"chips": str(chain_chips), "bundle": str(chain_bundle),
                  "maps": [str(p) for p in chain_maps]}}))
    os.replace(tmp, folder / DONE)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
