"""R5: two runs writing the same output folder. The second is refused with a clear message;
a killed holder never leaves the folder locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.run_lock import OutputLockedError, output_lock

HOLD = """
import sys, time
from pipeline.core.run_lock import output_lock
with output_lock(sys.argv[1], "map"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_child(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).parents[2])
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_naming_the_folder_and_holder(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    try:
        with pytest.raises(OutputLockedError) as caught, output_lock(tmp_path, "map"):
            pass
        message = str(caught.value)
        assert str(tmp_path) in message and f"pid {child.pid}" in message
    finally:
        child.kill()
        child.wait()


def test_a_killed_holder_releases_the_folder(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the flock with the process
        try:
            with output_lock(tmp_path, "map"):
                break
        except OutputLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_other_verbs_and_folders_do_not_block_each_other(tmp_path: Path) -> None:
    with output_lock(tmp_path / "a", "map"), output_lock(tmp_path / "b", "map"), \
            output_lock(tmp_path / "a", "ingest"):
        pass
