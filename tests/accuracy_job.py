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
    from tests.release_chain import map_in_process, own_chips, release_of, train_recipe

    own = own_chips(folder)
    chain_chips = release_of(own, folder / "chain")
    # Both models at once, a thread each: on two cores that is 1.3x the throughput of one
    # after the other on two threads, and a core is given back whenever a test needs it.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(train_recipe, own["config"], chips, out, 1) for chips, out in (
            (own["chips"], folder / "own" / "model"), (chain_chips, folder / "chain" / "model"))]
        own_bundle, chain_bundle = (job.result() for job in jobs)
    maps = map_in_process(own["cfg"], own_bundle, folder / "own-map")
    chain_maps = map_in_process(own["cfg"], chain_bundle, folder / "chain" / "map")
    tmp = folder / f".{DONE}.tmp"
    tmp.write_text(json.dumps({
        **{k: str(own[k]) for k in ("world", "config", "chips")}, "bundle": str(own_bundle),
        "maps": [str(p) for p in maps],
        "chain": {"chips": str(chain_chips), "bundle": str(chain_bundle),
                  "maps": [str(p) for p in chain_maps]}}))
    os.replace(tmp, folder / DONE)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
